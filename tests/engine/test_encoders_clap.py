"""The ``clap`` backend (transformers ClapModel) and the shared torch helpers, on tiny random models."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from songseek.engine.encoders import Encoder, clap_hf, load_encoder
from songseek.engine.encoders._torch_util import fit_windows, log_mel
from songseek.engine.errors import SongseekError, UsageError, WeightsNotFoundError
from tests.engine.encoder_helpers import (
    FUSED_DIR,
    isolate_hf,
    reference_audio,
    reference_text,
    save_tiny_tokenizer,
    synth_audio,
    tiny_config,
    tiny_model,
    unreachable_hub,
)

torch.set_num_threads(1)
TEXTS = ["a jazz trio with vibraphone", "heavy metal guitar solo", "calm piano", ""]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def naive_fit(row: np.ndarray, n: int, mode: str) -> np.ndarray:
    if len(row) >= n:
        return row[:n].copy()
    out: list[float] = []
    if mode == "repeat":
        while len(out) < n:
            out.extend(row.tolist())
        return np.array(out[:n], dtype=np.float32)
    while len(out) + len(row) <= n:
        out.extend(row.tolist())
    return np.array(out + [0.0] * (n - len(out)), dtype=np.float32)


@pytest.mark.parametrize("mode", ["repeatpad", "repeat"])
def test_fit_windows_matches_naive_reference(mode: str) -> None:
    rng = np.random.default_rng(1)
    for length in (1, 7, 29, 30, 31, 64, 100):
        windows = rng.standard_normal((3, length)).astype(np.float32)
        got = fit_windows(windows, 30, mode=mode)
        assert got.shape == (3, 30) and got.dtype == np.float32
        for row, out in zip(windows, got, strict=True):
            np.testing.assert_array_equal(out, naive_fit(row, 30, mode))


def test_fit_windows_rejects_bad_input() -> None:
    with pytest.raises(UsageError):
        fit_windows(np.zeros((2, 3, 4), np.float32), 10)
    with pytest.raises(UsageError):
        fit_windows(np.zeros((0, 10), np.float32), 10)
    with pytest.raises(UsageError):
        fit_windows(np.zeros((1, 10), np.int16), 10)


@pytest.mark.parametrize("fusion", [False, True])
def test_log_mel_matches_feature_extractor(fusion: bool) -> None:
    fe = clap_hf.laion_feature_extractor()
    wav = synth_audio(3)
    wav[2, wav.shape[1] // 2:] = 0.0  # digital silence: the log floor (1e-10 -> -100 dB) shows there
    ref = fe(list(wav), sampling_rate=48000, truncation="fusion" if fusion else "rand_trunc",
             return_tensors="np")["input_features"][:, 0]
    filters = fe.mel_filters if fusion else fe.mel_filters_slaney
    got = log_mel(torch.from_numpy(wav), filters, fe.fft_window_size, fe.hop_length).numpy()
    assert got.shape == ref.shape == (3, 1001, 64)
    floor = ref == ref.min()
    assert ref.min() == pytest.approx(-100.0) and floor.sum() > 1000  # silent frames sit on the floor
    np.testing.assert_allclose(got[floor], -100.0, atol=1e-4)
    # float32 (torch) against float64 (numpy): within 0.002 dB for bins less than 80 dB below each clip's
    # peak; further down (a pure tone's leakage) float32 rounding shows, so compare powers to the peak
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    peak = ref.max(axis=(1, 2), keepdims=True)
    loud = ref > peak - 80
    np.testing.assert_allclose(got[loud], ref[loud], atol=2e-3, rtol=0)
    assert np.abs(10 ** ((got - peak) / 10) - 10 ** ((ref - peak) / 10)).max() < 5e-6


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny unfused ClapModel directory with LAION's feature extractor and a test-made tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_clap")
    tiny_model(tiny_config()).save_pretrained(directory)
    clap_hf.laion_feature_extractor().save_pretrained(directory)
    save_tiny_tokenizer(directory)
    return directory


def test_clap_from_local_dir_matches_transformers(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    enc = clap_hf.load(str(tiny_dir), "cpu", False)
    assert isinstance(enc, Encoder)
    assert (enc.info.name, enc.info.dim, enc.info.sample_rate) == ("clap", 24, 48000)
    assert enc.info.native_window_s == 10.0 and enc.info.text_max_tokens == 77 and not enc.info.random_weights
    wav = synth_audio(3)
    audio = enc.embed_audio(wav)
    assert audio.shape == (3, 24) and audio.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    model = ClapModel.from_pretrained(tiny_dir).eval()
    fe = ClapFeatureExtractor.from_pretrained(tiny_dir)
    np.testing.assert_allclose(audio, reference_audio(model, fe, wav), atol=1e-4)
    text = enc.embed_text(TEXTS)
    assert text.shape == (4, 24)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(text, reference_text(model, AutoTokenizer.from_pretrained(tiny_dir), TEXTS),
                               atol=1e-5)
    assert np.abs(text[0] - text[1]).max() > 1e-3  # different texts, different vectors


def test_clap_is_deterministic_and_fits_windows(tiny_dir: Path) -> None:
    enc = load_encoder("clap", str(tiny_dir), "cpu", False)
    wav = synth_audio(3, seconds=12.0)
    first = enc.embed_audio(wav)
    np.testing.assert_array_equal(first, enc.embed_audio(wav))
    np.testing.assert_array_equal(enc.embed_text(TEXTS), enc.embed_text(TEXTS))
    # a 12 s window is its first 10 s; a 4 s window is 4+4 s then 2 s of silence
    np.testing.assert_allclose(first, enc.embed_audio(wav[:, :480000]), atol=1e-6)
    short = wav[:, :192000]
    padded = np.concatenate([short, short, np.zeros((3, 96000), np.float32)], axis=1)
    np.testing.assert_allclose(enc.embed_audio(short), enc.embed_audio(padded), atol=1e-6)
    # text embeddings do not depend on batch-mates beyond float rounding (padding is masked)
    np.testing.assert_allclose(enc.embed_text(TEXTS[:1]), enc.embed_text(TEXTS)[:1], atol=1e-6)
    assert enc.embed_text([]).shape == (0, 24)


def test_clap_fused_uses_only_the_global_path(tmp_path: Path) -> None:
    from transformers import ClapFeatureExtractor

    model = tiny_model(tiny_config(fusion=True))
    model.save_pretrained(tmp_path)
    fe = clap_hf.laion_feature_extractor()
    fe.truncation = "fusion"
    fe.save_pretrained(tmp_path)
    enc = clap_hf.load(str(tmp_path), "cpu", False)
    wav = synth_audio(3)
    got = enc.embed_audio(wav)
    np.testing.assert_array_equal(got, enc.embed_audio(wav))
    # float32 torch mel against the extractor's float64 mel: a pure tone's -90 dB leakage differs a little
    np.testing.assert_allclose(got, reference_audio(model, ClapFeatureExtractor.from_pretrained(tmp_path), wav),
                               atol=5e-4)
    # the feature extractor alone marks one random clip "longer"; that changes its vector
    inputs = fe(list(wav), sampling_rate=48000, return_tensors="pt")
    assert int(inputs["is_longer"].sum()) == 1
    with torch.no_grad():
        out = model.get_audio_features(**inputs)
    noisy = torch.nn.functional.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
    row = int(inputs["is_longer"].ravel().nonzero()[0])
    assert np.abs(noisy.numpy()[row] - got[row]).max() > 1e-4


def test_random_weights_are_seeded_and_flagged(tmp_path: Path) -> None:
    tiny_config().save_pretrained(tmp_path)
    a = clap_hf.load(str(tmp_path), "cpu", True)
    b = clap_hf.load(str(tmp_path), "cpu", True)
    assert a.info.random_weights and a.info.dim == 24
    wav = synth_audio(2)
    np.testing.assert_array_equal(a.embed_audio(wav), b.embed_audio(wav))
    # no tokenizer files: audio works, text says what is missing
    with pytest.raises(SongseekError, match="tokenizer") as err:
        a.embed_text(["jazz"])
    assert f"copy them into {tmp_path}" in str(err.value) and "\n" not in str(err.value)


def test_random_weights_from_hub_id_offline_without_cache(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """Random weights for an id that is not cached: transformers' default ClapConfig (HTSAT-tiny + RoBERTa)."""
    isolate_hf(monkeypatch, tmp_path)
    enc = clap_hf.load(None, "cpu", True)
    assert enc.info.checkpoint == clap_hf.DEFAULT_CHECKPOINT and enc.info.random_weights and enc.info.dim == 512
    assert enc._model.config.audio_config.patch_embeds_hidden_size == 96  # HTSAT-tiny, unfused
    with pytest.raises(SongseekError, match="text search needs the tokenizer"):
        enc.embed_text(["jazz"])


