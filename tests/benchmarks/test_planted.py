"""benchmarks/planted.py: the generator's construction, and the pure evaluation against naive loops."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from songseek.benchmarks.planted import (
    PLANTED_MODES,
    PlantedSet,
    evaluate_fusion_gammas,
    evaluate_planted_arrays,
    make_planted,
    planted_sims,
    summarize,
)
from songseek.benchmarks.planted_sweep import compare, default_grid, describe, markdown, segment_table, sweep
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import FusionParams, rerank_scores
from tests.rerank_reference import naive_scores


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = make_planted(40, seed=3), make_planted(40, seed=3), make_planted(40, seed=4)
    for name in ("frames", "track_start", "sec_concept", "sec_first", "queries", "query_track", "query_start_s"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.frames.shape != c.frames.shape or not np.array_equal(a.frames, c.frames)


def test_shapes_and_construction() -> None:
    p = make_planted(60, dim=32, seed=1, hop_s=5.0)
    n, f = p.n_tracks, p.frames.shape[0]
    assert n == 60 and p.frames.shape == (f, 32) and p.frames.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p.frames, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p.queries, axis=1), 1.0, atol=1e-5)
    assert p.track_start[0] == 0 and p.track_start[-1] == f and np.all(p.lengths >= 6) and np.all(p.lengths <= 60)
    # Sections tile every track: contiguous, 1-6 windows, from window 0 to T - 1.
    for i in range(n):
        mine = np.flatnonzero(p.sec_track == i)
        assert p.sec_first[mine[0]] == 0 and p.sec_last[mine[-1]] == p.lengths[i] - 1
        np.testing.assert_array_equal(p.sec_first[mine[1:]], p.sec_last[mine[:-1]] + 1)
        span = p.sec_last[mine] - p.sec_first[mine] + 1
        assert span.min() >= 1 and span.max() <= 6
        # events: concepts that occur once in the track; every track has at least one
        concepts = p.sec_concept[mine]
        for s in mine:
            assert p.sec_event[s] == (np.sum(concepts == p.sec_concept[s]) == 1)
        assert p.sec_event[mine].any()
    # Queries: one whole-track query per track, then section queries on event sections.
    q = p.queries.shape[0]
    assert p.query_track.shape == p.query_section.shape == p.query_start_s.shape == (q,)
    assert np.all((p.query_track >= 0) & (p.query_track < n))
    whole = ~p.is_section
    np.testing.assert_array_equal(p.query_track[whole], np.arange(n))
    np.testing.assert_array_equal(p.query_end_s[whole], p.lengths * 5.0)
    sec = p.query_section[p.is_section]
    assert p.sec_event[sec].all()
    np.testing.assert_array_equal(p.sec_track[sec], p.query_track[p.is_section])
    np.testing.assert_array_equal(p.query_start_s[p.is_section], p.sec_first[sec] * 5.0)
    np.testing.assert_array_equal(p.query_end_s[p.is_section], (p.sec_last[sec] + 1) * 5.0)
    assert len(np.unique(sec)) == len(sec)
    # frames of a section: the section's concept and the track's style both show in the window vectors
    s0 = sec[0]
    win = p.track_frames(int(p.sec_track[s0]))[p.sec_first[s0] : p.sec_last[s0] + 1]
    assert (win @ p.concepts[p.sec_concept[s0]]).mean() > 0.3
    assert (win @ p.styles[p.sec_track[s0]]).mean() > 0.1


def test_noise_free_queries_find_their_track_first() -> None:
    """With noise = 0 a section query equals its event's windows (cosine 1, nowhere else): the first stage
    and max pooling rank its track first, and the best window lies in the section. A whole-track query
    equals its track's normalised mean vector: trackvec ranks its track first."""
    p = make_planted(80, seed=2, noise=0.0)
    ev = evaluate_planted_arrays(p, FusionParams(), PLANTED_MODES)
    sec = p.is_section
    assert np.all(ev["none"].ranks[sec] == 1) and np.all(ev["max"].ranks[sec] == 1)
    assert np.all(ev["max"].iou[sec] > 0)
    assert np.all(ev["trackvec"].ranks[~sec] == 1)
    table = summarize(p, ev)
    assert table["section"]["max"]["R@1"] == 1.0 and table["whole"]["trackvec"]["R@1"] == 1.0
    # With noise the task is hard: nothing is perfect on the default dataset.
    noisy = summarize(make_planted(80, seed=2), evaluate_planted_arrays(make_planted(80, seed=2)))
    assert noisy["section"]["max"]["R@1"] < 0.9 and noisy["whole"]["mean"]["R@1"] < 0.95


