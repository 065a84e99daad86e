"""Windowing: the bounds rule against a naive loop, streaming == whole-array, padding, timestamps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songseek.engine.audio.windowing import (
    frame_windows,
    iter_windows,
    repeat_pad,
    sample_bounds,
    window_bounds,
)
from songseek.engine.errors import UsageError

EPS = 1e-7


def naive_bounds(duration: float, window: float, hop: float) -> list[list[float]]:
    """The rule written as the plainest loop."""
    if duration < window - EPS:
        return [[0.0, duration]]
    out = []
    k = 0
    while k * hop + window <= duration + EPS:
        out.append([k * hop, k * hop + window])
        k += 1
    tail = duration - k * hop  # a tail needs a tenth of a window of content
    if out[-1][1] < duration - EPS and k * hop < duration - EPS and tail + EPS >= window / 10:
        out.append([k * hop, duration])
    return out


def naive_pad(x: np.ndarray, n: int, mode: str) -> np.ndarray:
    """CLAP's ClapFeatureExtractor padding, transcribed ("repeatpad": whole repeats, then zeros)."""
    if mode == "repeat":
        return np.tile(x, n // len(x) + 1)[:n]
    if mode == "repeatpad":
        x = np.tile(x, n // len(x))
    return np.pad(x, (0, n - len(x)))


@pytest.mark.parametrize(
    ("duration", "window", "hop", "expected"),
    [
        (25.0, 10.0, 10.0, [[0, 10], [10, 20], [20, 25]]),
        (30.0, 10.0, 10.0, [[0, 10], [10, 20], [20, 30]]),
        (5.0, 10.0, 10.0, [[0, 5]]),
        (10.0, 10.0, 5.0, [[0, 10]]),
        (23.0, 10.0, 5.0, [[0, 10], [5, 15], [10, 20], [15, 23]]),
        (35.0, 10.0, 20.0, [[0, 10], [20, 30]]),  # gap after the last window: no tail to add
        (45.0, 10.0, 20.0, [[0, 10], [20, 30], [40, 45]]),
        (20.5, 10.0, 10.0, [[0, 10], [10, 20]]),  # a 0.5 s tail: under a tenth of a window, not indexed
        (21.0, 10.0, 10.0, [[0, 10], [10, 20], [20, 21]]),  # a 1 s tail is
        (0.3, 10.0, 10.0, [[0, 0.3]]),  # a track shorter than a window always has its one window
        (30.0, 10.0, 0.1, None),  # 201 full windows despite 20 / 0.1 = 199.99999999999997
    ],
)
def test_window_bounds_examples(duration, window, hop, expected):
    bounds = window_bounds(duration, window, hop)
    assert bounds.dtype == np.float64 and bounds.shape[1] == 2
    if expected is None:
        assert len(bounds) == 201 and bounds[-1, 1] == pytest.approx(30.0)
    else:
        np.testing.assert_allclose(bounds, np.array(expected, dtype=float))


@settings(max_examples=300, deadline=None)
@given(
    duration=st.floats(0.001, 500.0),
    window=st.floats(0.01, 60.0),
    hop=st.floats(0.1, 90.0),
)
def test_window_bounds_matches_naive(duration, window, hop):
    bounds = window_bounds(duration, window, hop)
    np.testing.assert_allclose(bounds, np.array(naive_bounds(duration, window, hop)), rtol=0, atol=1e-9)
    assert np.all(bounds[:, 1] <= duration + EPS)
    assert np.all(np.diff(bounds[:, 0]) > 0)
    if hop <= window:  # contiguous coverage, to the end of the track but for less than a tenth of a window
        assert bounds[-1, 1] >= duration - window / 10 - EPS
        assert np.all(bounds[1:, 0] <= bounds[:-1, 1] + EPS)


def test_window_bounds_count_when_hop_equals_window():
    rng = np.random.default_rng(0)
    for duration in rng.uniform(0.5, 500, size=200):
        full, rest = divmod(duration, 10.0)
        want = max(1, int(full) + (rest >= 1.0))  # a tail of under 1 s is not a window of its own
        assert len(window_bounds(duration, 10.0, 10.0)) == want


@pytest.mark.parametrize(("duration", "window", "hop"),
                         [(0.0, 10, 10), (-1.0, 10, 10), (float("nan"), 10, 10), (10, 0, 5), (10, 10, 0),
                          (10, -1, 5), (10, 10, float("inf"))])
def test_window_bounds_rejects_bad_arguments(duration, window, hop):
    with pytest.raises(UsageError):
        window_bounds(duration, window, hop)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 3000), window_n=st.integers(1, 400), hop_n=st.integers(1, 500),
       sample_rate=st.sampled_from([100, 8000, 44100, 48000, 192000]))
def test_sample_bounds_agree_with_seconds(n, window_n, hop_n, sample_rate):
    idx = sample_bounds(n, window_n, hop_n)
    if n == 0:
        assert idx.shape == (0, 2)
        return
    seconds = window_bounds(n / sample_rate, window_n / sample_rate, hop_n / sample_rate)
    assert idx.shape == seconds.shape
    np.testing.assert_allclose(idx / sample_rate, seconds, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["repeatpad", "repeat", "zero"])
