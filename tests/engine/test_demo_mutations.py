"""demo / demo_net details the other tests left open (found by a mutation sweep): the tokenizer's ids and
n-grams, the mel filters and log-mel front end, the audio tower's standardisation and pooling, short and
many windows, an empty text alone, checkpoint aliases, strict weights and the vocabulary check. Each
against a plain-loop reference; the bundled model is small (loads in well under a second)."""

from __future__ import annotations

import cmath
import json
import math
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from songseek.engine.encoders import demo, demo_net
from songseek.engine.encoders.demo_config import DemoConfig
from songseek.engine.errors import WeightsNotFoundError


@pytest.fixture(scope="module")
def enc() -> demo.DemoEncoder:
    return demo.load(None, "cpu", False)


def naive_grams(word: str, lo: int, hi: int, buckets: int) -> list[int]:
    w = "<" + word + ">"
    out = []
    for n in range(lo, hi + 1):
        for i in range(0, len(w) - n + 1):
            out.append(zlib.crc32(w[i:i + n].encode("utf-8")) % buckets)
    return out


def test_tokenizer_encode_matches_a_plain_loop() -> None:
    cfg = DemoConfig(max_tokens=4, ngram_min=2, ngram_max=3, n_buckets=97)
    words = [demo.PAD, demo.UNK, "soft", "piano", "lo-fi"]
    tok = demo.Tokenizer(words, cfg)
    texts = ["Soft PIANO, zzq lo-fi!", "", "piano piano piano piano piano"]
    got = tok.encode(texts, length=5)
    want_ids = [[2, 3, 1, 4, 0], [1, 0, 0, 0, 0], [3, 3, 3, 3, 0]]  # unknown word -> 1, empty text -> <unk>
    assert got.word_ids.dtype == np.int64 and got.word_ids.tolist() == want_ids
    assert got.mask.tolist() == [[i != 0 for i in row] for row in want_ids]
    real = [["soft", "piano", "zzq", "lo-fi"], ["<unk>"], ["piano"] * 4]
    grams: list[int] = []
    offsets: list[int] = []
    for row in real:
        for word in row:
            offsets.append(len(grams))
            grams.extend(naive_grams(word, 2, 3, 97))
    assert got.ngram_ids.tolist() == grams and got.ngram_offsets.tolist() == offsets
    short = tok.encode(["soft piano lo-fi"], length=2)  # shorter than max_tokens: cut to the length asked
    assert short.word_ids.tolist() == [[2, 3]] and len(short.ngram_offsets) == 2
    assert tok.encode(["soft"]).word_ids.shape == (1, 4)  # default length: max_tokens
    with pytest.raises(ValueError):
        demo.Tokenizer(["soft", demo.PAD, demo.UNK], cfg)