def naive_ranks(p: PlantedSet, scorer: Callable[[np.ndarray, int], float | np.floating]) -> np.ndarray:
    """Loop over queries and tracks; rank = 1 + number of other tracks scoring >= the relevant one."""
    ranks = []
    for qi in range(p.queries.shape[0]):
        scores = np.array([scorer(p.track_frames(i) @ p.queries[qi], i) for i in range(p.n_tracks)])
        r = p.query_track[qi]
        ranks.append(1 + int(np.sum(np.delete(scores, r) >= scores[r])))
    return np.array(ranks)


def test_evaluation_matches_naive_loops() -> None:
    p = make_planted(25, seed=5)
    params = FusionParams(kernel=3, temperature=0.05)
    ev = evaluate_planted_arrays(p, params, PLANTED_MODES)
    np.testing.assert_array_equal(
        ev["mean"].ranks, naive_ranks(p, lambda s, i: np.float32(s.astype(np.float64).mean()))
    )
    np.testing.assert_array_equal(ev["max"].ranks, naive_ranks(p, lambda s, i: s.max()))
    np.testing.assert_array_equal(ev["none"].ranks, ev["max"].ranks)
    fused = []  # every query on its own scale: naive_scores standardises over the query's tracks
    for qi in range(p.queries.shape[0]):
        scores = np.array(naive_scores("fusion", [list(p.track_frames(i) @ p.queries[qi])
                                                  for i in range(p.n_tracks)], params))
        r = p.query_track[qi]
        fused.append(1 + int(np.sum(np.delete(scores, r) >= scores[r])))
    np.testing.assert_array_equal(ev["fusion"].ranks, fused)
    vec = [p.track_frames(i).astype(np.float64).mean(axis=0) for i in range(p.n_tracks)]
    vec = [v / np.linalg.norm(v) for v in vec]
    # trackvec, naively: cosine with each track's normalised mean window vector
    expected = []
    for qi in range(p.queries.shape[0]):
        scores = np.array([vec[i] @ p.queries[qi].astype(np.float64) for i in range(p.n_tracks)])
        r = p.query_track[qi]
        expected.append(1 + int(np.sum(np.delete(scores, r) >= scores[r])))
    np.testing.assert_array_equal(ev["trackvec"].ranks, expected)
    # Segments: the relevant track's fused segment, in seconds, and its IoU with the true span.
    qi = int(np.flatnonzero(p.is_section)[0])
    r = p.query_track[qi]
    rows = [p.track_frames(i) @ p.queries[qi] for i in range(p.n_tracks)]
    padded = np.zeros((p.n_tracks, max(map(len, rows))), np.float32)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    one = rerank_scores("fusion", padded, p.lengths, params)
    assert ev["fusion"].seg_start_s[qi] == one.seg_first[r] * p.hop_s
    assert ev["fusion"].seg_end_s[qi] == (one.seg_last[r] + 1) * p.hop_s
    inter = max(
        0.0, min(ev["fusion"].seg_end_s[qi], p.query_end_s[qi]) - max(ev["fusion"].seg_start_s[qi], p.query_start_s[qi])
    )
    union = (
        (ev["fusion"].seg_end_s[qi] - ev["fusion"].seg_start_s[qi]) + (p.query_end_s[qi] - p.query_start_s[qi]) - inter
    )
    assert abs(ev["fusion"].iou[qi] - inter / union) < 1e-12


