"""The ``laion`` backend: original LAION-CLAP .pt files mapped into transformers' ClapModel.

A tiny random ClapModel is written out in LAION's own format (original key names, fused qkv,
``module.`` prefixes, the {"state_dict", "epoch"} wrapper and the extra tensors LAION saves), loaded
back through ``laion_pt.load`` and compared with the tiny model run by transformers itself. The key
names are checked against the real music checkpoint's layout (tests/engine/laion_music_keys.txt).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from songseek.engine.encoders import clap_hf, laion_pt, load_encoder
from songseek.engine.errors import SongseekError, UsageError, WeightsNotFoundError
from tests.engine.encoder_helpers import (
    FUSED_DIR,
    isolate_hf,
    laion_layout,
    reference_audio,
    reference_text,
    save_laion_pt,
    save_tiny_tokenizer,
    synth_audio,
    tiny_config,
    tiny_model,
    to_original,
    unreachable_hub,
)
from tests.engine.msclap_helpers import slaney_mel

torch.set_num_threads(1)
TEXTS = ["a jazz trio with vibraphone", "heavy metal guitar solo", "calm piano"]


@pytest.fixture
def offline_empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(laion_pt.TOKENIZER_ENV, raising=False)
    return isolate_hf(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def pattern(key: str) -> str:
    return re.sub(r"\.\d+\.", ".N.", key.removeprefix("module."))


def test_test_inverse_uses_the_real_layouts_names() -> None:
    """Every key our tiny original-format file holds has a counterpart in the real music checkpoint."""
    real = {pattern(k) for k in laion_layout()}
    tiny = {pattern(k) for k in to_original(tiny_model(tiny_config()).state_dict())}
    assert tiny - real == set()


def test_real_music_layout_maps_completely() -> None:
    """The real HTSAT-base + RoBERTa-base layout (shapes only) maps onto ClapModel with no key left over."""
    sd = {k: torch.empty(shape, device="meta") for k, shape in laion_layout().items()}
    model = laion_pt.build_model(sd, "music layout")
    audio, text = model.config.audio_config, model.config.text_config
    assert list(audio.depths) == [2, 2, 12, 2] and audio.patch_embeds_hidden_size == 128
    assert list(audio.num_attention_heads) == [4, 8, 16, 32] and audio.window_size == 8
    assert audio.hidden_size == 1024 and not audio.enable_fusion and model.config.projection_dim == 512
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads) == (12, 768, 12)
    assert (text.vocab_size, text.max_position_embeddings, text.layer_norm_eps) == (50265, 514, 1e-5)


@pytest.mark.parametrize("fusion", [False, True])
def test_laion_pt_round_trip_matches_transformers(fusion: bool, tmp_path: Path, tokenizer_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    monkeypatch.setenv(laion_pt.TOKENIZER_ENV, str(tokenizer_dir))
    model = tiny_model(tiny_config(fusion=fusion))
    path = save_laion_pt(model, tmp_path / "tiny.pt")
    enc = load_encoder("laion", str(path), "cpu", False)
    info = enc.info
    assert (info.name, info.dim, info.sample_rate, info.native_window_s) == ("laion", 24, 48000, 10.0)
    assert info.checkpoint == str(path) and not info.random_weights
    assert info.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    wav = synth_audio(3)
    audio = enc.embed_audio(wav)
    assert audio.shape == (3, 24) and audio.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    fe = clap_hf.laion_feature_extractor()
    np.testing.assert_allclose(audio, reference_audio(model, fe, wav), atol=5e-4)
    np.testing.assert_array_equal(audio, enc.embed_audio(wav))
    text = enc.embed_text(TEXTS)
    np.testing.assert_allclose(text, reference_text(model, AutoTokenizer.from_pretrained(tokenizer_dir), TEXTS),
                               atol=1e-5)
    np.testing.assert_array_equal(text, enc.embed_text(TEXTS))


def test_real_tokenizer_beside_the_checkpoint(tmp_path: Path, offline_empty_cache: Path) -> None:
    """The RoBERTa BPE files of laion/clap-htsat-fused next to the .pt are found without any setting."""
    if not FUSED_DIR.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-tokenizer test skipped")
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((FUSED_DIR / name).read_bytes())
    model = tiny_model(tiny_config(vocab_size=50265))
    enc = laion_pt.load(str(save_laion_pt(model, tmp_path / "music.pt")), "cpu", False)
    long_caption = " ".join(["a slow jazz ballad with brushed drums and a warm upright bass"] * 20)
    text = enc.embed_text(TEXTS + [long_caption])
    assert text.shape == (4, 24)
    from transformers import AutoTokenizer

    np.testing.assert_allclose(text, reference_text(model, AutoTokenizer.from_pretrained(FUSED_DIR),
                                                    TEXTS + [long_caption]), atol=1e-5)


def test_missing_tokenizer_only_fails_text(tmp_path: Path, offline_empty_cache: Path) -> None:
    enc = laion_pt.load(str(save_laion_pt(tiny_model(tiny_config()), tmp_path / "t.pt")), "cpu", False)
    assert enc.embed_audio(synth_audio(1)).shape == (1, 24)
    with pytest.raises(SongseekError) as err:
        enc.embed_text(["jazz"])
    msg = str(err.value)
    assert "\n" not in msg and laion_pt.TOKENIZER_ENV in msg and "t.pt" in msg


def test_missing_checkpoint_errors_are_one_line(tmp_path: Path, offline_empty_cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        laion_pt.load(None, "cpu", False)
    msg = str(err.value)
    assert "\n" not in msg and laion_pt.DEFAULT_CHECKPOINT in msg
    assert "https://huggingface.co/lukewys/laion_clap" in msg and "--checkpoint PATH" in msg
    with pytest.raises(WeightsNotFoundError) as err:
        laion_pt.load("lukewys/laion_clap/630k-audioset-best.pt", "cpu", False)
    assert "\n" not in str(err.value) and "630k-audioset-best.pt" in str(err.value)
    missing = str(tmp_path / "nowhere" / "music.pt")
    with pytest.raises(WeightsNotFoundError) as err:
        laion_pt.load(missing, "cpu", False)
    assert "\n" not in str(err.value) and missing in str(err.value)
    with pytest.raises(UsageError, match="the clap encoder"):
        laion_pt.load(str(tmp_path), "cpu", False)


def test_damaged_and_foreign_checkpoints(tmp_path: Path) -> None:
    model = tiny_model(tiny_config())
    good = to_original(model.state_dict())
    truncated = tmp_path / "truncated.pt"
    torch.save({"state_dict": good}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(WeightsNotFoundError, match="truncated.pt"):
        laion_pt.load(str(truncated), "cpu", False)
    one_d_fusion = dict(good, **{"audio_branch.mel_conv1d.0.weight": torch.zeros(64, 64, 5)})
    with pytest.raises(WeightsNotFoundError, match="mel_conv1d"):
        laion_pt.build_model(one_d_fusion)
    lacking = {k: v for k, v in good.items() if not k.endswith("pooler.dense.bias")}
    with pytest.raises(WeightsNotFoundError, match="pooler.dense.bias"):
        laion_pt.build_model(lacking)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": good, "args": Path("x")}, pickled)  # a non-tensor Python object
    with pytest.raises(WeightsNotFoundError) as err:
        laion_pt.load(str(pickled), "cpu", False)
    assert laion_pt.UNSAFE_PICKLE_ENV in str(err.value) and "\n" not in str(err.value)


def test_random_weights_take_the_files_architecture(tmp_path: Path) -> None:
    path = save_laion_pt(tiny_model(tiny_config()), tmp_path / "tiny.pt")
    real = laion_pt.load(str(path), "cpu", False)
    a = laion_pt.load(str(path), "cpu", True)
    b = laion_pt.load(str(path), "cpu", True)
    assert a.info.random_weights and a.info.dim == 24 and a.info.checkpoint_sha256 == ""
    wav = synth_audio(2)
    np.testing.assert_array_equal(a.embed_audio(wav), b.embed_audio(wav))
    assert np.abs(a.embed_audio(wav) - real.embed_audio(wav)).max() > 1e-3


def test_unreachable_hub_fails_fast_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default checkpoint, online mode, nothing cached, no network: one probe, no download attempt."""
    monkeypatch.delenv(laion_pt.TOKENIZER_ENV, raising=False)
    hub = unreachable_hub(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFoundError) as err:
        laion_pt.load(None, "cpu", False)
    msg = str(err.value)
    assert hub.probes() == 1 and not hub.repo_requests(laion_pt.HF_REPO)
    assert "\n" not in msg and "unreachable" in msg and "--checkpoint PATH" in msg and "HF_HUB_OFFLINE" in msg
    assert laion_pt.find_tokenizer(None) is None  # text search: no download attempt either
    assert hub.probes() == 1 and not any(hub.repo_requests(i) for i in laion_pt.TOKENIZER_IDS)


