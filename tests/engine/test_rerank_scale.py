"""Scale-free rerank (engine/query/fusion.py rerank_scores): naive references, affine and shared-direction
invariance, repeated and padded tracks, the hedge's guarantees, stored settings."""

from __future__ import annotations

import numpy as np
import pytest

from songseek.benchmarks.planted import make_planted
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import (
    DEFAULT_RERANK,
    RERANK_MODES,
    FusionParams,
    RerankSettings,
    rerank_scores,
    standardize,
)
from tests.rerank_parts_reference import assert_best_segment, naive_parts, naive_segment_keys
from tests.rerank_reference import naive_scores, naive_standardize

SCORED = [m for m in RERANK_MODES if m != "none"]


def ragged(rng: np.random.Generator, b: int, tmax: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(1, tmax + 1, size=b)
    sims = rng.normal(0.2, 0.1, size=(b, tmax))
    sims[np.arange(tmax)[None, :] >= lengths[:, None]] = np.nan  # padding is never read
    return sims, lengths.astype(np.int64)


def test_standardize_matches_naive_per_query() -> None:
    rng = np.random.default_rng(0)
    sims, lengths = ragged(rng, 30, 12)
    query_of = rng.integers(0, 4, size=30) * 7  # any labels
    z, mu, sd = standardize(sims, lengths, query_of)
    for label in np.unique(query_of):
        rows = [list(sims[i, : lengths[i]]) for i in np.flatnonzero(query_of == label)]
        m, s = naive_standardize(rows)
        for i in np.flatnonzero(query_of == label):
            assert mu[i] == pytest.approx(m, abs=1e-12) and sd[i] == pytest.approx(s, rel=1e-10)
            np.testing.assert_allclose(z[i, : lengths[i]], (sims[i, : lengths[i]] - m) / s, atol=1e-10)
            assert np.all(z[i, lengths[i]:] == 0)


@pytest.mark.parametrize("params", [FusionParams(), FusionParams(kernel=3, stride=2, segment="kernel"),
                                    FusionParams(segment="attention", segment_kernel=0)],
                         ids=["default", "kernel3", "attention"])
@pytest.mark.parametrize("mode", RERANK_MODES)
def test_rerank_scores_match_naive_reference(mode: str, params: FusionParams) -> None:
    """Score, both parts, best window and segment of every mode against plain loops."""
    rng = np.random.default_rng(1)
    for _ in range(3):
        sims, lengths = ragged(rng, 9, 14)
        res = rerank_scores(mode, sims, lengths, params)
        rows = [[float(x) for x in sims[i, : lengths[i]]] for i in range(9)]
        ref = naive_scores(mode, rows, params)
        np.testing.assert_allclose(res.score, ref, rtol=2e-5, atol=2e-5)
        parts = naive_parts(mode, rows, params)
        np.testing.assert_allclose(np.stack([res.r_k, res.r_t, res.best_window], 1), parts, rtol=2e-5, atol=2e-5)
        for i, key in enumerate(naive_segment_keys(mode, rows, params)):
            assert_best_segment(key, int(res.seg_first[i]), int(res.seg_last[i]), what=(mode, i))


def test_batched_queries_equal_one_query_at_a_time() -> None:
    rng = np.random.default_rng(2)
    sims, lengths = ragged(rng, 24, 10)
    sims[12:] = sims[12:] * 3 - 1  # the second query on another scale
    query_of = np.repeat([5, 9], 12)
    for mode in SCORED:
        both = rerank_scores(mode, sims, lengths, None, query_of)
        for sl in (slice(0, 12), slice(12, 24)):
            one = rerank_scores(mode, sims[sl], lengths[sl])
            np.testing.assert_allclose(both.score[sl], one.score, rtol=1e-6)
            np.testing.assert_array_equal(both.seg_first[sl], one.seg_first)


def _order(scores: np.ndarray) -> list[int]:
    return list(np.lexsort((np.arange(len(scores)), -scores.astype(np.float64))))


@pytest.mark.parametrize("seed", range(6))
def test_ranking_and_segments_unchanged_by_any_increasing_affine_map(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    sims, lengths = ragged(rng, 40, 30)
    a, b = float(np.exp(rng.uniform(-3, 3))), float(rng.uniform(-5, 5))
    for mode in RERANK_MODES:
        before = rerank_scores(mode, sims, lengths)
        after = rerank_scores(mode, a * sims + b, lengths)
        assert _order(before.score) == _order(after.score), mode
        np.testing.assert_array_equal(before.seg_first, after.seg_first)
        np.testing.assert_array_equal(before.seg_last, after.seg_last)
        np.testing.assert_allclose(after.score, a * before.score + b, rtol=1e-4, atol=1e-4 * (a + abs(b)))


def shared_direction(v: np.ndarray, c: float) -> np.ndarray:
    """normalize(v + c u) with u a new axis orthogonal to every vector: cosines go to (s + c²) / (1 + c²)."""
    out = np.concatenate([v, np.full((len(v), 1), c, v.dtype)], axis=1)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def rank_all(frames: list[np.ndarray], queries: np.ndarray, mode: str) -> tuple[list[list[int]], np.ndarray]:
    """Track order and segments (Q, N, 2) of every query, engine-style float32 similarities."""
    lengths = np.array([len(f) for f in frames])
    padded = np.zeros((len(frames), lengths.max(), frames[0].shape[1]), np.float32)
    for i, f in enumerate(frames):
        padded[i, : len(f)] = f
    orders, segs = [], []
    for q in queries:
        res = rerank_scores(mode, padded @ q, lengths)
        orders.append(_order(res.score))
        segs.append(np.stack([res.seg_first, res.seg_last], axis=1))
    return orders, np.stack(segs)


def test_shared_direction_changes_nothing_on_planted_data() -> None:
    p = make_planted(40, dim=32, seed=4)
    frames = [p.track_frames(i) for i in range(p.n_tracks)]
    for mode in ("hedge", "part", "whole", "fusion", "blend"):
        orders, segs = rank_all(frames, p.queries[:60], mode)
        moved, moved_segs = rank_all([shared_direction(f, 2.0) for f in frames], shared_direction(p.queries[:60], 2.0),
                                     mode)
        assert orders == moved
        np.testing.assert_array_equal(segs, moved_segs)


def test_shared_direction_changes_nothing_on_the_demo_model() -> None:
    from songseek.benchmarks.synth import iter_tracks
    from songseek.engine.audio.windowing import frame_windows
    from songseek.engine.encoders import load_encoder

    enc = load_encoder("demo")
    frames, captions = [], []
    for track, audio in iter_tracks(2, 5):
        frames.append(enc.embed_audio(frame_windows(audio[: 90 * 16000], 16000, 10.0, 10.0)[0]))
        captions += [track.tags, *track.section_captions[:2]]
    q = enc.embed_text(captions)
    for mode in ("hedge", "part", "whole", "fusion", "blend"):
        orders, segs = rank_all(frames, q, mode)
        moved, moved_segs = rank_all([shared_direction(f, 1.5) for f in frames], shared_direction(q, 1.5), mode)
        assert orders == moved
        np.testing.assert_array_equal(segs, moved_segs)


def test_a_track_repeated_end_to_end_keeps_every_score() -> None:
    rng = np.random.default_rng(7)
    sims, lengths = ragged(rng, 20, 25)
    sims = np.nan_to_num(sims)
    doubled = np.zeros((20, 50))
    for i in range(20):
        doubled[i, : 2 * lengths[i]] = np.tile(sims[i, : lengths[i]], 2)
    for mode in RERANK_MODES:
        once = rerank_scores(mode, sims, lengths)
        for i in (0, 5, 11):  # one candidate played twice, the others as they were
            mixed = np.zeros((20, 50))
            mixed[:, :25] = sims
            mixed[i] = doubled[i]
            mixed_len = lengths.copy()
            mixed_len[i] *= 2
            twice = rerank_scores(mode, mixed, mixed_len)
            np.testing.assert_allclose(twice.score, once.score, rtol=1e-5, atol=1e-6)


def test_padding_a_track_with_unrelated_windows_never_lifts_it() -> None:
    """A track that matches its query (top 10) padded with as many windows unrelated to the query (random
    directions orthogonal to it) gains nothing: the extra windows only dilute it. (The padding also moves
    the query's scale a little, which can reorder two close competitors: at most one rank, rarely.)"""
    p = make_planted(60, seed=5)
    frames = [p.track_frames(i) for i in range(p.n_tracks)]
    rng = np.random.default_rng(0)
    for mode in RERANK_MODES:
        checked = lifted = 0
        gain = 0
        for qi in range(0, len(p.queries), 2):
            q, rel = p.queries[qi], int(p.query_track[qi])
            before = rank_all(frames, q[None], mode)[0][0].index(rel)
            if before >= 10:
                continue
            other = rng.normal(size=frames[rel].shape)
            other -= np.outer(other @ q, q) / float(q @ q)
            padded = list(frames)
            padded[rel] = np.concatenate([frames[rel], (other / np.linalg.norm(other, axis=1, keepdims=True))
                                          .astype(np.float32)])
            after = rank_all(padded, q[None], mode)[0][0].index(rel)
            checked += 1
            lifted += after < before
            gain = max(gain, before - after)
        assert checked > 20 and lifted <= 0.02 * checked and gain <= 1, (mode, checked, lifted, gain)


def test_noise_tracks_long_ones_win_no_more_often_than_under_max_pooling() -> None:
    """Pure-noise candidates of 3-60 windows: how often the longest third wins. Max pooling favours it
    (the max of more noise is higher); the default must favour it less."""
    rng = np.random.default_rng(8)
    lengths = np.repeat([3, 6, 10, 20, 40, 60], 10).astype(np.int64)
    long_wins = {m: 0 for m in (DEFAULT_RERANK, "max")}
    trials = 300
    for _ in range(trials):
        sims = rng.normal(0, 1, size=(len(lengths), 60))
        for m in long_wins:
            long_wins[m] += int(np.argmax(rerank_scores(m, sims, lengths).score)) >= 40
    assert long_wins["max"] > 0.6 * trials  # the bias is real and measurable here
    assert long_wins[DEFAULT_RERANK] < long_wins["max"]


def _positions(scores: np.ndarray) -> np.ndarray:
    """1-based position of every row in the order of ``scores`` (ties: the earlier row)."""
    pos = np.empty(len(scores), np.int64)
    pos[_order(scores)] = np.arange(1, len(scores) + 1)
    return pos


@pytest.mark.parametrize("seed", range(4))
def test_hedge_keeps_the_fusion_first_and_the_poolings_leaders_near_the_top(seed: int) -> None:
    """The hedge's first result is the fusion's; a track at rank r under mean pooling or under r_t is at
    most at position floor(w r) + 2r; a huge weight gives the fusion order back; its scores are the
    fusion's scores, best first, handed out in the hedged order."""
    rng = np.random.default_rng(300 + seed)
    sims, lengths = ragged(rng, 60, 40)
    for w in (1.0, 2.0, 3.0, 4.5):
        params = FusionParams(hedge_weight=w)
        hedge = rerank_scores("hedge", sims, lengths, params)
        fusion = rerank_scores("fusion", sims, lengths, params)
        mean = rerank_scores("mean", sims, lengths, params)
        pos = _positions(hedge.score)
        assert _order(hedge.score)[0] == _order(fusion.score)[0]
        for ranked in (_positions(mean.score), _positions(fusion.r_t)):
            assert np.all(pos <= np.floor(w * ranked) + 2 * ranked)
        np.testing.assert_allclose(np.sort(hedge.score), np.sort(fusion.score), rtol=1e-6)
        np.testing.assert_array_equal(hedge.seg_first, fusion.seg_first)
    far = rerank_scores("hedge", sims, lengths, FusionParams(hedge_weight=1e6))
    assert _order(far.score) == _order(rerank_scores("fusion", sims, lengths).score)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("mode", "pooling"), [("part", "max"), ("whole", "mean")])
def test_part_and_whole_lead_with_their_pooling_and_keep_fusions_leaders_near(seed: int, mode: str,
                                                                             pooling: str) -> None:
    """``part`` (``whole``) puts max (mean) pooling's first track first, hands out that pooling's scores
    in its order, keeps a track at fusion rank r at most at position floor(w r) + r, keeps fusion's
    segments, and with a huge weight is the pooling's order."""
    rng = np.random.default_rng(500 + seed)
    sims, lengths = ragged(rng, 50, 40)
    for w in (1.0, 3.0, 4.5):
        params = FusionParams(hedge_weight=w)
        res = rerank_scores(mode, sims, lengths, params)
        base = rerank_scores(pooling, sims, lengths, params)
        fusion = rerank_scores("fusion", sims, lengths, params)
        assert _order(res.score)[0] == _order(base.score)[0]
        ranked = _positions(fusion.score)
        assert np.all(_positions(res.score) <= np.floor(w * ranked) + ranked)
        np.testing.assert_allclose(np.sort(res.score), np.sort(base.score), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(res.seg_first, fusion.seg_first)
        np.testing.assert_array_equal(res.seg_last, fusion.seg_last)
    far = rerank_scores(mode, sims, lengths, FusionParams(hedge_weight=1e6))
    assert _order(far.score) == _order(rerank_scores(pooling, sims, lengths).score)


@pytest.mark.parametrize("mode", ["part", "whole", "hedge"])
def test_hedged_modes_score_twin_tracks_as_a_tie(mode: str) -> None:
    """One track indexed twice gets one score in the hedged modes, as under mean or max pooling, so a
    benchmark's pessimistic ties see the tie (before, the row number decided which twin came first)."""
    sims, lengths = ragged(np.random.default_rng(12), 30, 20)
    plain = rerank_scores(mode, sims, lengths)
    base = rerank_scores({"part": "max", "whole": "mean", "hedge": "fusion"}[mode], sims, lengths)
    # a track the hedge lifts well above its base rank: its twin lands elsewhere in the hedged order
    i = int(np.argmax(_positions(base.score) - _positions(plain.score)))
    assert _positions(base.score)[i] - _positions(plain.score)[i] >= 3
    twin = np.concatenate([sims, sims[i : i + 1]]), np.concatenate([lengths, lengths[i : i + 1]])
    res = rerank_scores(mode, *twin)
    assert res.score[i] == res.score[30] and len(np.unique(res.score)) == 30
    for pooling in ("mean", "max"):
        assert rerank_scores(pooling, *twin).score[30] == rerank_scores(pooling, *twin).score[i]


def test_auto_without_a_kind_is_the_hedge() -> None:
    sims, lengths = ragged(np.random.default_rng(8), 30, 20)
    auto, hedge = rerank_scores("auto", sims, lengths), rerank_scores("hedge", sims, lengths)
    np.testing.assert_array_equal(auto.score, hedge.score)
    np.testing.assert_array_equal(auto.seg_first, hedge.seg_first)


def test_hedge_lifts_a_whole_track_match_that_fusion_buries() -> None:
    """A track that is mildly above the rest in every window (what a whole-track description gives) loses
    to tracks with one high window under fusion's soft max; the hedge brings it back near the top."""
    rng = np.random.default_rng(9)
    sims = rng.normal(0, 1, size=(50, 30))
    sims[:20, 7] += 5.0  # twenty tracks with one spike each
    sims[30] += 1.0  # the whole-track match: first under mean pooling
    lengths = np.full(50, 30, np.int64)
    assert _positions(rerank_scores("mean", sims, lengths).score)[30] == 1
    assert _positions(rerank_scores("fusion", sims, lengths).score)[30] > 10
    assert _positions(rerank_scores("hedge", sims, lengths).score)[30] <= 5  # floor(3 * 1) + 2 * 1


def test_settings_round_trip_and_bad_values() -> None:
    s = RerankSettings("fusion", FusionParams(temperature=0.2, segment="kernel", mean_weight=0.3))
    assert RerankSettings.from_json(s.to_json()) == s
    assert RerankSettings.from_json({}) == RerankSettings()
    with pytest.raises(UsageError, match="mode must be one of"):
        RerankSettings.from_json({"rerank": "median"})
    with pytest.raises(UsageError, match="unknown params"):
        RerankSettings.from_json({"params": {"tau": 1}})
    with pytest.raises(UsageError, match="temperature must be a number"):
        RerankSettings.from_json({"params": {"temperature": "hot"}})
    with pytest.raises(UsageError, match="temperature must be > 0"):
        RerankSettings.from_json({"params": {"temperature": -1}})
    with pytest.raises(UsageError, match="hedge_weight must be"):
        RerankSettings.from_json({"params": {"hedge_weight": 0.5}})
    with pytest.raises(UsageError, match=r"span_exponent must be a number in \[0, 1\]"):
        RerankSettings.from_json({"params": {"span_exponent": 1.5}})
    with pytest.raises(UsageError, match="segment must be one of"):
        RerankSettings.from_json({"params": {"segment": "best"}})
