"""Checkpoints as users hold them: a ClapModel directory with a file missing or damaged, a LAION .pt with only
RoBERTa's vocab.json + merges.txt beside it, and a library whose checkpoint file changed since indexing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from songseek.engine.encoders import clap_hf, gpt2_tokenizer, laion_pt
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.errors import IncompatibleLibraryError, WeightsNotFoundError
from songseek.engine.storage.manifest import Manifest, check_compatible
from tests.engine.encoder_helpers import (
    isolate_hf,
    reference_text,
    save_laion_pt,
    save_tiny_tokenizer,
    tiny_config,
    tiny_model,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clap")
    tiny_model(tiny_config()).save_pretrained(directory)
    save_tiny_tokenizer(directory)
    return directory


@pytest.mark.parametrize("remove, named", [("model.safetensors", "no model.safetensors"),
                                           ("config.json", "no config.json")])
def test_a_directory_missing_a_file_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dir: Path,
                                             capfd: pytest.CaptureFixture[str], remove: str, named: str) -> None:
    isolate_hf(monkeypatch, tmp_path)
    directory = Path(shutil.copytree(tiny_dir, tmp_path / "model"))
    (directory / remove).unlink()
    with pytest.raises(WeightsNotFoundError) as err:
        clap_hf.load(str(directory), "cpu", False)
    msg = str(err.value)
    assert "\n" not in msg and f"{directory} has {named}" in msg and "save_pretrained" in msg
    assert "HF_HUB_OFFLINE" not in msg and "cache" not in msg  # a local directory: no hub advice
    assert "LOAD REPORT" not in capfd.readouterr().err  # transformers' many-line report is not printed


def test_a_truncated_weights_file_is_one_line_without_hub_advice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 tiny_dir: Path) -> None:
    isolate_hf(monkeypatch, tmp_path)
    directory = Path(shutil.copytree(tiny_dir, tmp_path / "model"))
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(WeightsNotFoundError) as err:
        clap_hf.load(str(directory), "cpu", False)
    msg = str(err.value)
    assert "\n" not in msg and str(directory) in msg and "complete" in msg and "HF_HUB_OFFLINE" not in msg


def test_laion_pt_with_robertas_vocab_and_merges_beside_it(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """docs/encoders.md: RoBERTa's "vocab.json + merges.txt" beside the .pt suffice (no tokenizer_config.json
    naming the class, as `hf download roberta-base vocab.json merges.txt` leaves them)."""
    from transformers import RobertaTokenizer

    isolate_hf(monkeypatch, tmp_path)
    monkeypatch.delenv(laion_pt.TOKENIZER_ENV, raising=False)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "Ġ": 6, "Ġa": 7, "Ġb": 8, "ab": 9,
             "<mask>": 10}
    model = tiny_model(tiny_config(vocab_size=len(vocab)))
    folder = tmp_path / "weights"
    folder.mkdir()
    path = save_laion_pt(model, folder / "music.pt")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nĠ a\na b\nĠ b\n")
    enc = laion_pt.load(str(path), "cpu", False)
    got = enc.embed_text(["a b", "ab"])
    ref_tok = RobertaTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert ref_tok("a b")["input_ids"] == [0, 4, 8, 2]  # the files are read as RoBERTa's BPE
    np.testing.assert_allclose(got, reference_text(model, ref_tok, ["a b", "ab"]), atol=1e-5)


def test_gpt2_vocab_and_merges_only_are_gpt2s(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same for msclap: GPT-2's vocab.json + merges.txt without a tokenizer_config.json (and, read as
    RoBERTa's for laion, they are refused: not RoBERTa's special ids)."""
    vocab = {s: i for s, i in gpt2_tokenizer.byte_tokenizer().get_vocab().items()}
    vocab |= {f"<placeholder{i}>": i for i in range(256, 50256)} | {"<|endoftext|>": 50256}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    isolate_hf(monkeypatch, tmp_path / "home")
    monkeypatch.setenv(gpt2_tokenizer.TOKENIZER_ENV, str(tmp_path))
    monkeypatch.delenv(laion_pt.TOKENIZER_ENV, raising=False)
    found = gpt2_tokenizer.find_gpt2_tokenizer(None, allow_download=False)
    assert found is not None and gpt2_tokenizer.is_gpt2(found[0]) and found[1] == str(tmp_path)
    assert gpt2_tokenizer.token_ids(found[0], "ab!") == [64, 65, 0, 220, 50256]  # bytes, " <|endoftext|>", '!' = 0
    assert laion_pt.find_tokenizer(tmp_path / "x.pt", 50257) is None


def test_a_checkpoint_changed_since_indexing_does_not_advise_passing_it_again() -> None:
    """Same encoder, same path, other weights (file replaced): passing that --checkpoint again cannot help."""
    lib = EncoderInfo(name="laion", checkpoint="/m/music.pt", dim=512, sample_rate=48000, checkpoint_sha256="a" * 64)
    now = EncoderInfo(name="laion", checkpoint="/m/music.pt", dim=1024, sample_rate=48000, checkpoint_sha256="b" * 64)
    with pytest.raises(IncompatibleLibraryError) as err:
        check_compatible(Manifest(encoder=lib, window_s=10.0, hop_s=10.0), now, Path("/lib"))
    msg = str(err.value)
    assert "\n" not in msg and "dim 512 (library) vs 1024 (now)" in msg
    assert "--checkpoint /m/music.pt" not in msg and "/m/music.pt holds other weights now" in msg
    other = EncoderInfo(name="laion", checkpoint="/m/other.pt", dim=512, sample_rate=48000)
    with pytest.raises(IncompatibleLibraryError, match="Use --encoder laion --checkpoint /m/music.pt"):
        check_compatible(Manifest(encoder=lib, window_s=10.0, hop_s=10.0), other, Path("/lib"))


def test_an_fp16_save_embeds_like_its_float32_original(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      tiny_dir: Path) -> None:
    """A ClapModel saved in float16 (model.half().save_pretrained) loads and embeds audio: it crashed with
    "mixed dtype (CPU)" in the first batch norm. Reference: the fp16 weights cast to float32 by hand."""
    from transformers import ClapModel

    from tests.engine.encoder_helpers import synth_audio

    isolate_hf(monkeypatch, tmp_path)
    half = ClapModel.from_pretrained(tiny_dir).half()
    directory = tmp_path / "fp16"
    half.save_pretrained(directory)
    want_dir = tmp_path / "fp32"
    half.float().save_pretrained(want_dir)
    windows = synth_audio(2)
    got = clap_hf.load(str(directory), "cpu", False).embed_audio(windows)
    want = clap_hf.load(str(want_dir), "cpu", False).embed_audio(windows)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
