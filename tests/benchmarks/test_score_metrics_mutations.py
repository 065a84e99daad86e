"""Guards of benchmarks/score_metrics.py that a mutation sweep found unpinned: degenerate inputs must
raise UsageError (callers skip such labels and say so), never return NaN/inf or a numpy error."""

from __future__ import annotations

import numpy as np
import pytest

from songseek.benchmarks.score_metrics import (
    accuracy,
    average_precision,
    kendall_tau,
    mse,
    partial_auc,
    pearson,
    roc_auc,
    roc_curve,
    spearman,
)
from songseek.engine.errors import UsageError
from tests.benchmarks.test_score_metrics import naive_tau_b

METRICS = [roc_auc, average_precision, roc_curve, partial_auc]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("labels", [np.zeros(5, bool), np.ones(5, bool)], ids=["all-negative", "all-positive"])
def test_one_class_labels_raise(metric, labels: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="one positive and one negative"):
        metric(labels, np.arange(5.0))


@pytest.mark.parametrize("metric", METRICS)
def test_labels_and_scores_of_different_lengths_raise(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="4 labels but 5 scores"):
        metric(np.array([0, 1, 0, 1]), np.arange(5.0))


@pytest.mark.parametrize("max_fpr", [0.0, -0.1, 1.0001, 2.0])
def test_partial_auc_max_fpr_outside_zero_one_raises(max_fpr: float) -> None:
    y, s = np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.9, 0.4, 0.3, 0.8])
    with pytest.raises(UsageError, match="max_fpr must be in"):
        partial_auc(y, s, max_fpr=max_fpr)


def test_partial_auc_at_one_is_the_pairwise_auc() -> None:
    # the inclusive upper bound: max_fpr=1 is allowed and equals P(pos > neg) + ties/2, counted by hand
    y, s = np.array([0, 1, 0, 1, 1, 0]), np.array([0.1, 0.9, 0.4, 0.4, 0.8, 0.95])
    pos, neg = s[y == 1], s[y == 0]
    want = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (len(pos) * len(neg))
    assert partial_auc(y, s, max_fpr=1.0) == pytest.approx(want, abs=1e-12)


PAIRED = [mse, pearson, spearman, kendall_tau]


def test_accuracy_of_nothing_raises() -> None:
    with pytest.raises(UsageError, match="equal, non-empty arrays"):
        accuracy(np.array([]), np.array([]))


@pytest.mark.parametrize("metric", PAIRED)
def test_paired_metrics_refuse_short_or_unequal_series(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="at least 2 values \\(got 1, 1\\)"):
        metric(np.array([1.0]), np.array([2.0]))
    with pytest.raises(UsageError, match="at least 2 values \\(got 3, 4\\)"):
        metric(np.arange(3.0), np.arange(4.0))


@pytest.mark.parametrize("metric", PAIRED)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_paired_metrics_refuse_non_finite_values_in_either_series(metric, bad: float) -> None:  # type: ignore[no-untyped-def]
    good, broken = np.arange(4.0), np.array([0.0, 1.0, bad, 3.0])
    with pytest.raises(UsageError, match="NaN or inf"):
        metric(good, broken)
    with pytest.raises(UsageError, match="NaN or inf"):
        metric(broken, good)


@pytest.mark.parametrize("metric", [pearson, spearman, kendall_tau])
def test_correlation_with_a_constant_series_raises(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="constant series"):
        metric(np.full(6, 2.5), np.arange(6.0))
    with pytest.raises(UsageError, match="constant series"):
        metric(np.arange(6.0), np.full(6, 2.5))


def test_kendall_tau_is_the_same_for_every_block_size() -> None:
    # pairs counted by a plain loop (tau-b); blocks of 1, 7 (8 values: the last block holds one row), n, > n
    rng = np.random.default_rng(2)
    x = np.round(rng.standard_normal(8), 0)
    y = np.round(x + rng.standard_normal(8), 0)
    want = naive_tau_b(x, y)
    for block in (1, 3, 7, 8, 100):
        assert kendall_tau(x, y, block=block) == pytest.approx(want, abs=1e-12), block
