"""engine/query/fusion.py against a naive loop reference written straight from docs/fusion.md (CoLLAP Eqs. 1-7)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from songseek.engine.errors import UsageError
from songseek.engine.query import fusion
from songseek.engine.query.fusion import (
    FusionParams,
    argmax_frame,
    fuse,
    kernel_geometry,
    pool_max,
    pool_mean,
    rerank_scores,
)
from tests.rerank_reference import naive_fuse, naive_geometry, naive_scores, naive_standardize, softmax_weighted

# ---------------------------------------------------------------------------------------------------------
# Naive reference: plain Python loops over tracks, kernels and offsets, one softmax at a time.


def P(**kw: Any) -> FusionParams:
    """FusionParams whose segment is the best p_v of the scoring kernel (the defaults use another rule)."""
    return FusionParams(**{"segment": "kernel", "segment_kernel": 0.0, **kw})


def random_batch(rng: np.random.Generator, b: int, tmax: int, tmin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cosine-like similarities with structure (a random walk) and garbage padding."""
    lengths = rng.integers(tmin, tmax + 1, size=b)
    lengths[0] = tmax
    walk = np.cumsum(rng.normal(0, 0.08, size=(b, tmax)), axis=1) + rng.normal(0.2, 0.1, size=(b, 1))
    sims = np.clip(walk, -1, 1).astype(np.float32)
    pad = np.arange(tmax)[None, :] >= lengths[:, None]
    garbage = rng.choice(np.array([np.nan, np.inf, -np.inf, 1e30, 5.0], np.float32), size=sims.shape)
    sims[pad] = garbage[pad]
    return sims, lengths


def assert_matches_naive(res: fusion.FusionResult, ref: list[dict], atol: float = 2e-5) -> None:
    for name in ("score", "r_k", "r_t", "best_window"):
        got = getattr(res, name)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, [r[name] for r in ref], atol=atol, rtol=0, err_msg=name)
    assert res.seg_first.dtype == np.int64 and res.seg_last.dtype == np.int64
    for b, r in enumerate(ref):
        if isinstance(r["key"], dict):  # the span rule: (start, length) -> score
            got = (int(res.seg_first[b]), int(res.seg_last[b] - res.seg_first[b]) + 1)
            if got != (r["first"], r["h"]):  # only a near-tie may resolve differently
                assert r["key"][got] >= max(r["key"].values()) - 1e-5, (b, got, r["first"], r["h"])
            continue
        if res.seg_first[b] != r["first"]:
            # Only a near-tie may resolve differently: the chosen kernel must be (almost) as good.
            v = int(res.seg_first[b]) // r["s"]
            assert r["key"][v] >= max(r["key"]) - 1e-5, (b, res.seg_first[b], r["first"])
        assert res.seg_last[b] - res.seg_first[b] == r["h"] - 1


# ---------------------------------------------------------------------------------------------------------
# Against the naive reference

PARAM_GRID = [
    FusionParams(),  # the defaults: H = 1, segment: the best run of 1-3 frames by sum / length^0.7
    FusionParams(segment="attention"),  # the session-5 segment: attention mass over 3-frame kernels
    FusionParams(span_exponent=0.5, segment_kernel=5.0),
    P(kernel=3, stride=1, temperature=0.05),
    P(kernel=1, stride=1, temperature=0.1),
    P(kernel=4, stride=2, temperature=0.02, gamma_k=0.8, gamma_t=0.2),
    P(kernel=3, stride=1, temperature=0.05, segment="attention"),
    P(kernel=5, stride=2, temperature=2e-3, segment="attention"),
    P(kernel=1, stride=1, temperature=0.05, gamma_k=0.25, gamma_t=0.75, segment="attention", segment_kernel=3),
    P(kernel=4, stride=1, temperature=0.1, segment_kernel=2),
    P(kernel=6, stride=3, temperature=1.0),
    P(kernel=2.6, stride=1.4, temperature=math.inf),  # rounds to H=3, S=1
    P(kernel=5, stride=1, temperature=1e-3),
    P(mode="proportional", kernel=3, stride=1, temperature=0.05),
    P(mode="proportional", kernel=6, stride=2, temperature=0.02, segment="attention"),
    P(mode="proportional", kernel=1, stride=0.5, temperature=1e-3, gamma_k=1.0, gamma_t=0.0),
    P(mode="proportional", kernel=10, stride=3, temperature=0.3, segment_kernel=4),
]


