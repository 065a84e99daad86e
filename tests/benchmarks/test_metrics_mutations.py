"""Guards and edge cases of benchmarks/metrics.py that a mutation sweep found unpinned.

Each test checks the product against a plain computation or the documented refusal (UsageError with its
message), never against the module's own helpers.
"""

from __future__ import annotations

import numpy as np
import pytest

from songseek.benchmarks.metrics import (
    average_precision_at_k,
    bootstrap_ci,
    first_ranks_from_lists,
    metrics_ci,
    per_query_values,
    ranked_relevance,
    ranked_relevance_from_lists,
    ranks_from_scores,
    relevance_mask,
    retrieval_metrics,
    segment_iou,
)
from songseek.engine.errors import UsageError
from tests.metric_reference import naive_ap_at_10


# ------------------------------------------------------------------------------------------ score inputs
def test_negative_relevant_index_is_refused_not_wrapped() -> None:
    # numpy would read -1 as the last candidate: a silently wrong relevance set.
    with pytest.raises(UsageError, match="out of range"):
        relevance_mask([np.array([-1])], 3)
    with pytest.raises(UsageError, match="out of range"):
        ranks_from_scores(np.array([[0.1, 0.2, 0.9]]), [np.array([-1])])


def test_scores_without_candidate_columns_say_so() -> None:
    with pytest.raises(UsageError, match="no candidate columns"):
        ranks_from_scores(np.zeros((1, 0)), [np.array([0])])


@pytest.mark.parametrize("value", [-(2**60), 2**60, -(2**53) - 2])
def test_integer_scores_beyond_float64_exact_range_raise_on_either_sign(value: int) -> None:
    scores = np.array([[value, 0]], dtype=np.int64)
    with pytest.raises(UsageError, match="2\\*\\*53"):
        ranks_from_scores(scores, [np.array([1])])


def test_integer_scores_at_the_exact_limit_are_accepted() -> None:
    scores = np.array([[-(2**53), 0, 2**53]], dtype=np.int64)
    assert ranks_from_scores(scores, [np.array([1])]).tolist() == [2]  # 2**53 above it, -2**53 below


def test_ranked_relevance_depth_below_one_raises() -> None:
    with pytest.raises(UsageError, match="depth must be >= 1"):
        ranked_relevance(np.zeros((1, 3)), [np.array([0])], depth=0)


# ------------------------------------------------------------------------------------------ ranked id lists
def test_ranked_relevance_from_lists_counts_distinct_relevant_ids() -> None:
    ranked = [["a", "x", "b", "y"], ["y", "x", "c"]]
    relevant = [["a", "a", "b", "b", "c"], ["c", "c"]]  # duplicates in the ground truth
    rel, n_rel = ranked_relevance_from_lists(ranked, relevant, depth=4)
    assert n_rel.tolist() == [3, 1]
    assert rel.tolist() == [[True, False, True, False], [False, False, True, False]]
    ap = average_precision_at_k(rel, n_rel, k=4)
    want = [naive_ap_at_10(r, set(want_rel)) for r, want_rel in zip(ranked, relevant, strict=True)]
    np.testing.assert_allclose(ap, want, rtol=0, atol=1e-12)


def test_ranked_relevance_from_lists_refuses_mismatch_and_duplicates() -> None:
    with pytest.raises(UsageError, match="2 ranked lists but 1 relevant sets"):
        ranked_relevance_from_lists([["a"], ["b"]], [{"a"}])
    with pytest.raises(UsageError, match="twice"):
        ranked_relevance_from_lists([["a", "b", "a"]], [{"b"}])


def test_first_ranks_from_lists_refuses_a_length_mismatch() -> None:
    with pytest.raises(UsageError, match="1 ranked lists but 2 relevant sets"):
        first_ranks_from_lists([["a"]], [{"a"}, {"b"}], n_candidates=3)


# ------------------------------------------------------------------------------------------ AP@k arguments
def test_ap_k_below_one_raises() -> None:
    with pytest.raises(UsageError, match="k must be >= 1"):
        average_precision_at_k(np.ones((1, 10), bool), [10], k=0)


def test_ap_fewer_columns_than_k_raises_usage_error() -> None:
    with pytest.raises(UsageError, match="fewer than k=10"):
        average_precision_at_k(np.zeros((1, 9), bool), [1], k=10)


def test_ap_zero_relevant_raises_even_without_hits() -> None:
    with pytest.raises(UsageError, match="n_relevant >= 1"):
        average_precision_at_k(np.zeros((2, 10), bool), [1, 0])


# ------------------------------------------------------------------------------------------ rank inputs
def test_fractional_ranks_are_refused_and_whole_float_ranks_accepted() -> None:
    with pytest.raises(UsageError, match="whole numbers"):
        retrieval_metrics([1.5, 2.0])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="whole numbers"):
        per_query_values(np.array([1.0, np.inf]))
    got = retrieval_metrics(np.array([1.0, 3.0, 12.0]), ks=(1, 5))
    assert got == {"R@1": 1 / 3, "R@5": 2 / 3, "mAP@10": (1 + 1 / 3) / 3, "MedR": 3.0, "MeanR": 16 / 3}


def test_empty_ks_raises_usage_error() -> None:
    with pytest.raises(UsageError, match="ks must be positive"):
        retrieval_metrics([1, 2], ks=())


def test_ap_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(UsageError, match="ap has shape"):
        retrieval_metrics([1, 2, 3], ap=np.array([1.0, 0.5]))


# ------------------------------------------------------------------------------------------ bootstrap arguments
@pytest.mark.parametrize("n, level", [(0, 0.95), (100, 0.0), (100, 1.0), (100, 1.5), (100, -0.1)])
def test_ci_arguments_out_of_range_raise(n: int, level: float) -> None:
    values = per_query_values([1, 2, 3, 4])
    with pytest.raises(UsageError, match="n >= 1 and 0 < level < 1"):
        bootstrap_ci(values["R@1"], n=n, level=level)
    with pytest.raises(UsageError, match="n >= 1 and 0 < level < 1"):
        metrics_ci(values, n=n, level=level)


def test_ci_of_nothing_raises_usage_error() -> None:
    with pytest.raises(UsageError, match="at least one value"):
        bootstrap_ci([])
    with pytest.raises(UsageError, match="one non-zero length"):
        metrics_ci({"R@1": np.array([]), "MedR": np.array([])})


def test_metrics_ci_refuses_groups_of_the_wrong_length() -> None:
    values = per_query_values([1, 2, 3, 4])
    with pytest.raises(UsageError, match="3 groups for 4 queries"):
        metrics_ci(values, n=10, groups=["a", "a", "b"])


# ------------------------------------------------------------------------------------------ segment IoU
def test_segment_iou_refuses_a_reversed_true_segment() -> None:
    with pytest.raises(UsageError, match="ends must not come before"):
        segment_iou(0.0, 10.0, 8.0, 4.0)


def test_segment_iou_of_empty_segments_is_zero_not_nan() -> None:
    got = segment_iou(np.array([5.0, 5.0, 2.0]), np.array([5.0, 5.0, 2.0]), np.array([5.0, 0.0, 0.0]),
                      np.array([5.0, 10.0, 2.0]))
    assert got.tolist() == [0.0, 0.0, 0.0]  # both empty; empty inside a segment; empty on its end