def test_hub_file_name_resolves_from_the_hf_cache(offline_empty_cache: Path, tokenizer_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare file name is looked up in lukewys/laion_clap through the HF cache (offline: cache only)."""
    repo = offline_empty_cache / "models--lukewys--laion_clap"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    model = tiny_model(tiny_config())
    save_laion_pt(model, repo / "snapshots" / commit / "tiny-cached.pt")
    monkeypatch.setenv(laion_pt.TOKENIZER_ENV, str(tokenizer_dir))
    for name in ("tiny-cached.pt", "lukewys/laion_clap/tiny-cached.pt"):
        enc = laion_pt.load(name, "cpu", False)
        assert enc.info.checkpoint == "lukewys/laion_clap/tiny-cached.pt"  # the same on every machine
        np.testing.assert_allclose(enc.embed_audio(synth_audio(1)),
                                   reference_audio(model, clap_hf.laion_feature_extractor(), synth_audio(1)),
                                   atol=5e-4)


def _numpy1_pickle_module() -> Any:
    """A pickle module for torch.save that names numpy's scalar constructor as numpy 1.x pickles did
    (``numpy.core.multiarray.scalar``; numpy 2 writes ``numpy._core...``): how LAION's released files name it."""
    import pickle
    import types

    from numpy._core.multiarray import scalar

    class Pickler(pickle._Pickler):  # type: ignore[name-defined]
        def save_global(self, obj: Any, name: str | None = None) -> None:
            if obj is scalar:
                self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")  # type: ignore[attr-defined]
                self.memoize(obj)  # type: ignore[attr-defined]
                return
            super().save_global(obj, name)  # type: ignore[misc]

    module = types.ModuleType("numpy1_pickle")
    module.Pickler = Pickler  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("numpy1_names", [False, True])
def test_training_checkpoint_with_numpy_learning_rates_loads(numpy1_names: bool, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """LAION's released .pt files are training checkpoints: next to the state dict they hold the optimizer
    state, whose learning rates LAION's cosine schedule stores as numpy.float64 (laion_clap/training/
    scheduler.py). Those numpy scalars are plain numbers: the file loads with weights_only, no opt-in."""
    monkeypatch.delenv(laion_pt.UNSAFE_PICKLE_ENV, raising=False)
    model = tiny_model(tiny_config())
    sd = {"module." + k: v for k, v in to_original(model.state_dict()).items()}
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
           "param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": np.float64(0.0),
                             "amsgrad": False, "params": [0, 1]}]}
    path = tmp_path / "music.pt"
    extra = {"pickle_module": _numpy1_pickle_module()} if numpy1_names else {}
    torch.save({"epoch": 15, "name": "x", "state_dict": sd, "optimizer": opt}, path, **extra)
    assert (b"numpy.core.multiarray" in path.read_bytes()) == numpy1_names
    enc = laion_pt.load(str(path), "cpu", False)
    np.testing.assert_allclose(enc.embed_audio(synth_audio(1)),
                               reference_audio(model, clap_hf.laion_feature_extractor(), synth_audio(1)), atol=5e-4)