@pytest.mark.parametrize("params", PARAM_GRID, ids=lambda p: f"{p.mode}-H{p.kernel}-S{p.stride}-tau{p.temperature}")
@pytest.mark.parametrize("seed", [0, 1])
def test_fuse_matches_naive_reference(params: FusionParams, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tmax = 130 if params.mode == "proportional" else 60  # proportional: strides 1..4 in one batch
    sims, lengths = random_batch(rng, 23, tmax)
    res = fuse(sims, lengths, params)
    assert_matches_naive(res, naive_fuse(sims, lengths, params))


def test_the_three_exp_paths_are_all_exercised_and_exact() -> None:
    """tau picks one of three softmax paths (float32 exp, float64 exp, per-kernel shift); each matches."""
    rng = np.random.default_rng(5)
    sims, lengths = random_batch(rng, 9, 40)
    spread = max(float(np.ptp(sims[b, : lengths[b]])) for b in range(9))
    taus = [spread / 30, spread / 200, spread / 2000]  # below, between and above the two limits
    assert spread / taus[0] <= fusion._F32_EXP_LIMIT
    assert fusion._F32_EXP_LIMIT < spread / taus[1] <= fusion._SHARED_SHIFT_LIMIT
    assert spread / taus[2] > fusion._SHARED_SHIFT_LIMIT
    for tau in taus:
        for segment in ("kernel", "attention"):
            p = P(kernel=4, stride=1, temperature=tau, segment=segment)
            assert_matches_naive(fuse(sims, lengths, p), naive_fuse(sims, lengths, p))


def test_blocking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    sims, lengths = random_batch(rng, 57, 150)
    for params in (FusionParams(), P(mode="proportional", kernel=4, stride=1)):
        whole = fuse(sims, lengths, params)
        monkeypatch.setattr(fusion, "_BLOCK_ELEMS", 200)  # many small blocks
        assert len(fusion._row_blocks(lengths, params)) > 20
        small = fuse(sims, lengths, params)
        monkeypatch.setattr(fusion, "_BLOCK_ELEMS", 10**9)  # one block per stride
        big = fuse(sims, lengths, params)
        monkeypatch.undo()
        for name in ("score", "r_k", "r_t", "best_window", "seg_first", "seg_last"):
            np.testing.assert_array_equal(getattr(whole, name), getattr(small, name), err_msg=name)
            np.testing.assert_array_equal(getattr(whole, name), getattr(big, name), err_msg=name)


def test_kernel_geometry_matches_naive() -> None:
    lengths = np.arange(1, 400)
    for p in PARAM_GRID:
        h, s, w = kernel_geometry(lengths, p)
        expected = np.array([naive_geometry(int(t), p) for t in lengths])
        np.testing.assert_array_equal(np.stack([h, s, w], axis=1), expected)


# ---------------------------------------------------------------------------------------------------------
# Properties


def music_like(rng: np.random.Generator, t: int) -> np.ndarray:
    """Sections of 1-6 frames at one similarity level plus frame noise, like a track against a text."""
    levels: list[float] = []
    while len(levels) < t:
        levels += [rng.normal(0.15, 0.1)] * int(rng.integers(1, 7))
    return (np.array(levels[:t]) + rng.normal(0, 0.03, size=t)).astype(np.float32)


@pytest.mark.parametrize("kernel,tau", [(1, 0.02), (3, 0.02), (3, 0.05), (3, 0.1), (6, 0.05), (3, 1.0)])
def test_repeated_track_scores_the_same_in_frames_mode(kernel: int, tau: float) -> None:
    """A track played twice end to end is the same music: in frames mode (S = 1, H <= 3) r_K moves by
    < 0.02 on every track (H = 6: < 0.03, H - 1 kernels straddle the seam) and the score by < 0.005 on a
    typical one. The temporal part's edge effect (offset h never sees the first h and last H-1-h frames,
    so at small tau a best frame at an edge counts for fewer offsets until the repeat exposes it) moves
    the score of a few tracks by more: < 0.02 only from tau >= 0.1 at H = 3 (docs/fusion.md has the
    measured numbers). H = 1 is exactly invariant."""
    rng = np.random.default_rng(11)
    params = P(kernel=kernel, stride=1, temperature=tau)
    d_score, d_k = [], []
    for _ in range(40):
        t = int(rng.integers(20, 61))
        s = music_like(rng, t)
        once = fuse(s[None, :], np.array([t]), params)
        twice = fuse(np.concatenate([s, s])[None, :], np.array([2 * t]), params)
        d_score.append(abs(float(once.score[0]) - float(twice.score[0])))
        d_k.append(abs(float(once.r_k[0]) - float(twice.r_k[0])))
    assert max(d_k) < (0.02 if kernel <= 3 else 0.03)  # H - 1 kernels straddle the seam
    assert np.median(d_score) < 0.005
    if kernel == 1:
        assert max(d_score) < 1e-6
    if kernel <= 3 and tau >= 0.1:
        assert max(d_score) < 0.02


def test_repeated_track_in_proportional_mode_doubles_the_kernels() -> None:
    """Proportional mode is not repeat-invariant: the doubled track's kernels are twice as long, so every
    kernel is more max-like and r_K rises (docs/fusion.md)."""
    rng = np.random.default_rng(12)
    params = P(mode="proportional", kernel=3, stride=1, temperature=0.05)
    rises = []
    for _ in range(40):
        t = int(rng.integers(30, 61))
        s = music_like(rng, t)
        h1, _, _ = kernel_geometry(np.array([t]), params)
        h2, _, _ = kernel_geometry(np.array([2 * t]), params)
        assert h2[0] in (2 * h1[0], 2 * h1[0] + 1)
        once = fuse(s[None, :], np.array([t]), params)
        twice = fuse(np.concatenate([s, s])[None, :], np.array([2 * t]), params)
        rises.append(float(twice.r_k[0]) - float(once.r_k[0]))
    assert np.mean(rises) > 0  # longer kernels attend harder to their best frame


def coverage_weighted_mean(s: np.ndarray, h: int, st: int) -> tuple[float, float]:
    """sum_t c_t s_t / (W H) with c_t = number of kernels holding frame t, and the total variation
    distance between those weights and uniform 1/T."""
    t = len(s)
    w = (t - h) // st + 1
    c = np.zeros(t)
    for v in range(w):
        c[v * st : v * st + h] += 1
    weights = c / (w * h)
    return float(weights @ s), 0.5 * float(np.abs(weights - 1 / t).sum())


def test_large_tau_gives_the_mean_up_to_the_edge_frames() -> None:
    """tau -> inf: uniform attention, r_K = r_T = the coverage-weighted mean of s_t (edge frames sit in
    fewer kernels), within TV(weights, uniform) * (max - min) of the plain mean."""
    rng = np.random.default_rng(3)
    for h, st in ((3, 1), (6, 2), (1, 1)):
        params = P(kernel=h, stride=st, temperature=1e6)
        for _ in range(20):
            t = int(rng.integers(h, 61))
            s = music_like(rng, t)
            res = fuse(s[None, :], np.array([t]), params)
            weighted, tv = coverage_weighted_mean(s.astype(np.float64), h, st)
            assert abs(res.r_k[0] - weighted) < 1e-5 and abs(res.r_t[0] - weighted) < 1e-5
            assert abs(res.r_k[0] - s.mean()) <= 2 * tv * (s.max() - s.min()) / 2 + 1e-5
            if h == 1:  # every frame in exactly one kernel: the plain mean
                assert abs(res.score[0] - s.mean()) < 1e-5


def separated(rng: np.random.Generator, t: int) -> np.ndarray:
    """Distinct values at least 0.01 apart, so that a softmax at tau = 1e-5 is exactly a max."""
    return (rng.permutation(t) * 0.01 - 0.2).astype(np.float32)


def test_small_tau_turns_attention_into_max() -> None:
    """tau -> 0: p_v -> max within kernel v, o_h -> max over kernels; with H = 1, r_T -> max_t s_t."""
    rng = np.random.default_rng(4)
    for _ in range(10):
        t = int(rng.integers(8, 61))
        s = separated(rng, t)
        one = fuse(s[None, :], np.array([t]), P(kernel=1, stride=1, temperature=1e-5))
        assert abs(one.r_t[0] - s.max()) < 1e-6
        assert abs(one.r_k[0] - s.mean()) < 1e-6  # one-frame kernels: p_v = s_v
        for h, st in ((3, 1), (5, 2)):
            res = fuse(s[None, :], np.array([t]), P(kernel=h, stride=st, temperature=1e-5))
            w = (t - h) // st + 1
            kernel_max = [s[v * st : v * st + h].max() for v in range(w)]
            offset_max = [max(s[v * st + k] for v in range(w)) for k in range(h)]
            assert abs(res.r_k[0] - np.mean(kernel_max)) < 1e-6
            assert abs(res.r_t[0] - np.mean(offset_max)) < 1e-6
            # p_v ties at the best frame's value: the earliest kernel holding a best-of-all-kernels frame
            best_v = int(np.argmax(kernel_max))
            assert res.seg_first[0] == best_v * st


def test_padding_width_and_garbage_do_not_change_results() -> None:
    rng = np.random.default_rng(6)
    sims, lengths = random_batch(rng, 31, 45)
    for params in (FusionParams(), P(mode="proportional", kernel=6, stride=1, temperature=0.2)):
        base = fuse(sims, lengths, params)
        for extra in (1, 17, 300):
            wide = np.concatenate(
                [sims, rng.choice(np.array([np.nan, np.inf, 9.0], np.float32), size=(31, extra))], axis=1
            )
            res = fuse(wide, lengths, params)
            for name in ("score", "r_k", "r_t", "best_window", "seg_first", "seg_last"):
                np.testing.assert_array_equal(getattr(base, name), getattr(res, name), err_msg=name)
        # Each track alone (B = 1, no padding) scores exactly as inside the batch.
        for b in (0, 5, 30):
            alone = fuse(sims[b : b + 1, : lengths[b]], lengths[b : b + 1], params)
            assert alone.score[0] == base.score[b] and alone.seg_first[0] == base.seg_first[b]


def test_short_tracks_shrink_the_kernel_to_the_track() -> None:
    rng = np.random.default_rng(7)
    params = P(kernel=6, stride=2, temperature=0.05, gamma_k=0.3, gamma_t=0.7)
    lengths = np.array([1, 2, 5, 6, 9])
    sims = rng.uniform(-0.2, 0.6, size=(5, 9)).astype(np.float32)
    res = fuse(sims, lengths, params)
    for b in range(3):  # T < H: one kernel, the whole track
        s = sims[b, : lengths[b]].astype(np.float64)
        assert res.seg_first[b] == 0 and res.seg_last[b] == lengths[b] - 1
        assert abs(res.r_k[b] - softmax_weighted(list(s), 0.05)) < 1e-6  # p_0 over all frames
        assert abs(res.r_t[b] - s.mean()) < 1e-6  # one kernel: o_h = s_h
    assert res.seg_first[3] == 0 and res.seg_last[3] == 5  # T == H: one kernel as well
    # T == 1: every part is the one similarity.
    assert res.r_k[0] == res.r_t[0] == sims[0, 0]
    assert abs(res.score[0] - sims[0, 0]) < 1e-6
    assert_matches_naive(res, naive_fuse(sims, lengths, params))


def test_single_and_empty_batches() -> None:
    one = fuse(np.array([[0.3, 0.1, 0.5, 0.2]], np.float32), np.array([4]))
    assert one.score.shape == (1,) and one.best_window[0] == np.float32(0.5)
    for mode in ("fusion", "mean", "max"):
        res = rerank_scores(mode, np.zeros((0, 7), np.float32), np.zeros(0, np.int64), FusionParams())
        for name in ("score", "r_k", "r_t", "best_window"):
            assert getattr(res, name).shape == (0,) and getattr(res, name).dtype == np.float32
        assert res.seg_first.shape == (0,) and res.seg_first.dtype == np.int64
        assert res.seg_last.shape == (0,) and res.seg_last.dtype == np.int64
    assert fuse(np.zeros((0, 0), np.float32), np.zeros(0, np.int64)).score.shape == (0,)
    assert pool_mean(np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0,)
    assert pool_max(np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0,)
    assert argmax_frame(np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0,)


# ---------------------------------------------------------------------------------------------------------
# Pooling and the other rerank modes


def test_pooling_matches_numpy_per_row() -> None:
    rng = np.random.default_rng(8)
    sims, lengths = random_batch(rng, 40, 33)
    mean, best, at = pool_mean(sims, lengths), pool_max(sims, lengths), argmax_frame(sims, lengths)
    assert mean.dtype == best.dtype == np.float32 and at.dtype == np.int64
    for b in range(40):
        row = sims[b, : lengths[b]]
        assert abs(mean[b] - row.astype(np.float64).mean()) < 1e-6
        assert best[b] == row.max() and at[b] == int(np.argmax(row))


def test_rerank_modes_mean_and_max() -> None:
    rng = np.random.default_rng(9)
    sims, lengths = random_batch(rng, 25, 50)
    params = P(kernel=4, stride=2)
    res_max = rerank_scores("max", sims, lengths, params)
    np.testing.assert_array_equal(res_max.score, pool_max(sims, lengths))
    np.testing.assert_array_equal(res_max.r_k, res_max.score)
    np.testing.assert_array_equal(res_max.seg_first, argmax_frame(sims, lengths))
    np.testing.assert_array_equal(res_max.seg_last, res_max.seg_first)
    res_mean = rerank_scores("mean", sims, lengths, params)
    np.testing.assert_array_equal(res_mean.score, pool_mean(sims, lengths))
    np.testing.assert_array_equal(res_mean.best_window, pool_max(sims, lengths))
    for b in range(25):  # segment: the kernel with the highest mean similarity, earliest on ties
        s = sims[b, : lengths[b]].astype(np.float64)
        h, st, w = naive_geometry(len(s), params)
        means = [s[v * st : v * st + h].mean() for v in range(w)]
        best_v = int(np.argmax(means))
        v = int(res_mean.seg_first[b]) // st
        assert v == best_v or means[v] >= max(means) - 1e-9
        assert res_mean.seg_last[b] == res_mean.seg_first[b] + h - 1
    wide_params = replace(params, segment_kernel=6)
    wide = rerank_scores("mean", sims, lengths, wide_params)
    assert np.all(wide.seg_last - wide.seg_first <= 5) and np.any(wide.seg_last - wide.seg_first == 5)
    np.testing.assert_array_equal(wide.score, res_mean.score)  # the segment kernel moves only the segment
    for b in range(25):  # the best 6-frame kernel (stride 2; the whole track when shorter), earliest on ties
        s = sims[b, : lengths[b]].astype(np.float64)
        h, st, w = naive_geometry(len(s), replace(wide_params, kernel=6.0))
        means = [s[v * st : v * st + h].mean() for v in range(w)]
        v = int(wide.seg_first[b]) // st
        assert wide.seg_first[b] % st == 0 and wide.seg_last[b] == wide.seg_first[b] + h - 1
        assert v == int(np.argmax(means)) or means[v] >= max(means) - 1e-9
    res_fusion = rerank_scores("fusion", sims, lengths, params)  # CoLLAP on the standardised similarities
    rows = [[float(x) for x in sims[b, : lengths[b]]] for b in range(25)]
    # the loop reference standardises on its own (not through fusion.standardize): one weight per track
    np.testing.assert_allclose(res_fusion.score, naive_scores("fusion", rows, params), rtol=0, atol=2e-5)
    mu, sd = naive_standardize(rows)
    for name in ("r_k", "r_t"):
        want = [mu + sd * r[name] for r in naive_fuse((sims.astype(np.float64) - mu) / sd, lengths, params)]
        np.testing.assert_allclose(getattr(res_fusion, name), want, rtol=0, atol=2e-5, err_msg=name)


def test_bad_input_raises_usage_error() -> None:
    sims = np.zeros((2, 5), np.float32)
    with pytest.raises(UsageError, match="length must be in"):
        fuse(sims, np.array([0, 5]))
    with pytest.raises(UsageError, match="length must be in"):
        fuse(sims, np.array([6, 5]))
    with pytest.raises(UsageError, match="lengths"):
        fuse(sims, np.array([5]))
    with pytest.raises(UsageError, match="integers"):
        fuse(sims, np.array([5.0, 5.0]))
    with pytest.raises(UsageError, match="2-D"):
        fuse(np.zeros(5), np.array([5]))
    with pytest.raises(UsageError, match="NaN"):
        fuse(np.array([[0.1, np.nan, 0.2]]), np.array([3]))
    with pytest.raises(UsageError, match="mode"):
        rerank_scores("median", sims, np.array([5, 5]))
    for bad in (
        {"temperature": 0.0},
        {"temperature": float("nan")},
        {"kernel": 0.0},
        {"stride": -1.0},
        {"mode": "seconds"},
        {"segment": "best"},
        {"segment_kernel": -1.0},
        {"gamma_k": float("inf")},
    ):
        with pytest.raises(UsageError):
            FusionParams(**bad)


def test_attention_segment_lies_inside_a_planted_section() -> None:
    """A run of high windows in a low track: the attention-mass segment is a kernel inside the run, while
    the kernel-score rule may pick a kernel that holds the run's peak next to low windows."""
    rng = np.random.default_rng(13)
    for _ in range(20):
        t = int(rng.integers(20, 61))
        s = rng.normal(0.1, 0.03, size=t)
        a = int(rng.integers(0, t - 6))
        n = int(rng.integers(3, 7))
        s[a : a + n] = rng.normal(0.6, 0.03, size=n)
        res = fuse(s[None, :].astype(np.float32), np.array([t]), P(kernel=3, temperature=0.05, segment="attention"))
        assert a <= res.seg_first[0] and res.seg_last[0] <= a + n - 1