def test_candidates_rerank_only_the_first_stage_top() -> None:
    p = make_planted(40, seed=6)
    sims = planted_sims(p)
    full = evaluate_planted_arrays(p, FusionParams(), ("none", "mean"), None, sims)
    cut = evaluate_planted_arrays(p, FusionParams(), ("mean",), 5, sims)["mean"]
    stage = full["none"].ranks
    outside = stage > 5
    np.testing.assert_array_equal(cut.ranks[outside], stage[outside])  # not a candidate: first-stage rank
    assert np.all(cut.ranks[~outside] <= 5)
    # Among candidates, the order is mean pooling's: naive check on every query.
    for qi in np.flatnonzero(~outside):
        best = sims.best[qi]
        cand = np.argsort(-best, kind="stable")[:5]
        scores = {
            int(i): float(np.float32((p.track_frames(int(i)) @ p.queries[qi]).astype(np.float64).mean())) for i in cand
        }
        r = int(p.query_track[qi])
        assert cut.ranks[qi] == 1 + sum(1 for i, s in scores.items() if i != r and s >= scores[r])
    assert (
        evaluate_planted_arrays(p, FusionParams(), ("mean",), 40, sims)["mean"].ranks.tolist()
        == full["mean"].ranks.tolist()
    )


def test_gamma_shortcut_agrees_with_full_evaluation() -> None:
    p = make_planted(30, seed=8)
    sims = planted_sims(p)
    params = FusionParams(kernel=2, temperature=0.1, segment="attention")
    by_gamma = evaluate_fusion_gammas(p, params, [(0.5, 0.5), (0.0, 1.0)], None, sims)
    for gk, gt in by_gamma:
        full = evaluate_planted_arrays(p, FusionParams(gk, gt, 2, 1, 0.1, segment="attention"), ("fusion",), None, sims)
        assert np.mean(by_gamma[(gk, gt)].ranks == full["fusion"].ranks) > 0.98  # equal up to float32 near-ties
        np.testing.assert_array_equal(by_gamma[(gk, gt)].iou, full["fusion"].iou)


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        make_planted(0)
    with pytest.raises(UsageError):
        evaluate_planted_arrays(make_planted(5), modes=("median",))


def test_tiny_sweep_runs_and_prints_a_table() -> None:
    grid = default_grid(quick=True)[:2]
    rows = sweep(n_tracks=15, seeds=(0,), grid=grid, gammas=((0.25, 0.75),))
    assert [r.label for r in rows] == ["none", "mean", "max", "trackvec", "fusion", "fusion"]
    # every row's figures are the evaluation of exactly its setting (one seed: no averaging to hide behind)
    planted = make_planted(15, seed=0)
    base = summarize(planted, evaluate_planted_arrays(planted, FusionParams(), ("none", "mean", "max", "trackvec")))
    for row in rows[:4]:
        assert row.params is None
        for group in row.metrics:
            assert row.metrics[group] == pytest.approx(base[group][row.label], abs=1e-12), (row.label, group)
    assert [(r.params.gamma_k, r.params.gamma_t, r.params.kernel) for r in rows[4:] if r.params] == [
        (0.25, 0.75, g.kernel) for g in grid]
    for row in rows[4:]:
        assert row.params is not None
        fused = summarize(planted, evaluate_planted_arrays(planted, row.params, ("fusion",)))
        for group in row.metrics:
            assert row.metrics[group] == pytest.approx(fused[group]["fusion"], abs=1e-12), (describe(row.params), group)
    assert rows[4].metrics != rows[5].metrics  # the two settings differ, so a swapped label would show
    text = markdown(rows, top=1)
    assert len(text.splitlines()) == 2 + 4 + 1 and "| mean |" in text


def test_segment_table_and_compare_print_tables() -> None:
    seg = segment_table(FusionParams(), n_tracks=15, seeds=(0,))
    assert "segment=attention, segment_kernel=3" in seg and len(seg.splitlines()) == 2 + 1 + 3 + 8
    cmp = compare({"defaults": FusionParams()}, n_tracks=15, seeds=(1,))
    assert "| fusion defaults |" in cmp and "| trackvec |" in cmp
