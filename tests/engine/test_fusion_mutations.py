"""engine/query/fusion.py: behaviour the main fusion tests leave open (found by a mutation sweep), each
checked against a direct computation: exact rational geometry, brute-force runs, plain loops."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import (
    RERANK_MODES,
    FusionParams,
    RerankSettings,
    fuse,
    kernel_geometry,
    params_for_hop,
    rerank_scores,
)
from tests.rerank_reference import naive_fuse, naive_scores, naive_span


def brute_span(s: list[float], longest: int, exponent: float) -> tuple[int, int]:
    """(first, last) of the run of 1..longest frames of ``s`` with the largest sum / length**exponent, ties:
    the earliest start, then the shorter run (plain loops over the track's own frames only)."""
    best: tuple[float, int, int] | None = None
    for i in range(len(s)):
        for n in range(1, longest + 1):
            if i + n > len(s):
                break
            v = sum(s[i:i + n]) / n**exponent
            if best is None or v > best[0]:
                best = (v, i, i + n - 1)
    assert best is not None
    return best[1], best[2]


def test_proportional_geometry_floors_decimal_kernels_exactly() -> None:
    """H = floor(T * kernel / 30) with the kernel read as the decimal the user wrote: 100 x 5.1 / 30 is 17
    exactly, though the float product is 16.999...; the engine must not lose a frame to representation error."""
    cases = [(5.1, 100), (5.1, 200), (2.55, 200), (8.7, 100), (4.35, 400), (2.32, 375)]
    for kernel, t in cases:
        p = FusionParams(mode="proportional", kernel=kernel, stride=kernel)
        h, s, w = kernel_geometry(np.array([t]), p)
        exact = max(1, math.floor(Fraction(t) * Fraction(repr(kernel)) / 30))
        want_h = min(exact, t)  # the short-track rule
        assert (int(h[0]), int(s[0]), int(w[0])) == (want_h, exact, (t - want_h) // exact + 1), (kernel, t)


def test_span_segment_lies_inside_each_track_even_when_every_frame_is_negative() -> None:
    """Tracks shorter than the batch, every similarity negative and the best one the last frame: the segment is
    a run of the track's own frames, never one reaching into the padding after it."""
    rng = np.random.default_rng(11)
    lengths = np.array([3, 5, 8, 2, 7, 10])
    sims = np.full((len(lengths), 10), np.nan, np.float32)
    for b, t in enumerate(lengths):
        row = -rng.uniform(0.3, 0.9, size=t)
        row[-1] = -0.05  # the best frame is the last one
        sims[b, :t] = row
    params = FusionParams()  # span rule, runs of 1..3 frames, exponent 0.7
    res = fuse(sims, lengths, params)
    for b, t in enumerate(lengths):
        s = [float(x) for x in sims[b, :t]]
        assert (int(res.seg_first[b]), int(res.seg_last[b])) == brute_span(s, 3, 0.7) == (t - 1, t - 1), b
        assert 0 <= res.seg_first[b] <= res.seg_last[b] < t


def test_span_tie_keeps_the_shorter_run() -> None:
    """Exponent 0 (plain sums): a peak followed by zero-similarity frames ties with the runs that add those
    zeros; the documented tie rule (earliest start, then the shorter run) picks the peak alone."""
    sims = np.array([[1.0, 0.0, 0.0, 0.0, -1.0], [-1.0, 0.5, 0.0, 0.0, 0.0]], np.float32)
    lengths = np.array([5, 5])
    res = fuse(sims, lengths, FusionParams(span_exponent=0.0, segment_kernel=3.0))
    for b in range(2):
        s = [float(x) for x in sims[b]]
        assert (int(res.seg_first[b]), int(res.seg_last[b])) == brute_span(s, 3, 0.0)
    assert (int(res.seg_first[0]), int(res.seg_last[0])) == (0, 0)
    assert (int(res.seg_first[1]), int(res.seg_last[1])) == (1, 1)


@pytest.mark.parametrize("params", [FusionParams(segment_kernel=2.5),  # rounds half up: runs of up to 3
                                    FusionParams(segment_kernel=0.0, kernel=3.0, stride=1.0),  # 0: the kernel
                                    FusionParams(segment_kernel=0.0, kernel=2.6, stride=1.0)],
                         ids=["segment-2.5", "segment-0-kernel-3", "segment-0-kernel-2.6"])
def test_span_length_rounds_the_segment_kernel_half_up_and_falls_back_to_the_kernel(params: FusionParams) -> None:
    """A plateau of three equal frames: a run of 3 scores 3 / 3^0.7 = 1.39 > 2 / 2^0.7 = 1.23, so the segment
    covers the plateau only when the longest run is 3 frames (segment_kernel 2.5 -> 3; 0 -> the kernel)."""
    sims = np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]], np.float32)
    res = fuse(sims, np.array([7]), params)
    s = [float(x) for x in sims[0]]
    assert (int(res.seg_first[0]), int(res.seg_last[0])) == brute_span(s, 3, 0.7) == (2, 4)
    ref = naive_span(s, 3, 0.7)
    assert (ref["first"], ref["last"]) == (2, 4)


@pytest.mark.parametrize("mode", RERANK_MODES)
def test_a_query_whose_similarities_are_all_equal_scores_them_as_they_are(mode: str) -> None:
    """One candidate of one window (a filter that leaves a single short track), or candidates whose windows all
    score alike: the spread is 0, which counts as 1; every score and part is that similarity, no NaN, no error."""
    for sims, lengths in ((np.array([[0.42]], np.float32), np.array([1])),
                          (np.full((3, 4), 0.3, np.float32), np.array([1, 2, 4]))):
        res = rerank_scores(mode, sims, lengths, FusionParams())
        value = float(sims[0, 0])
        for name in ("score", "r_k", "r_t", "best_window"):
            np.testing.assert_allclose(getattr(res, name), value, rtol=0, atol=1e-6, err_msg=name)
        assert np.all(res.seg_first >= 0) and np.all(res.seg_first <= res.seg_last)
        assert np.all(res.seg_last < lengths)


