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