def test_missing_tokenizer_advice_is_one_a_searcher_can_follow(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """Before: `songseek search piano --library libclap` (clap, random weights, no tokenizer cached) said
    "pass --checkpoint DIR", which search does not take, and exited 1 (missing weights exit 2). Now: the
    Hugging Face cache or $SONGSEEK_CLAP_TOKENIZER, which the clap encoder reads too, and exit code 2."""
    isolate_hf(monkeypatch, tmp_path)
    monkeypatch.delenv(clap_hf.TOKENIZER_ENV, raising=False)
    enc = clap_hf.load(None, "cpu", True)
    with pytest.raises(WeightsNotFoundError) as err:
        enc.embed_text(["jazz"])
    msg = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in msg and "--checkpoint" not in msg
    assert "Hugging Face cache" in msg and f"{clap_hf.TOKENIZER_ENV}=DIR" in msg
    monkeypatch.setenv(clap_hf.TOKENIZER_ENV, str(save_tiny_tokenizer(tmp_path / "tok")))
    enc = clap_hf.load(None, "cpu", True)  # the folder the message names is read
    assert enc.embed_text(["jazz"]).shape == (1, 512)


def test_missing_weights_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_hf(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFoundError) as err:
        clap_hf.load("laion/clap-htsat-unfused", "cpu", False)
    msg = str(err.value)
    assert "\n" not in msg and "laion/clap-htsat-unfused" in msg and "--checkpoint" in msg
    assert "HF_HUB_OFFLINE" in msg
    missing = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(WeightsNotFoundError) as err:
        clap_hf.load(missing, "cpu", False)
    assert "\n" not in str(err.value) and missing in str(err.value)
    tiny_config().save_pretrained(tmp_path / "config_only")  # a directory without weights
    with pytest.raises(WeightsNotFoundError) as err:
        clap_hf.load(str(tmp_path / "config_only"), "cpu", False)
    assert "\n" not in str(err.value) and "config_only" in str(err.value)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="the laion encoder"):
        clap_hf.load(str(tmp_path / "model.pt"), "cpu", False)