def test_hedge_breaks_exact_ties_in_a_pooling_by_the_earlier_candidate() -> None:
    """Candidates that tie exactly under mean pooling (rows 1 and 3 here) but differ in their fusion score are no
    twins: the earlier candidate takes the better mean rank, as in the plain-loop reference, and that decides
    which one the hedge lifts."""
    rows = [[0.0, 0.375, 0.375, 0.25], [0.25, 0.5, 0.0, 0.375], [0.125, 0.0, 0.25, 0.5],
            [0.375, 0.375, 0.375, 0.375], [0.25, 0.0, 0.5, 0.25], [0.25, 0.125, 0.0, 0.5]]
    sims = np.array(rows, np.float32)
    res = rerank_scores("hedge", sims, np.array([4] * len(rows)), FusionParams())
    ref = naive_scores("hedge", rows, FusionParams())
    np.testing.assert_allclose(res.score, ref, rtol=0, atol=2e-5)
    assert sorted(range(6), key=lambda i: (-float(res.score[i]), i)) == sorted(range(6), key=lambda i: (-ref[i], i))


def test_params_for_hop_counts_frames_from_seconds() -> None:
    """A kernel or segment of S seconds is the run of frames covering S seconds, (S - window) / hop + 1 of them,
    at least 1; a stride is S / hop frames, at least 1 (a step shorter than half a hop still moves one frame)."""
    for hop, window in ((10.0, 10.0), (5.0, 10.0), (2.0, 6.0), (1.0, 1.0)):
        for seconds in (6.0, 10.0, 20.0, 30.0, 45.0):
            p = params_for_hop(hop, kernel_s=seconds, stride_s=seconds, segment_s=seconds, window_s=window)
            frames = max(1, round((seconds - window) / hop + 1))
            assert (p.kernel, p.segment_kernel, p.mode) == (frames, frames, "frames"), (hop, window, seconds)
            assert p.stride == max(1, round(seconds / hop))
    p = params_for_hop(10.0, stride_s=2.0)
    assert p.stride == 1.0 and RerankSettings(params=p).to_json()["params"]["stride"] == 1.0  # type: ignore[index]


@pytest.mark.parametrize("name", ["kernel", "temperature", "gamma_k", "hedge_weight"])
def test_stored_settings_refuse_a_boolean_for_a_number(name: str) -> None:
    """A manifest's rerank params hold numbers; JSON true/false is not one (Python would read it as 1/0)."""
    with pytest.raises(UsageError, match=name):
        RerankSettings.from_json({"rerank": "fusion", "params": {name: True}})
    assert RerankSettings.from_json({"rerank": "fusion", "params": {name: 2}}).params == replace(
        FusionParams(), **{name: 2.0})  # type: ignore[arg-type]


def test_hedge_lifts_by_the_soft_max_part_too() -> None:
    """hedge keys each track on min(fusion rank, w x mean rank, w x r_t rank); here (found by search over seeded
    data) the r_t rank alone moves a track, so an order hedged on the mean only differs from the reference."""
    rows = [[1.25, -0.09, -0.75, -0.63, -1.02, -0.43], [-0.83, 1.28, -1.68, -0.52, -0.40, -0.05],
            [-1.62, -2.73, 0.55, 0.95, 0.34, 0.07], [-0.24, -0.91, 1.23, -1.00, 0.89, 0.63],
            [-0.44, -1.33, -0.32, 0.89, -0.22, 0.87], [-1.61, -1.29, 1.30, 0.27, -3.12, -1.11],
            [0.04, -0.34, 0.90, -1.34, 0.72, 0.30], [-0.61, -1.36, -0.52, 0.09, 0.28, -0.58]]
    sims = np.array(rows, np.float32)
    res = rerank_scores("hedge", sims, np.array([6] * len(rows)), FusionParams())
    ref = naive_scores("hedge", [[float(x) for x in r] for r in sims], FusionParams())
    np.testing.assert_allclose(res.score, ref, rtol=0, atol=2e-5)
    n = len(rows)
    assert sorted(range(n), key=lambda i: (-float(res.score[i]), i)) == sorted(range(n), key=lambda i: (-ref[i], i))


def test_attention_segment_with_tiny_tau_splits_a_tied_offset_between_the_kernels() -> None:
    """A temperature so small that each kernel and offset is shifted by its own max: at offset 0 kernels 0 and 1
    tie (half the attention each), at offset 1 kernel 2 wins alone, so kernel 2 holds the most attention mass."""
    params = FusionParams(kernel=2, stride=1, temperature=1e-3, segment="attention", segment_kernel=0.0)
    sims = np.array([[1.0, 1.0, 0.0, 2.0]], np.float32)
    res = fuse(sims, np.array([4]), params)
    assert (int(res.seg_first[0]), int(res.seg_last[0])) == (2, 3)
    ref = naive_fuse(sims, np.array([4]), params)[0]
    assert ref["key"] == pytest.approx([0.5, 0.5, 1.0]) and (ref["first"], ref["last"]) == (2, 3)


def test_a_temperature_below_the_minimum_is_refused() -> None:
    """tau below MIN_TEMPERATURE (1e-6) is refused: 1/tau times a similarity would overflow towards inf."""
    FusionParams(temperature=1e-6)  # the minimum itself is accepted
    for tau in (9e-7, 1e-9, 1e-320, 0.0, -1.0, float("nan")):
        with pytest.raises(UsageError, match="temperature"):
            FusionParams(temperature=tau)
