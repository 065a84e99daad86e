"""Waveform peaks against a naive reference: the whole signal in memory, min/max of each bin's samples.

The streamed computation must give exactly those numbers for any block sizes and any guess of the length
(a good one, one 100x too small, one 10x too large), hold at most MAX_SUB_PER_BIN * n sub-bins, cut
contiguous bins that cover every sample and differ in width by at most one sub-bin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.audio import decode
from songseek.engine.audio.peaks import MAX_SUB_PER_BIN, Peaks, file_peaks, stream_peaks
from songseek.engine.errors import UsageError
from tests.audio_helpers import write_wav


def naive(x: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([x[a:b].min() for a, b in zip(edges[:-1], edges[1:])]),
            np.array([x[a:b].max() for a, b in zip(edges[:-1], edges[1:])]))


def blocks_of(x: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=min(len(x) - 1, 40), replace=False))
    return np.split(x, cuts)


def check(p: Peaks, x: np.ndarray, n: int) -> None:
    assert p.samples == len(x) and p.edges[0] == 0 and p.edges[-1] == len(x)
    widths = np.diff(p.edges)
    assert (widths > 0).all() and p.bins == len(widths) <= n
    inner = widths[:-1]  # the last bin may end in a short sub-bin
    if len(inner):
        assert inner.max() - inner.min() <= p.sub_samples and (inner % p.sub_samples == 0).all()
    assert len(x) / p.sub_samples <= MAX_SUB_PER_BIN * n + 1  # what was held is bounded by the cap
    lo, hi = naive(x, p.edges)
    np.testing.assert_array_equal(p.mins, lo)
    np.testing.assert_array_equal(p.maxs, hi)


@pytest.mark.parametrize("length", [1, 7, 1000, 100_003])
@pytest.mark.parametrize("n", [1, 3, 997])
@pytest.mark.parametrize("guess", [1.0, 0.01, 10.0, 0.0])
def test_stream_peaks_equal_the_naive_bins(length: int, n: int, guess: float) -> None:
    rng = np.random.default_rng(length * 31 + n)
    x = (rng.standard_normal(length) * rng.uniform(0.1, 1.0, length)).astype(np.float32)
    p = stream_peaks(blocks_of(x, rng) if length > 1 else [x], n, int(length * guess), 48_000)
    check(p, x, n)
    assert p.bins == min(n, length)


def test_a_low_guess_never_holds_more_than_the_cap() -> None:
    """A header that says 0 samples: sub-bins start one sample wide and merge as they come."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(300_000).astype(np.float32)
    p = stream_peaks(np.split(x, 30), 50, 0, 48_000)
    check(p, x, 50)
    assert p.bins == 50 and p.sub_samples > 1  # they did merge


def test_bounds() -> None:
    x = np.zeros(1000, np.float32)
    with pytest.raises(UsageError, match="n must be a positive"):
        stream_peaks([x], 0, 1000, 100)
    with pytest.raises(UsageError, match="max_samples"):
        stream_peaks([x, x], 10, 1000, 100, max_samples=1500)


def test_file_peaks_of_a_synthesised_file(tmp_path: Path) -> None:
    sr = 22_050
    t = np.arange(int(7.3 * sr)) / sr
    audio = (0.6 * np.sin(2 * np.pi * 220 * t) * np.linspace(0.05, 1.0, len(t))).astype(np.float32)
    audio[int(3 * sr)] = 0.95  # a click in the middle of bin 3 * n / 7.3
    path = tmp_path / "tone.wav"
    write_wav(path, audio, sr)
    p = file_peaks(path, 64, max_s=60)
    assert p.sample_rate == sr
    x = decode(path, sr)  # the naive reference: the whole file decoded at its own rate
    check(p, x, 64)
    assert p.bins == 64 and abs(p.maxs.max() - 0.95) < 1e-6
    assert p.maxs[0] < 0.1 < p.maxs[-1]  # the fade-in is visible
    with pytest.raises(UsageError, match="max_samples"):
        file_peaks(path, 64, max_s=2)


@pytest.mark.parametrize("seed", range(6))
def test_blocks_that_end_on_sub_bin_boundaries_equal_the_naive_bins(seed: int) -> None:
    """Blocks whose lengths are multiples of the sub-bin width leave no open sub-bin when sub-bins merge, so
    an odd last sub-bin goes back into an empty accumulator (or joins one already open: mixed lengths)."""
    rng = np.random.default_rng(100 + seed)
    unit = [1, 2, 4, 8, 16, 64][seed]
    sizes = [int(rng.integers(1, 40)) * unit + (int(rng.integers(0, 3)) if seed % 2 else 0) for _ in range(300)]
    x = rng.standard_normal(sum(sizes)).astype(np.float32)
    blocks = np.split(x, np.cumsum(sizes)[:-1])
    for n, guess in ((1, 0), (3, 0), (7, len(x) // 50), (2, 40 * 32 * 2)):
        p = stream_peaks(blocks, n, guess, 48_000)
        check(p, x, n)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("spike", [-5.0, 5.0])
def test_an_odd_sub_bin_merged_into_the_open_one_keeps_the_open_ones_extremes(n: int, spike: float) -> None:
    """Sub-bins of 2 samples (guess 64 n), one block of 64 n + 1 whole sub-bins and one sample more: the cap
    is passed with an odd count and a sub-bin open, so the last whole one joins the open one; the open
    one's lone sample is the loudest of the track and must be in the last bin."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(2 * (MAX_SUB_PER_BIN * n + 1) + 1) * 0.1).astype(np.float32)
    x[-1] = spike
    p = stream_peaks([x], n, 64 * n, 48_000)
    check(p, x, n)
    assert (p.mins[-1] if spike < 0 else p.maxs[-1]) == spike


def test_empty_blocks_in_the_stream_are_skipped() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5000).astype(np.float32)
    parts = np.split(x, [7, 1000, 1003, 4000])
    empty = np.zeros(0, np.float32)
    blocks = [empty, parts[0], empty, parts[1], empty, empty, parts[2], parts[3], empty, parts[4], empty]
    p = stream_peaks(blocks, 9, 5000, 48_000)
    check(p, x, 9)
    assert p.bins == 9


def test_no_samples_is_a_decode_error() -> None:
    from songseek.engine.errors import DecodeError

    for blocks in ([], [np.zeros(0, np.float32)], [np.zeros(0, np.float32)] * 3):
        with pytest.raises(DecodeError, match="no samples"):
            stream_peaks(blocks, 10, 1000, 100)


def test_exactly_max_samples_is_within_the_bound() -> None:
    x = np.arange(1500, dtype=np.float32)
    p = stream_peaks([x[:700], x[700:]], 10, 1500, 100, max_samples=1500)
    check(p, x, 10)
    with pytest.raises(UsageError, match="max_samples"):
        stream_peaks([x[:700], x[700:], x[:1]], 10, 1500, 100, max_samples=1500)


def test_file_peaks_allow_a_second_past_max_s(tmp_path: Path) -> None:
    """The server checks the declared length against its limit; the decode may run a little longer than a
    header says (an estimate from the bit rate), so file_peaks gives a second of slack past ``max_s``."""
    sr = 8_000
    audio = np.sin(np.arange(int(3.5 * sr)) / 7.0).astype(np.float32) * 0.5
    path = tmp_path / "short.wav"
    write_wav(path, audio, sr)
    p = file_peaks(path, 16, max_s=2.6)  # 3.5 s decoded: within max_s + 1 s
    check(p, decode(path, sr), 16)
    with pytest.raises(UsageError, match="max_samples"):
        file_peaks(path, 16, max_s=2.4)