def test_unreachable_hub_fails_fast_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Online mode, nothing cached, no network: one probe, no download attempt (huggingface_hub would
    retry for ~25 s), one line naming what to pass instead."""
    hub = unreachable_hub(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFoundError) as err:
        clap_hf.load("laion/clap-htsat-unfused", "cpu", False)
    msg = str(err.value)
    assert hub.probes() == 1 and not hub.repo_requests("laion/")
    assert "\n" not in msg and "unreachable" in msg and "--checkpoint DIR" in msg and "HF_HUB_OFFLINE" in msg
    # random weights for an uncached id: the default architecture, still without a download attempt
    assert clap_hf.load(None, "cpu", True).info.random_weights
    assert hub.probes() == 1 and not hub.repo_requests("laion/")


def test_a_hub_probe_stuck_in_a_name_lookup_counts_as_unreachable(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """The request timeout does not cover getaddrinfo; a resolver that never answers must not hang a load."""
    import huggingface_hub.utils as hf_utils

    from songseek.engine.encoders import _hub

    unreachable_hub(monkeypatch, tmp_path)
    release = threading.Event()

    class StuckResolver:
        def head(self, url: str, timeout: float) -> None:
            release.wait(60)  # as a blocking DNS lookup: the timeout argument does not apply to it

    monkeypatch.setattr(hf_utils, "get_session", lambda: StuckResolver())
    monkeypatch.setattr(_hub, "PROBE_TIMEOUT_S", 0.05)
    monkeypatch.setattr(_hub, "hub_reachable", functools.cache(_hub.hub_reachable.__wrapped__))
    try:
        assert _hub.hub_problem() == f"{_hub.endpoint()} is unreachable"
        assert not release.is_set()  # answered while the lookup was still blocked
    finally:
        release.set()
    assert _hub.run_bounded(lambda: True, 5.0) and not _hub.run_bounded(lambda: 1 / 0 > 0, 5.0)


def test_cached_model_loads_without_contacting_the_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      tiny_dir: Path) -> None:
    """A model in the HF cache is used as it is: the hub is neither probed nor asked for updates."""
    hub = unreachable_hub(monkeypatch, tmp_path)
    snap = tmp_path / "hf_home" / "hub" / "models--org--tiny" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in tiny_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    enc = clap_hf.load("org/tiny", "cpu", False)
    assert enc.info.checkpoint == "org/tiny" and hub.probes() == 0 and not hub.repo_requests("org/tiny")


def test_bad_windows_and_texts(tiny_dir: Path) -> None:
    enc = clap_hf.load(str(tiny_dir), "cpu", False)
    with pytest.raises(UsageError):
        enc.embed_audio(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(UsageError):
        enc.embed_text("jazz")  # type: ignore[arg-type]


def test_real_fused_config_and_tokenizer(tmp_path: Path) -> None:
    """laion/clap-htsat-fused's real config, feature extractor and tokenizer, at random weights."""
    if not FUSED_DIR.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-config test skipped")
    enc = clap_hf.load(str(FUSED_DIR), "cpu", True)
    assert enc.info.dim == 512 and enc.info.sample_rate == 48000 and enc.info.random_weights
    wav = synth_audio(2)
    audio = enc.embed_audio(wav)
    assert audio.shape == (2, 512)
    np.testing.assert_array_equal(audio, enc.embed_audio(wav))
    long_caption = " ".join(["a slow jazz ballad with brushed drums and a warm upright bass"] * 20)
    text = enc.embed_text(["a jazz trio with vibraphone", long_caption])
    assert text.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_device_matches_cpu(tiny_dir: Path, device: str) -> None:
    cpu = clap_hf.load(str(tiny_dir), "cpu", False)
    dev = clap_hf.load(str(tiny_dir), device, False)
    wav = synth_audio(3)
    np.testing.assert_allclose(dev.embed_audio(wav), cpu.embed_audio(wav), atol=1e-4)
    np.testing.assert_allclose(dev.embed_text(TEXTS), cpu.embed_text(TEXTS), atol=1e-4)