def test_a_file_that_is_no_checkpoint_is_not_blamed_on_pickling(tmp_path: Path) -> None:
    """A web page or Git LFS pointer saved under the checkpoint's name is a bad download, not a file to
    trust: the line says so and does not suggest SONGSEEK_UNSAFE_PICKLE."""
    for name, text in (("page.pt", "<!DOCTYPE html><html>404</html>"),
                       ("lfs.pt", "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(WeightsNotFoundError) as err:
            laion_pt.load(str(path), "cpu", False)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and laion_pt.UNSAFE_PICKLE_ENV not in msg
        assert "not a PyTorch checkpoint" in msg


def test_other_models_files_name_the_file_and_the_encoder(tmp_path: Path) -> None:
    """A file of another model family says which --encoder takes it; an unknown one names the file."""
    from tests.engine.msclap_helpers import to_msclap

    hf = tiny_model(tiny_config()).state_dict()
    cases = {
        "msclap.pth": ({"model": to_msclap({"text.wte.weight": torch.zeros(4, 2)})}, "--encoder msclap"),
        "hf.pt": (hf, "--encoder clap"),
        "linear.pt": (torch.nn.Linear(3, 3).state_dict(), "unknown weight 'weight'"),
        "empty.pt": ({}, "no state dict of tensors"),
    }
    for name, (obj, expected) in cases.items():
        path = tmp_path / name
        torch.save(obj, path)
        for random_weights in (False, True):
            with pytest.raises(WeightsNotFoundError) as err:
                laion_pt.load(str(path), "cpu", random_weights)
            msg = str(err.value)
            assert "\n" not in msg and str(path) in msg and expected in msg, msg


def test_malformed_weights_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    good = to_original(tiny_model(tiny_config()).state_dict())
    qkv = "audio_branch.layers.0.blocks.0.attn.qkv.weight"
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": dict(good, **{qkv: torch.zeros(2, 16)})}, path)  # cannot be split in 3
    with pytest.raises(WeightsNotFoundError, match=r"attn\.qkv\.weight") as err:
        laion_pt.load(str(path), "cpu", False)
    assert str(path) in str(err.value)


def test_bert_text_tower_is_refused(tmp_path: Path) -> None:
    """laion_clap can train with a BERT text tower: same key names as RoBERTa, but 2 token types, other
    position ids and another tokenizer. Read as RoBERTa it would give wrong text vectors silently."""
    config = tiny_config()
    config.text_config.type_vocab_size = 2
    path = save_laion_pt(tiny_model(config), tmp_path / "bert.pt")
    with pytest.raises(WeightsNotFoundError, match="token_type_embeddings") as err:
        laion_pt.load(str(path), "cpu", False)
    assert str(path) in str(err.value) and "RoBERTa" in str(err.value)


def test_a_foreign_tokenizer_beside_the_checkpoint_is_not_used(tmp_path: Path, offline_empty_cache: Path) -> None:
    """GPT-2's tokenizer files (which msclap wants beside its checkpoint) in the same folder as a LAION .pt:
    its ids fit RoBERTa's 50,265-word table but mean other words, so they must not be used."""
    from tests.engine.msclap_helpers import save_gpt2_sized_tokenizer

    save_gpt2_sized_tokenizer(tmp_path)
    path = save_laion_pt(tiny_model(tiny_config(vocab_size=50265)), tmp_path / "music.pt")
    enc = laion_pt.load(str(path), "cpu", False)
    with pytest.raises(WeightsNotFoundError, match=laion_pt.TOKENIZER_ENV):
        enc.embed_text(["jazz"])


def test_random_weights_with_a_bad_local_path_is_an_error(tmp_path: Path) -> None:
    """--random-weights takes the architecture of the file given; a directory or a missing path is an error
    (not a silent HTSAT-base labelled 'lukewys/laion_clap//that/path')."""
    with pytest.raises(UsageError, match="directory"):
        laion_pt.load(str(tmp_path), "cpu", True)
    missing = str(tmp_path / "nowhere" / "music.pt")
    with pytest.raises(WeightsNotFoundError) as err:
        laion_pt.load(missing, "cpu", True)
    assert missing in str(err.value) and "\n" not in str(err.value)
    enc = laion_pt.load("630k-best.pt", "cpu", True)  # a hub file name: the music architecture, never fetched
    assert enc.info.checkpoint == "lukewys/laion_clap/630k-best.pt" and enc.info.random_weights


@pytest.mark.parametrize(("key", "value"), [
    ("audio_branch.spectrogram_extractor.stft.conv_real.weight", torch.zeros(769, 1, 1536)),  # HTSAT-tiny-win-1536
    ("audio_branch.logmel_extractor.melW", torch.from_numpy(slaney_mel(44100, 1024, 64, 50.0, 14000.0)).float()),
    ("audio_branch.logmel_extractor.melW", torch.from_numpy(slaney_mel(48000, 1024, 64, 50.0, 18000.0)).float()),
])
def test_a_model_trained_with_other_audio_settings_is_refused(key: str, value: torch.Tensor, tmp_path: Path) -> None:
    """The STFT and mel weights a LAION file stores are recomputed, not loaded: they must be the ones songseek
    computes (1024-point STFT; 64 Slaney bands for 48 kHz, 50-14,000 Hz), or the model would hear wrongly."""
    path = save_laion_pt(tiny_model(tiny_config()), tmp_path / "t.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["module." + key] = value
    torch.save(ckpt, path)
    with pytest.raises(WeightsNotFoundError, match=key.replace(".", r"\.")) as err:
        laion_pt.load(str(path), "cpu", False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_pickled_objects_load_only_with_the_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(laion_pt.UNSAFE_PICKLE_ENV, raising=False)
    path = tmp_path / "args.pt"
    torch.save({"state_dict": to_original(tiny_model(tiny_config()).state_dict()), "args": Path("x")}, path)
    with pytest.raises(WeightsNotFoundError, match=r"pickled Python objects \(pathlib\.\w*Path\)"):
        laion_pt.load(str(path), "cpu", False)
    monkeypatch.setenv(laion_pt.UNSAFE_PICKLE_ENV, "1")
    assert laion_pt.load(str(path), "cpu", False).info.dim == 24
