"""The bundled ``demo`` encoder: loads offline, honours the Encoder protocol, and knows its music."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from songseek.engine.encoders import load_encoder  # noqa: E402
from songseek.engine.encoders.base import Encoder  # noqa: E402
from songseek.engine.encoders.demo import (  # noqa: E402
    BUNDLED,
    WEIGHTS_FILE,
    bundled_dir,
    count_tokens,
    load,
    tokenize,
)
from songseek.engine.errors import UsageError, WeightsNotFoundError  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def enc():
    import torch

    torch.set_num_threads(1)
    return load(None, "cpu", False)


def _noise(n: int, length: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, length))).astype(np.float32)


def _unit_rows(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5))


def test_bundled_model_info(enc) -> None:
    info = enc.info
    assert isinstance(enc, Encoder)
    assert (info.name, info.checkpoint, info.sample_rate, info.dim) == ("demo", BUNDLED, SR, 128)
    assert info.random_weights is False and info.native_window_s == 10.0 and info.text_max_tokens == 64
    weights = bundled_dir() / WEIGHTS_FILE
    assert info.checkpoint_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert weights.stat().st_size < 10 * 2**20  # package data stays small
    assert enc.config.training["generator_version"] == "synth-v1"  # type: ignore[attr-defined]
    assert load_encoder("demo").info == info  # through the registry


def test_shapes_norms_and_determinism(enc) -> None:
    for length in (10 * SR, 3 * SR, 2000):  # trained on 10 s; any length works, tiny ones are padded
        a = enc.embed_audio(_noise(3, length))
        assert a.shape == (3, 128) and a.dtype == np.float32 and _unit_rows(a)
        assert np.array_equal(a, enc.embed_audio(_noise(3, length)))
    single = enc.embed_audio(_noise(3, 10 * SR))[1]
    np.testing.assert_allclose(enc.embed_audio(_noise(3, 10 * SR)[1:2])[0], single, atol=1e-5)
    texts = ["soft piano and strings", "loud busy drums with a saw lead", ""]
    t = enc.embed_text(texts)
    assert t.shape == (3, 128) and t.dtype == np.float32 and _unit_rows(t)
    assert np.array_equal(t, enc.embed_text(texts))
    np.testing.assert_allclose(enc.embed_text(texts[1:2])[0], t[1], atol=1e-5)  # batch-independent
    assert enc.embed_text([]).shape == (0, 128)


def test_unseen_words_are_embedded_and_spelling_helps(enc) -> None:
    unseen = "a glockenspielish zzyzx quartet"
    assert any(w not in enc._tokenizer.index for w in tokenize(unseen))
    v = enc.embed_text([unseen])
    assert np.all(np.isfinite(v)) and _unit_rows(v)
    a, b, c = enc.embed_text(["pianos", "piano", "drums"])
    assert float(a @ b) > float(a @ c)  # n-grams carry an unseen plural near its singular


def test_token_count_and_truncation(enc) -> None:
    assert count_tokens("Soft piano-like keys, at 0:40!") == 6  # soft piano-like keys at 0 40
    words = " ".join(["piano"] * 30 + ["drums"] * 50)
    assert count_tokens(words) == 80 and enc.count_tokens(words) == 80
    first_64 = " ".join(tokenize(words)[:64])
    np.testing.assert_allclose(enc.embed_text([words]), enc.embed_text([first_64]), atol=1e-6)


def test_missing_or_corrupt_weights_are_one_clear_error(tmp_path) -> None:
    bad = tmp_path / "ckpt"
    shutil.copytree(bundled_dir(), bad)
    (bad / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsNotFoundError, match="corrupt demo weights") as err:
        load(str(bad), "cpu", False)
    assert "\n" not in str(err.value)
    (bad / WEIGHTS_FILE).unlink()
    with pytest.raises(WeightsNotFoundError):
        load(str(bad), "cpu", False)
    (bad / "config.json").unlink()
    with pytest.raises(WeightsNotFoundError, match="missing or unreadable"):
        load(str(bad), "cpu", False)
    with pytest.raises(UsageError, match="not a directory"):
        load(str(tmp_path / "nowhere"), "cpu", False)


def test_directory_checkpoint_and_random_weights(tmp_path) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(bundled_dir(), copy)
    enc = load(str(copy), "cpu", False)
    assert enc.info.checkpoint == str(copy) and enc.info.checkpoint_sha256
    rnd = load(None, "cpu", True)
    assert rnd.info.random_weights is True and rnd.info.checkpoint_sha256 == ""
    x = _noise(2, SR)
    assert np.array_equal(rnd.embed_audio(x), load(None, "cpu", True).embed_audio(x))  # same random model


def test_section_captions_find_their_tracks(enc) -> None:
    """Quality smoke test on held-out music (seed 2; the model was trained on seed 1).

    The first 16 tracks of at most 60 s (26 section captions): every section caption ranks the 16
    tracks by their best 10 s window (max pooling). Chance: R@1 = 1/16 = 6 %, R@5 = 5/16 = 31 %.
    Measured with the shipped model: R@1 = 85 %, R@5 = 96 %; the floors (45 %, 75 %) leave a wide
    margin and still fail a model that learned nothing.
    """
    from songseek.benchmarks.synth import synth_track
    from songseek.benchmarks.synth.audio import render
    from songseek.benchmarks.synth.score import sample_score

    idx = [i for i in range(200) if sample_score(2, i).duration_s <= 60.0][:16]
    tracks = [synth_track(2, i) for i in idx]
    frames = []
    for t in tracks:
        y = render(t.score)
        n = max(1, y.size // (10 * SR))
        frames.append(enc.embed_audio(y[: n * 10 * SR].reshape(n, 10 * SR)))
    caps = [c for t in tracks for c in t.section_captions]
    owner = np.array([k for k, t in enumerate(tracks) for _ in t.section_captions])
    q = enc.embed_text(caps)
    scores = np.stack([(q @ f.T).max(axis=1) for f in frames], axis=1)  # (captions, tracks)
    rank = 1 + (scores > scores[np.arange(len(caps)), owner][:, None]).sum(axis=1)
    r1, r5 = float(np.mean(rank <= 1)), float(np.mean(rank <= 5))
    assert r1 >= 0.45 and r5 >= 0.75, (r1, r5)


def test_needs_preparing_only_until_the_text_tower_is_exported(tmp_path, monkeypatch) -> None:
    """Before: `songseek index` said "preparing the text search path (the first time per checkpoint exports
    it to ONNX)" on every run. The encoder now says whether resolving will export (or time) anything, so
    the note can come only when it does: once per checkpoint, never for torch, never once cached."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("SONGSEEK_CACHE_DIR", str(tmp_path))
    first = load(None, "cpu", False)
    first.set_text_backend("torch")
    assert not first.text_backend_needs_preparing()
    first.set_text_backend("auto")
    assert first.text_backend_needs_preparing()
    first.text_backend_state()
    assert not first.text_backend_needs_preparing()  # resolved
    again = load(None, "cpu", False)                 # a later run: the export and the choice are on disk
    again.set_text_backend("auto")
    assert not again.text_backend_needs_preparing()
    again.set_text_backend("onnx-int8")
    assert not again.text_backend_needs_preparing()