def test_a_cached_config_without_vocabulary_downloads_the_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first download of the weights caches config.json only; from it transformers builds a tokenizer of
    special tokens alone, without an error. That must count as a cache miss, so the vocabulary is fetched."""
    import transformers

    from songseek.engine.encoders import _hub

    class Tok:
        def __init__(self, n: int) -> None:
            self.n, self.all_special_tokens = n, ["<s>", "</s>", "<pad>", "<unk>", "<mask>"]

        def __len__(self) -> int:
            return self.n

    calls: list[bool] = []

    def from_pretrained(source: str, local_files_only: bool = False) -> Tok:
        calls.append(local_files_only)
        return Tok(5 if local_files_only else 50_265)  # the cache: specials only; the hub: the vocabulary

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.setattr(_hub, "hub_problem", lambda: None)  # the hub answers
    tok = clap_hf.load_tokenizer("laion/clap-htsat-unfused", local_only=False)
    assert tok is not None and len(tok) == 50_265 and calls == [True, False]


def test_a_checkpoint_missing_trained_tensors_is_refused(tmp_path: Path, tiny_dir: Path) -> None:
    """transformers fills tensors absent from the weights with random values and only logs a report: a
    text-only save, or a fused config over unfused weights, loaded as "trained" and indexed audio with a
    random tower. Now one line naming what is missing."""
    import json

    from safetensors.torch import load_file, save_file

    weights = load_file(str(tiny_dir / "model.safetensors"))
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    (text_only / "config.json").write_bytes((tiny_dir / "config.json").read_bytes())
    save_file({k: v for k, v in weights.items() if not k.startswith("audio_model.")},
              str(text_only / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsNotFoundError, match="lacks .* trained tensors") as err:
        clap_hf.load(str(text_only), "cpu", False)
    assert "\n" not in str(err.value) and "audio_model." in str(err.value)
    fused = tmp_path / "fused_config"
    fused.mkdir()
    config = json.loads((tiny_dir / "config.json").read_text())
    config["audio_config"]["enable_fusion"] = True  # the fusion layers have no weights in this file
    (fused / "config.json").write_text(json.dumps(config))
    (fused / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes())
    with pytest.raises(WeightsNotFoundError, match="lacks"):
        clap_hf.load(str(fused), "cpu", False)
    assert not clap_hf.load(str(tiny_dir), "cpu", False).info.random_weights  # a complete save still loads