def naive_htk(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    mel = [2595.0 * math.log10(1.0 + f / 700.0) for f in (fmin, fmax)]
    edges = [700.0 * (10.0 ** ((mel[0] + (mel[1] - mel[0]) * k / (n_mels + 1)) / 2595.0) - 1.0)
             for k in range(n_mels + 2)]
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for b in range(n_fft // 2 + 1):
        f = b * sr / n_fft
        for m in range(n_mels):
            lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
            if lo < f <= mid:
                out[b, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                out[b, m] = (hi - f) / (hi - mid)
    return out


def test_mel_filterbank_is_htk_triangles_with_peak_one() -> None:
    got = demo_net.mel_filterbank(16000, 64, 6, 100.0, 7000.0)
    assert got.shape == (33, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, naive_htk(16000, 64, 6, 100.0, 7000.0), atol=1e-5)


def test_log_mel_matches_a_direct_dft() -> None:
    cfg = DemoConfig(sample_rate=8000, n_fft=32, hop=8, n_mels=5, fmin=50.0, fmax=3500.0)
    front = demo_net.LogMel(cfg)
    wave = np.random.default_rng(3).standard_normal((2, 50)).astype(np.float32)
    wave[1, 20:] = 0.0
    with torch.no_grad():
        got = front(torch.from_numpy(wave)).numpy()
    n_fft, hop = 32, 8
    hann = [0.5 - 0.5 * math.cos(2 * math.pi * i / n_fft) for i in range(n_fft)]  # periodic
    filters = naive_htk(8000, 32, 5, 50.0, 3500.0)
    frames = 1 + 50 // hop
    assert got.shape == (2, 5, frames)
    for r in range(2):
        padded = [0.0] * (n_fft // 2) + wave[r].tolist() + [0.0] * (n_fft // 2)  # centred, zero padding
        for t in range(frames):
            seg = padded[t * hop:t * hop + n_fft]
            power = [abs(sum(seg[i] * hann[i] * cmath.exp(-2j * math.pi * k * i / n_fft) for i in range(n_fft))) ** 2
                     for k in range(n_fft // 2 + 1)]
            for m in range(5):
                mel = sum(power[k] * filters[k, m] for k in range(n_fft // 2 + 1))
                want = 10.0 * math.log10(max(mel, 1e-10))
                assert abs(got[r, m, t] - want) < 1e-3 * max(1.0, abs(want)), (r, m, t)


def test_audio_tower_standardises_bands_then_pools_mean_and_max() -> None:
    cfg = DemoConfig(n_mels=4, audio_width=8, dim=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = demo_net.AudioTower(cfg).eval()
        x = torch.randn(2, 4, 40)
    mean, std = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([2.0, 0.5, 1.0, 4.0])
    tower.mel_mean.copy_(mean)
    tower.mel_std.copy_(std)
    with torch.no_grad():
        got = tower(x)
        standard = torch.empty_like(x)
        for b in range(4):
            standard[:, b] = (x[:, b] - mean[b]) / std[b]
        h = tower.convs(standard)
        pooled = torch.tensor([[float(h[n, c].mean()) for c in range(h.shape[1])] +
                               [float(h[n, c].max()) for c in range(h.shape[1])] for n in range(2)])
        want = tower.head(pooled)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_short_windows_are_repeat_padded_to_one_second(enc: demo.DemoEncoder) -> None:
    short = np.random.default_rng(1).standard_normal((2, 3000)).astype(np.float32) * 0.1
    padded = np.zeros((2, 16000), np.float32)
    for r in range(2):
        for k in range(16000 // 3000):  # whole repeats, then zeros (repeatpad)
            padded[r, k * 3000:(k + 1) * 3000] = short[r]
    np.testing.assert_allclose(enc.embed_audio(short), enc.embed_audio(padded), atol=1e-6)
    assert not np.allclose(enc.embed_audio(short), enc.embed_audio(np.pad(short, ((0, 0), (0, 5000)))), atol=1e-3)


def test_more_windows_than_one_batch_each_get_their_own_vector(enc: demo.DemoEncoder) -> None:
    waves = np.random.default_rng(2).standard_normal((demo._AUDIO_BATCH * 2 + 3, 16000)).astype(np.float32) * 0.1
    got = enc.embed_audio(waves)
    assert got.shape == (len(waves), 128)
    for i in (0, demo._AUDIO_BATCH - 1, demo._AUDIO_BATCH, len(waves) - 1):
        np.testing.assert_allclose(got[i], enc.embed_audio(waves[i:i + 1])[0], atol=1e-5)


def test_an_empty_text_alone_is_the_unknown_word(enc: demo.DemoEncoder) -> None:
    got = enc.embed_text(["", "!!"])
    assert got.shape == (2, 128) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got[0], got[1], atol=1e-6)
    np.testing.assert_allclose(enc.embed_text([""])[0], got[0], atol=1e-5)


def test_bundled_aliases_and_the_callers_rng(enc: demo.DemoEncoder) -> None:
    with torch.random.fork_rng(devices=[]):  # this test's seeding stays here
        torch.manual_seed(99)
        want = torch.rand(4)
        torch.manual_seed(99)
        for alias in ("", "bundled", "demo", demo.BUNDLED):
            assert demo.load(alias, "cpu", True).info.checkpoint == demo.BUNDLED
        assert torch.equal(torch.rand(4), want)  # building the model leaves the global RNG where it was


def test_weights_missing_a_tensor_are_refused_and_vocabulary_is_checked(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    root = tmp_path / "ckpt"
    shutil.copytree(demo.bundled_dir(), root)
    state = load_file(str(root / demo.WEIGHTS_FILE))
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(root / demo.WEIGHTS_FILE))
    with pytest.raises(WeightsNotFoundError, match="missing or corrupt demo weights"):
        demo.load(str(root), "cpu", False)
    for vocab in (["piano", "drums"], {"<pad>": 0}, [demo.UNK, demo.PAD, "x"]):
        (root / demo.VOCAB_FILE).write_text(json.dumps(vocab), encoding="utf-8")
        with pytest.raises(WeightsNotFoundError, match="is not a demo vocabulary"):
            demo.load(str(root), "cpu", True)


def test_a_word_shorter_than_every_ngram_is_its_own_gram() -> None:
    """With n-grams from 4 characters, '<a>' has none: the whole bracketed word stands in (never an empty bag)."""
    cfg = DemoConfig(ngram_min=4, ngram_max=5, n_buckets=101)
    got = demo.Tokenizer([demo.PAD, demo.UNK], cfg).encode(["a bc"], length=2)
    want = [zlib.crc32(b"<a>") % 101] + naive_grams("bc", 4, 5, 101)
    assert got.ngram_ids.tolist() == want and got.ngram_offsets.tolist() == [0, 1]


def test_padding_is_masked_out_of_attention_and_of_the_mean(enc: demo.DemoEncoder) -> None:
    """A short text next to a long one (so padded) gets the vector it gets alone, unpadded."""
    short, long = "soft piano", "loud busy drums with a saw lead over a slow pad and warm bass"
    alone = enc.embed_text([short])[0]
    np.testing.assert_allclose(enc.embed_text([short, long])[0], alone, atol=1e-5)
    np.testing.assert_allclose(enc.embed_text([long, short])[1], alone, atol=1e-5)


def test_word_order_matters(enc: demo.DemoEncoder) -> None:
    """Learned positions: the same words in another order are another text (without them the masked mean of
    a transformer is order-blind)."""
    a, b = enc.embed_text(["soft piano loud drums", "loud drums soft piano"])
    assert float(np.abs(a - b).max()) > 1e-3
