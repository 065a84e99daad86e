"""Retrieval metrics against plain-loop references on seeded random scores, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from songseek.benchmarks.metrics import (
    average_precision_at_k,
    bootstrap_ci,
    cluster_weights,
    first_ranks_from_lists,
    metrics_ci,
    per_query_values,
    ranked_relevance,
    ranked_relevance_from_lists,
    ranks_from_scores,
    retrieval_metrics,
    retrieval_metrics_from_scores,
    segment_iou,
)
from songseek.engine.errors import UsageError
from tests.metric_reference import naive_ap_at_10

TIES = ("pessimistic", "optimistic", "stable")


# ------------------------------------------------------------------------------------------ naive references
def naive_order(row: np.ndarray, rel: set[int], ties: str) -> list[int]:
    """Candidates best first, ties broken by the rule, written as plainly as possible."""

    def key(j: int) -> tuple[float, int, int]:
        if ties == "pessimistic":
            tie = 1 if j in rel else 0
        elif ties == "optimistic":
            tie = 0 if j in rel else 1
        else:
            tie = 0
        return (-float(row[j]), tie, j)

    return sorted(range(len(row)), key=key)


def naive_first_rank(row: np.ndarray, rel: set[int], ties: str) -> int:
    for pos, j in enumerate(naive_order(row, rel, ties), start=1):
        if j in rel:
            return pos
    raise AssertionError("no relevant item")


def naive_ap(row: np.ndarray, rel: set[int], k: int, ties: str, normalize: str) -> float:
    order = naive_order(row, rel, ties)[:k]
    found, total = 0, 0.0
    for pos, j in enumerate(order, start=1):
        if j in rel:
            found += 1
            total += found / pos
    if normalize == "n_relevant":
        denom = len(rel)
    elif normalize == "min_k":
        denom = min(len(rel), k)
    else:
        denom = found
    return total / denom if denom else 0.0


def naive_metrics(ranks: list[int], ks: tuple[int, ...]) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"R@{k}"] = sum(1 for r in ranks if r <= k) / len(ranks)
    out["mAP@10"] = sum((1.0 / r if r <= 10 else 0.0) for r in ranks) / len(ranks)
    s = sorted(ranks)
    m = len(s) // 2
    out["MedR"] = float(s[m]) if len(s) % 2 else (s[m - 1] + s[m]) / 2.0
    out["MeanR"] = sum(ranks) / len(ranks)
    return out


def random_problem(seed: int, q: int = 40, n: int = 60, max_rel: int = 4):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((q, n)), 1)  # one decimal: many ties
    relevant = [rng.choice(n, size=int(rng.integers(1, max_rel + 1)), replace=False) for _ in range(q)]
    return scores, relevant


# ---------------------------------------------------------------------------------------- against references
@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_naive_reference(seed: int, ties: str) -> None:
    scores, relevant = random_problem(seed)
    got = ranks_from_scores(scores, relevant, ties=ties)  # type: ignore[arg-type]
    want = [naive_first_rank(scores[i], set(relevant[i].tolist()), ties) for i in range(len(relevant))]
    assert got.dtype == np.int64
    assert got.tolist() == want


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("normalize", ["n_relevant", "min_k", "retrieved"])
def test_ap_matches_naive_reference(ties: str, normalize: str) -> None:
    scores, relevant = random_problem(7, q=50, n=30, max_rel=12)
    rel, n_rel = ranked_relevance(scores, relevant, depth=10, ties=ties)  # type: ignore[arg-type]
    got = average_precision_at_k(rel, n_rel, k=10, normalize=normalize)  # type: ignore[arg-type]
    want = [naive_ap(scores[i], set(relevant[i].tolist()), 10, ties, normalize) for i in range(50)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_ranked_relevance_agrees_with_first_rank() -> None:
    scores, relevant = random_problem(3, n=25)
    for ties in TIES:
        rel, n_rel = ranked_relevance(scores, relevant, depth=25, ties=ties)  # type: ignore[arg-type]
        first = np.argmax(rel, axis=1) + 1
        assert first.tolist() == ranks_from_scores(scores, relevant, ties=ties).tolist()  # type: ignore[arg-type]
        assert n_rel.tolist() == [len(r) for r in relevant]


def test_metrics_match_naive_reference() -> None:
    rng = np.random.default_rng(11)
    ranks = rng.integers(1, 300, size=101).tolist()
    ks = (1, 5, 10, 20, 100)
    got = retrieval_metrics(ranks, ks)
    want = naive_metrics(ranks, ks)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_metrics_from_scores_single_relevant_equals_laion_clap_formula() -> None:
    # LAION-CLAP: preds = 0-based position of the paired item; R@k = mean(preds < k),
    # mAP@10 = mean(where(preds < 10, 1 / (preds + 1), 0)); continuous scores have no ties.
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((64, 64))
    relevant = [np.array([i]) for i in range(64)]
    metrics, ranks, ap = retrieval_metrics_from_scores(scores, relevant)
    preds = np.array([int(np.where(np.argsort(-scores[i]) == i)[0][0]) for i in range(64)])
    assert ranks.tolist() == (preds + 1).tolist()
    for k in (1, 5, 10):
        assert metrics[f"R@{k}"] == pytest.approx(np.mean(preds < k))
    assert metrics["mAP@10"] == pytest.approx(np.mean(np.where(preds < 10, 1 / (preds + 1), 0.0)))
    assert metrics["MeanR"] == pytest.approx(preds.mean() + 1)
    np.testing.assert_allclose(ap, np.where(ranks <= 10, 1.0 / ranks, 0.0))


# ------------------------------------------------------------------------------------------ hand-computed
def test_hand_computed_metrics() -> None:
    m = retrieval_metrics([1, 2, 5, 11])
    assert m["R@1"] == 0.25
    assert m["R@5"] == 0.75
    assert m["R@10"] == 0.75
    assert m["R@20"] == 1.0
    assert m["mAP@10"] == pytest.approx((1 + 0.5 + 0.2 + 0) / 4)
    assert m["MedR"] == 3.5  # even count: numpy median, x.5 allowed (MusCALL reports 81.5)
    assert m["MeanR"] == 4.75
    assert list(m) == ["R@1", "R@5", "R@10", "R@20", "R@100", "mAP@10", "MedR", "MeanR"]


def test_medr_odd_and_even() -> None:
    assert retrieval_metrics([3, 1, 2])["MedR"] == 2.0
    assert retrieval_metrics([1, 2])["MedR"] == 1.5
    assert retrieval_metrics([4, 1, 9, 2])["MedR"] == 3.0


def test_ties_hand_computed() -> None:
    scores = np.zeros((3, 4))
    relevant = [np.array([0]), np.array([1]), np.array([2])]
    assert ranks_from_scores(scores, relevant).tolist() == [4, 4, 4]  # default pessimistic
    assert ranks_from_scores(scores, relevant, ties="optimistic").tolist() == [1, 1, 1]
    assert ranks_from_scores(scores, relevant, ties="stable").tolist() == [1, 2, 3]
    # two relevant tied with one non-relevant, one better item above
    s = np.array([[0.5, 0.9, 0.5, 0.5]])
    rel = [np.array([2, 3])]
    assert ranks_from_scores(s, rel).tolist() == [3]
    assert ranks_from_scores(s, rel, ties="optimistic").tolist() == [2]
    assert ranks_from_scores(s, rel, ties="stable").tolist() == [3]  # index 0 (non-rel) comes first
    # a constant scorer gets no recall under the default
    assert retrieval_metrics_from_scores(np.ones((5, 5)), [np.array([i]) for i in range(5)])[0]["R@1"] == 0


def test_audio_to_text_best_caption_counts() -> None:
    # one clip, its captions are 0 and 1; caption 3 (another clip's) scores highest
    scores = np.array([[0.1, 0.9, 0.5, 0.95]])
    metrics, ranks, ap = retrieval_metrics_from_scores(scores, [np.array([0, 1])], ks=(1, 2))
    assert ranks.tolist() == [2]
    assert metrics["R@1"] == 0.0 and metrics["R@2"] == 1.0
    # ranked: [no, yes, no, yes] → AP = (1/2 + 2/4) / 2 relevant
    assert ap[0] == pytest.approx(0.5)


def test_ap_conventions_hand_computed() -> None:
    rel = np.array(
        [
            [1, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # 2 of 5 relevant found
            [1] * 10,  # 10 of 20 relevant found
            [0] * 10,  # none found
            [0, 0, 0, 0, 1, 0, 0, 0, 0, 0],  # single relevant at rank 5
        ],
        dtype=bool,
    )
    n_rel = np.array([5, 20, 3, 1])
    a = average_precision_at_k(rel, n_rel, k=10)  # default = n_relevant (DCASE 2023)
    np.testing.assert_allclose(a, [(1 + 2 / 3) / 5, 10 / 20, 0.0, 0.2])
    b = average_precision_at_k(rel, n_rel, k=10, normalize="min_k")
    np.testing.assert_allclose(b, [(1 + 2 / 3) / 5, 1.0, 0.0, 0.2])
    c = average_precision_at_k(rel, n_rel, k=10, normalize="retrieved")
    np.testing.assert_allclose(c, [(1 + 2 / 3) / 2, 1.0, 0.0, 0.2])
    # k=2 cuts the second hit at rank 3
    np.testing.assert_allclose(average_precision_at_k(rel[:1], n_rel[:1], k=2), [1 / 5])


def test_fewer_candidates_than_cutoff() -> None:
    scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    metrics, ranks, ap = retrieval_metrics_from_scores(scores, [np.array([0]), np.array([0])])
    assert ranks.tolist() == [3, 1]
    np.testing.assert_allclose(ap, [1 / 3, 1.0])
    assert metrics["R@100"] == 1.0


# ------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_properties() -> None:
    rng = np.random.default_rng(0)
    hits = (rng.random(1000) < 0.3).astype(float)
    lo, hi = bootstrap_ci(hits, n=1000, seed=0)
    assert lo < hits.mean() < hi
    half_width = 1.96 * math.sqrt(0.3 * 0.7 / 1000)  # normal approximation
    assert (hi - lo) == pytest.approx(2 * half_width, rel=0.15)
    assert bootstrap_ci(hits, n=1000, seed=0) == (lo, hi)  # seeded
    assert bootstrap_ci(np.full(50, 0.25)) == (0.25, 0.25)
    lo_small, hi_small = bootstrap_ci(hits[:100], n=1000, seed=0)
    assert hi_small - lo_small > hi - lo


def test_metrics_ci_paired_and_median() -> None:
    rng = np.random.default_rng(2)
    ranks = rng.integers(1, 50, size=200)
    values = per_query_values(ranks)
    ci = metrics_ci(values, n=300, seed=4)
    assert set(ci) == set(retrieval_metrics(ranks))
    assert ci["R@5"] == bootstrap_ci(values["R@5"], n=300, seed=4)
    assert ci["MedR"] == bootstrap_ci(values["MedR"], n=300, seed=4, statistic=np.median)
    point = retrieval_metrics(ranks)
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi, name


def _naive_cluster_ci(v: np.ndarray, groups: np.ndarray, n: int, seed: int, stat: str) -> tuple[float, float]:
    """The cluster bootstrap written plainly: draw G groups with replacement, join their queries."""
    labels = np.unique(groups)
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(n, len(labels)))
    out = []
    for row in draws:
        sample = np.concatenate([v[groups == labels[i]] for i in row])
        out.append(np.median(sample) if stat == "median" else sample.mean())
    lo, hi = np.quantile(out, [0.025, 0.975])
    return float(lo), float(hi)


def test_cluster_bootstrap_matches_a_plain_loop_and_the_query_bootstrap_when_each_query_is_its_own() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(40), rng.integers(1, 6, size=40))  # 40 tracks, 1-5 queries each
    ranks = rng.integers(1, 30, size=groups.size)
    values = per_query_values(ranks)
    ci = metrics_ci(values, n=200, seed=3, groups=groups)
    for name, v in values.items():
        want = _naive_cluster_ci(v, groups, 200, 3, "median" if name == "MedR" else "mean")
        assert ci[name] == pytest.approx(want, abs=1e-12), name
    assert bootstrap_ci(values["R@5"], n=200, seed=3, groups=groups) == ci["R@5"]
    # one query per group: exactly the query bootstrap's draws
    own = np.arange(groups.size)[::-1].copy()
    plain = metrics_ci(values, n=200, seed=3)
    clustered = metrics_ci(values, n=200, seed=3, groups=np.sort(own))
    for name in values:
        assert clustered[name] == pytest.approx(plain[name], abs=1e-12), name
    # string labels work; each sample draws as many queries as there are groups' queries on average
    w = cluster_weights([f"t{g}" for g in groups], n=50, seed=0)
    assert w.shape == (50, groups.size) and np.allclose(w.sum(axis=1).mean(), groups.size, rtol=0.2)


def test_cluster_bootstrap_is_wider_when_a_tracks_queries_move_together() -> None:
    rng = np.random.default_rng(8)
    per_track = (rng.random(100) < 0.5).astype(float)
    groups = np.repeat(np.arange(100), 5)
    hits = np.repeat(per_track, 5)  # five queries per track, all hit or all miss
    lo_q, hi_q = bootstrap_ci(hits, seed=1)
    lo_c, hi_c = bootstrap_ci(hits, seed=1, groups=groups)
    assert (hi_c - lo_c) > 1.8 * (hi_q - lo_q)  # sqrt(5) ≈ 2.2 times as wide in expectation
    with pytest.raises(UsageError, match="groups for"):
        bootstrap_ci(hits, groups=groups[:-1])
    with pytest.raises(UsageError, match="np.mean or np.median"):
        bootstrap_ci(hits, groups=groups, statistic=np.max)


def test_per_query_values_mean_is_metric() -> None:
    ranks = np.array([1, 3, 12, 7, 2])
    ap = np.array([1.0, 0.2, 0.0, 0.1, 0.5])
    values = per_query_values(ranks, ks=(1, 5), ap=ap)
    m = retrieval_metrics(ranks, ks=(1, 5), ap=ap)
    for name, v in values.items():
        stat = np.median(v) if name == "MedR" else np.mean(v)
        assert m[name] == pytest.approx(stat)
    assert m["mAP@10"] == pytest.approx(ap.mean())


# ------------------------------------------------------------------------------------------ score dtypes
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint64, np.int8, np.bool_])
@pytest.mark.parametrize("ties", TIES)
def test_integer_and_bool_scores_match_naive_reference(dtype: type, ties: str) -> None:
    # Small integer scores: many ties, and 0 among them (-uint8(0) == 0 but -uint8(1) == 255 if negated raw).
    rng = np.random.default_rng(13)
    high = 2 if dtype is np.bool_ else 6
    scores: np.ndarray = rng.integers(0, high, size=(30, 25)).astype(dtype)
    relevant = [rng.choice(25, size=int(rng.integers(1, 5)), replace=False) for _ in range(30)]
    metrics, ranks, ap = retrieval_metrics_from_scores(scores, relevant, ks=(1, 5, 10), ties=ties)  # type: ignore[arg-type]
    rel_sets = [set(r.tolist()) for r in relevant]
    want_ranks = [naive_first_rank(scores[i], rel_sets[i], ties) for i in range(30)]
    want_ap = [naive_ap(scores[i], rel_sets[i], 10, ties, "n_relevant") for i in range(30)]
    assert ranks.tolist() == want_ranks
    np.testing.assert_allclose(ap, want_ap, rtol=0, atol=1e-12)
    assert metrics["R@5"] == pytest.approx(np.mean(np.array(want_ranks) <= 5))
    assert metrics["mAP@10"] == pytest.approx(np.mean(want_ap))


def test_uint8_top_k_is_the_top_k() -> None:
    # Negating uint8 wraps (-1 -> 255): the depth-th best score was read as the worst, so low-scoring
    # candidates entered the top k and a row could even overflow its depth.
    scores = np.array([[0, 1, 2, 3, 200], [5, 4, 3, 2, 1]], dtype=np.uint8)
    rel, n_rel = ranked_relevance(scores, [np.array([4]), np.array([1])], depth=2)
    assert rel.tolist() == [[True, False], [False, True]] and n_rel.tolist() == [1, 1]


@pytest.mark.parametrize(
    "scores, match",
    [
        (np.array([[1 + 2j, 0j]]), "real numbers"),
        (np.array([["a", "b"]]), "real numbers"),
        (np.array([[2**60, 0]], dtype=np.int64), "2\\*\\*53"),
    ],
)
def test_scores_that_float64_cannot_hold_raise(scores: np.ndarray, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        ranks_from_scores(scores, [np.array([0])])


# ------------------------------------------------------------------------------------------ segment IoU
def test_segment_iou() -> None:
    assert segment_iou(0, 10, 5, 15) == pytest.approx(5 / 15)
    assert segment_iou(0, 10, 0, 10) == 1.0
    assert segment_iou(0, 10, 10, 20) == 0.0
    assert segment_iou(0, 10, 30, 40) == 0.0
    assert segment_iou(2, 4, 0, 10) == pytest.approx(0.2)
    rng = np.random.default_rng(1)
    a = np.sort(rng.uniform(0, 100, size=(50, 2)), axis=1)
    b = np.sort(rng.uniform(0, 100, size=(50, 2)), axis=1)
    got = segment_iou(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    for i in range(50):
        inter = max(0.0, min(a[i, 1], b[i, 1]) - max(a[i, 0], b[i, 0]))
        union = (a[i, 1] - a[i, 0]) + (b[i, 1] - b[i, 0]) - inter
        assert got[i] == pytest.approx(inter / union)


def test_segment_iou_refuses_a_missing_segment() -> None:
    # NaN bounds used to give IoU 0 silently; a missing segment is the caller's to count (as 0) and report.
    with pytest.raises(UsageError, match="finite"):
        segment_iou(np.array([0.0, np.nan]), np.array([10.0, np.nan]), 0.0, 10.0)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "scores, relevant, match",
    [
        (np.array([[0.1, np.nan]]), [np.array([0])], "finite"),
        (np.zeros((1, 3)), [np.array([], dtype=int)], "no relevant"),
        (np.zeros((1, 3)), [np.array([3])], "out of range"),
        (np.zeros((2, 3)), [np.array([0])], "rows"),
        (np.zeros(3), [np.array([0])], "2-D"),
    ],
)
def test_bad_inputs_raise(scores: np.ndarray, relevant: list[np.ndarray], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        ranks_from_scores(scores, relevant)


def test_bad_options_raise() -> None:
    with pytest.raises(UsageError, match="ties"):
        ranks_from_scores(np.zeros((1, 2)), [np.array([0])], ties="random")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="normalize"):
        average_precision_at_k(np.zeros((1, 10), bool), [1], normalize="x")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="1-based"):
        retrieval_metrics([0, 1])
    with pytest.raises(UsageError, match="more relevant"):
        average_precision_at_k(np.ones((1, 10), bool), [2])


# ------------------------------------------------------------------------------------------ ranked id lists
def test_ranked_lists_agree_with_scores() -> None:
    rng = np.random.default_rng(9)
    scores = rng.standard_normal((30, 50))  # continuous: no ties
    relevant = [rng.choice(50, size=int(rng.integers(1, 4)), replace=False) for _ in range(30)]
    ids = [f"t{j}" for j in range(50)]
    ranked = [[ids[j] for j in np.argsort(-row)] for row in scores]
    rel_ids = [{ids[j] for j in r} for r in relevant]
    ranks, found = first_ranks_from_lists(ranked, rel_ids, n_candidates=50)
    assert found.all()
    assert ranks.tolist() == ranks_from_scores(scores, relevant).tolist()
    rel_l, n_l = ranked_relevance_from_lists(ranked, rel_ids, depth=10)
    rel_s, n_s = ranked_relevance(scores, relevant, depth=10)
    assert rel_l.tolist() == rel_s.tolist() and n_l.tolist() == n_s.tolist()
    # truncated lists: misses get the worst rank, R@K for K <= depth unchanged
    short = [r[:10] for r in ranked]
    ranks_t, found_t = first_ranks_from_lists(short, rel_ids, n_candidates=50)
    assert (found_t == (ranks <= 10)).all()
    assert ranks_t[found_t].tolist() == ranks[found_t].tolist() and (ranks_t[~found_t] == 50).all()
    for k in (1, 5, 10):
        assert retrieval_metrics(ranks_t)[f"R@{k}"] == retrieval_metrics(ranks)[f"R@{k}"]


def test_ranked_lists_errors() -> None:
    with pytest.raises(UsageError, match="twice"):
        first_ranks_from_lists([["a", "b", "a"]], [{"b"}], n_candidates=3)
    with pytest.raises(UsageError, match="no relevant id"):
        ranked_relevance_from_lists([["a"]], [set()])
    with pytest.raises(UsageError, match="longer"):
        first_ranks_from_lists([["a", "b"]], [{"a"}], n_candidates=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_directions_of_a_captioned_set_match_a_plain_loop(seed: int) -> None:
    # T tracks with 1-5 captions each, scores on a coarse grid (many ties). audio→text: a track's hit is any
    # of its captions, AP@10 over its n captions; text→audio: each caption has its one track. Every figure
    # is recomputed with loops: pessimistic ties (relevant after tied non-relevant), MedR = median.
    rng = np.random.default_rng(seed)
    n_tracks = 23
    owner = [t for t in range(n_tracks) for _ in range(int(rng.integers(1, 6)))]
    sim = np.round(rng.random((n_tracks, len(owner))) * 4) / 4  # 5 levels: ties everywhere
    a2t_rel = [[c for c, o in enumerate(owner) if o == t] for t in range(n_tracks)]
    t2a_rel = [[o] for o in owner]
    for scores, rel in ((sim, a2t_rel), (sim.T.copy(), t2a_rel)):
        got, ranks, ap = retrieval_metrics_from_scores(scores, [np.array(r) for r in rel], ks=(1, 5, 10))
        first, aps = [], []
        for q, relevant in enumerate(rel):
            # rank = 1 + candidates placed before the best relevant one (ties: non-relevant first)
            best = max(scores[q, j] for j in relevant)
            first.append(1 + sum(1 for j in range(scores.shape[1])
                                 if scores[q, j] > best or (scores[q, j] == best and j not in relevant)))
            order = sorted(range(scores.shape[1]), key=lambda j: (-scores[q, j], j in relevant, j))
            aps.append(naive_ap_at_10(order, relevant))
        assert ranks.tolist() == first
        np.testing.assert_allclose(ap, aps, rtol=0, atol=1e-12)
        for k in (1, 5, 10):
            assert got[f"R@{k}"] == pytest.approx(sum(r <= k for r in first) / len(first))
        s = sorted(first)
        mid = len(s) // 2
        assert got["MedR"] == (s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2)
        assert got["MeanR"] == pytest.approx(sum(first) / len(first))
        assert got["mAP@10"] == pytest.approx(sum(aps) / len(aps))