def test_repeat_pad_matches_clap(mode):
    rng = np.random.default_rng(1)
    for m, n in [(1, 7), (3, 10), (4, 8), (6, 10), (9, 10), (10, 10), (480, 480_000)]:
        x = rng.standard_normal(m).astype(np.float32)
        got = repeat_pad(x, n, mode)
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got, naive_pad(x, n, mode).astype(np.float32))


def test_repeatpad_layout():
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(repeat_pad(x, 10), [1, 2, 3, 1, 2, 3, 1, 2, 3, 0])
    np.testing.assert_array_equal(repeat_pad(x, 10, "repeat"), [1, 2, 3, 1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(repeat_pad(np.arange(6, dtype=np.float32), 10),
                                  [0, 1, 2, 3, 4, 5, 0, 0, 0, 0])  # one whole repeat, then silence


def naive_frames(audio: np.ndarray, sr: int, window_n: int, hop_n: int, pad: str):
    bounds = naive_bounds(len(audio) / sr, window_n / sr, hop_n / sr) if len(audio) else []
    wins = []
    for start_s, end_s in bounds:
        a, b = round(start_s * sr), round(end_s * sr)
        seg = audio[a:b]
        wins.append(seg if len(seg) == window_n else naive_pad(seg, window_n, pad))
    return np.array(wins, np.float32).reshape(-1, window_n), np.array(bounds, float).reshape(-1, 2)


@pytest.mark.parametrize("pad", ["repeatpad", "repeat", "zero"])
def test_frame_windows_matches_naive(pad):
    rng = np.random.default_rng(2)
    sr = 100
    for _ in range(150):
        n = int(rng.integers(0, 3000))
        window_n, hop_n = int(rng.integers(1, 500)), int(rng.integers(1, 700))
        audio = rng.standard_normal(n).astype(np.float32)
        wins, bounds = frame_windows(audio, sr, window_n / sr, hop_n / sr, pad=pad)
        ref_wins, ref_bounds = naive_frames(audio, sr, window_n, hop_n, pad)
        assert wins.dtype == np.float32 and bounds.dtype == np.float64
        np.testing.assert_array_equal(wins, ref_wins)
        np.testing.assert_allclose(bounds, ref_bounds, atol=1e-9)


def random_blocks(audio: np.ndarray, rng: np.random.Generator):
    i = 0
    while i < len(audio):
        size = int(rng.choice([0, 1, 7, int(rng.integers(1, 900)), int(rng.integers(1, 5000))]))
        yield audio[i:i + size]
        i += size


def test_iter_windows_equals_frame_windows_for_any_block_sizes():
    rng = np.random.default_rng(3)
    sr = 100
    for _ in range(200):
        n = int(rng.integers(0, 4000))
        window_n, hop_n = int(rng.integers(1, 600)), int(rng.integers(1, 800))
        audio = rng.standard_normal(n).astype(np.float32)
        streamed = list(iter_windows(random_blocks(audio, rng), sr, window_n / sr, hop_n / sr))
        wins, bounds = frame_windows(audio, sr, window_n / sr, hop_n / sr)
        assert len(streamed) == len(wins)
        for (w, start, end), ref, (ref_start, ref_end) in zip(streamed, wins, bounds, strict=True):
            assert w.dtype == np.float32 and w.shape == (window_n,)
            np.testing.assert_array_equal(w, ref)
            assert (start, end) == (ref_start, ref_end)


def test_iter_windows_empty_stream_yields_nothing():
    assert list(iter_windows(iter([]), 48000, 10.0, 5.0)) == []
    assert list(iter_windows([np.zeros(0, np.float32)] * 3, 48000, 10.0, 5.0)) == []


def test_iter_windows_is_lazy_and_buffers_about_one_window():
    """Each window comes out as soon as its last block arrives: a one-hour stream is never held."""
    sr, window_n, hop_n, block = 1000, 10_000, 5_000, 1_234
    consumed = 0

    def blocks():
        nonlocal consumed
        for i in range(0, 3_600_000, block):  # one hour at 1 kHz
            consumed += block
            yield np.full(block, i, np.float32)

    count = 0
    for w, _start, end in iter_windows(blocks(), sr, window_n / sr, hop_n / sr):
        assert consumed - end * sr < block + 1  # no block was read beyond the one completing this window
        assert w.shape == (window_n,)
        count += 1
    assert count == len(window_bounds(consumed / sr, 10.0, 5.0))


def test_timestamps_on_impulse_markers():
    """Impulses of distinct heights at known times land at (t - start) * sr inside every window."""
    sr = 8000
    rng = np.random.default_rng(4)
    duration = 47.3
    times = np.sort(rng.uniform(0, duration, size=40))
    audio = np.zeros(int(round(duration * sr)), np.float32)
    heights = np.arange(1, len(times) + 1, dtype=np.float32) / len(times)
    audio[np.round(times * sr).astype(int)] = heights
    for window_s, hop_s in [(10.0, 10.0), (10.0, 5.0), (10.0, 3.3), (4.0, 6.0)]:
        found = 0
        for w, start, end in iter_windows(np.array_split(audio, 13), sr, window_s, hop_s, pad="zero"):
            for t, h in zip(times, heights, strict=True):
                inside = start <= round(t * sr) / sr < end
                offset = int(round(t * sr)) - int(round(start * sr))
                if inside:
                    assert w[offset] == h
                    found += 1
            assert np.count_nonzero(w) == sum(start <= round(t * sr) / sr < end for t in times)
        assert found >= len(times) if hop_s <= window_s else found > 0


def test_tail_window_is_kept_and_padded():
    sr = 1000
    audio = np.arange(1, 26_001, dtype=np.float32)  # 26 s
    wins, bounds = frame_windows(audio, sr, 10.0, 10.0)
    np.testing.assert_allclose(bounds, [[0, 10], [10, 20], [20, 26]])
    tail = wins[-1]
    np.testing.assert_array_equal(tail[:6000], audio[20_000:])  # real content first
    np.testing.assert_array_equal(tail[6000:], 0)  # 6 s of content fits once in 10 s: rest is silence
    wins, _ = frame_windows(audio[:25_000], sr, 10.0, 10.0)  # a 5 s tail fits exactly twice
    np.testing.assert_array_equal(wins[-1], np.tile(audio[20_000:25_000], 2))
    short, b = frame_windows(audio[:3000], sr, 10.0, 10.0)  # 3 s track: three repeats, then 1 s silence
    np.testing.assert_allclose(b, [[0, 3]])
    np.testing.assert_array_equal(short[0][:9000], np.tile(audio[:3000], 3))
    np.testing.assert_array_equal(short[0][9000:], 0)


def test_window_arguments_validated():
    with pytest.raises(UsageError):
        list(iter_windows([np.zeros(10, np.float32)], 48000, 1e-7, 1.0))  # window shorter than a sample
    with pytest.raises(UsageError):
        frame_windows(np.zeros((2, 10), np.float32), 48000, 1.0, 1.0)
    with pytest.raises(UsageError):
        frame_windows(np.zeros(10, np.float32), 48000, 1.0, 1.0, pad="mirror")


@pytest.mark.parametrize(("n", "window_n", "hop_n"),
                         [(21, 10, 10), (2100, 1000, 1000), (1100, 1000, 1000), (40, 20, 19), (81, 10, 40)])
def test_tail_of_exactly_a_tenth_of_a_window_is_kept(n, window_n, hop_n):
    """The boundary of the tail rule: content of exactly window / 10 is indexed, one sample less is not."""
    def naive(n_samples: int) -> list[list[int]]:
        out, k = [], 0
        while k * hop_n + window_n <= n_samples:
            out.append([k * hop_n, k * hop_n + window_n])
            k += 1
        if out[-1][1] < n_samples and k * hop_n < n_samples and 10 * (n_samples - k * hop_n) >= window_n:
            out.append([k * hop_n, n_samples])
        return out

    exact, short = naive(n), naive(n - 1)
    assert len(exact) == len(short) + 1 and exact[-1][1] - exact[-1][0] == window_n // 10  # the case tested
    assert sample_bounds(n, window_n, hop_n).tolist() == exact
    assert sample_bounds(n - 1, window_n, hop_n).tolist() == short
    sr = 1000
    _, bounds = frame_windows(np.ones(n, np.float32), sr, window_n / sr, hop_n / sr)
    np.testing.assert_allclose(bounds * sr, exact, atol=1e-6)
    streamed = list(iter_windows([np.ones(n, np.float32)], sr, window_n / sr, hop_n / sr))
    np.testing.assert_allclose([[s * sr, e * sr] for _, s, e in streamed], exact, atol=1e-6)


@pytest.mark.parametrize(("window_n", "hop_n"), [(10, 0), (0, 10), (10, -3), (-1, 5)])
def test_sample_bounds_rejects_non_positive_window_or_hop(window_n, hop_n):
    with pytest.raises(UsageError):
        sample_bounds(100, window_n, hop_n)


@pytest.mark.parametrize("pad", ["repeatpad", "repeat", "zero"])
def test_iter_windows_honours_pad_mode(pad):
    """Streaming pads short tracks and tails by the same mode as the naive CLAP padding."""
    rng = np.random.default_rng(5)
    sr = 100
    for n in (3, 37, 99, 263, 1234):  # shorter than a window, then with tails of various lengths
        audio = rng.standard_normal(n).astype(np.float32)
        streamed = list(iter_windows(np.array_split(audio, 3), sr, 1.0, 1.0, pad=pad))
        ref_wins, ref_bounds = naive_frames(audio, sr, 100, 100, pad)
        assert len(streamed) == len(ref_wins)
        for (w, start, end), ref, (ref_start, ref_end) in zip(streamed, ref_wins, ref_bounds, strict=True):
            np.testing.assert_array_equal(w, ref)
            assert (start, end) == pytest.approx((ref_start, ref_end), abs=1e-9)
