"""Score metrics against naive pairwise / loop references on seeded data (and scipy when installed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from songseek.benchmarks.score_metrics import (
    accuracy,
    average_precision,
    average_ranks,
    kendall_tau,
    mse,
    partial_auc,
    pearson,
    roc_auc,
    roc_curve,
    spearman,
)
from songseek.engine.errors import UsageError


def data(seed: int, n: int = 80, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.35
    y[:2] = [True, False]
    s = rng.standard_normal(n) + 1.2 * y
    return y, np.round(s, 1) if ties else s


def naive_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    return float(np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg]))


def naive_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Sum over distinct thresholds (high to low) of (recall gain) x precision at that threshold."""
    total, prev_recall = 0.0, 0.0
    for thr in sorted(set(s.tolist()), reverse=True):
        sel = s >= thr
        tp = (sel & y).sum()
        recall = tp / y.sum()
        total += (recall - prev_recall) * tp / sel.sum()
        prev_recall = recall
    return float(total)


def naive_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if a == 0 and b == 0:
            continue
        if a == 0:
            tx += 1
        elif b == 0:
            ty += 1
        elif a == b:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / np.sqrt((conc + disc + tx) * (conc + disc + ty))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [True, False])
def test_roc_auc_and_ap_match_naive(seed: int, ties: bool) -> None:
    y, s = data(seed, ties=ties)
    assert roc_auc(y, s) == pytest.approx(naive_auc(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(naive_ap(y, s), abs=1e-12)


def test_known_values() -> None:  # scikit-learn's documented examples
    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, s) == pytest.approx(0.75)
    assert average_precision(y, s) == pytest.approx(0.8333333333)


def test_partial_auc_properties() -> None:
    y, s = data(7, n=200, ties=False)
    assert partial_auc(y, s, max_fpr=1.0) == pytest.approx(roc_auc(y, s))  # McClish at 1 = AUC
    assert partial_auc(y, s, max_fpr=1.0, mcclish=False) == pytest.approx(roc_auc(y, s))
    assert partial_auc(y, y.astype(float) + 0.0, 0.1) == pytest.approx(1.0)  # perfect
    assert partial_auc(y, -y.astype(float), 0.1, mcclish=False) == pytest.approx(0.0)  # all wrong


def test_partial_auc_matches_fine_grid_integration() -> None:
    y, s = data(3, n=300, ties=False)
    fpr, tpr = roc_curve(y, s)
    grid = np.linspace(0, 0.1, 200001)
    area = np.trapezoid(np.interp(grid, fpr, tpr), grid)  # the ROC curve is piecewise linear
    assert partial_auc(y, s, 0.1, mcclish=False) == pytest.approx(area / 0.1, abs=1e-6)
    mc = 0.5 * (1 + (area - 0.005) / (0.1 - 0.005))
    assert partial_auc(y, s, 0.1) == pytest.approx(mc, abs=1e-6)


def test_roc_curve_ends() -> None:
    y, s = data(1)
    fpr, tpr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


@pytest.mark.parametrize("seed", range(3))
def test_correlations_match_naive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(60), 1)
    y = np.round(x + rng.standard_normal(60), 1)
    assert kendall_tau(x, y, block=7) == pytest.approx(naive_tau_b(x, y), abs=1e-12)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert spearman(x, y) == pytest.approx(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1], abs=1e-12)
    assert mse(x, y) == pytest.approx(np.mean((x - y) ** 2))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_unsigned_scores_match_naive_on_python_ints(dtype: type) -> None:
    # Unsigned arrays wrap on subtraction/negation (uint8 1 - 2 == 255); the references below use Python
    # ints, which do not, so a metric that skipped the float64 cast would disagree with them.
    rng = np.random.default_rng(4)
    y = rng.random(70) < 0.4
    y[:2] = [True, False]
    s: np.ndarray = rng.integers(0, 9, size=70).astype(dtype)
    t: np.ndarray = rng.integers(0, 9, size=70).astype(dtype)
    si, ti = [int(v) for v in s], [int(v) for v in t]
    pos, neg = [v for v, lab in zip(si, y) if lab], [v for v, lab in zip(si, y) if not lab]
    auc = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(auc, abs=1e-12)
    assert average_precision(y, s) == pytest.approx(naive_ap(y, np.array(si, dtype=np.int64)), abs=1e-12)
    assert mse(s, t) == pytest.approx(sum((a - b) ** 2 for a, b in zip(si, ti)) / 70)
    signed_s, signed_t = np.array(si, dtype=np.int64), np.array(ti, dtype=np.int64)
    assert kendall_tau(s, t, block=9) == pytest.approx(naive_tau_b(signed_s, signed_t), abs=1e-12)
    assert pearson(s, t) == pytest.approx(np.corrcoef(signed_s, signed_t)[0, 1], abs=1e-12)


def test_non_numeric_scores_raise_one_clear_error() -> None:
    with pytest.raises(UsageError, match="scores must be real numbers"):
        roc_auc(np.array([0, 1]), np.array(["a", "b"]))
    with pytest.raises(UsageError, match="values must be real numbers"):
        pearson(np.array([1 + 1j, 2j, 3j]), np.arange(3.0))


def test_against_scipy_when_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(9)
    x = np.round(rng.standard_normal(300), 1)
    y = np.round(x + rng.standard_normal(300), 1)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    np.testing.assert_allclose(average_ranks(x), stats.rankdata(x))


def test_average_ranks() -> None:
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_degenerate_inputs_raise() -> None:
    with pytest.raises(UsageError):
        roc_auc(np.ones(4, bool), np.arange(4.0))
    with pytest.raises(UsageError):
        pearson(np.ones(5), np.arange(5.0))
    with pytest.raises(UsageError):
        roc_auc(np.array([0, 1]), np.array([np.nan, 1.0]))
    with pytest.raises(UsageError):
        accuracy(np.array([1]), np.array([1, 2]))
    assert accuracy(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)


def naive_pauc_sklearn(y: np.ndarray, s: np.ndarray, max_fpr: float) -> float:
    """scikit-learn's roc_auc_score(max_fpr=...) (the DCASE 2020 baseline's pAUC), step by step: the ROC
    points at every distinct threshold, cut at max_fpr with a linear interpolation, trapezoids, McClish."""
    fpr, tpr = [0.0], [0.0]
    for thr in sorted(set(s.tolist()), reverse=True):
        sel = s >= thr
        fpr.append(float((sel & ~y).sum() / (~y).sum()))
        tpr.append(float((sel & y).sum() / y.sum()))
    f, t = np.array(fpr), np.array(tpr)
    stop = int(np.searchsorted(f, max_fpr, "right"))
    x = np.append(f[:stop], max_fpr)
    yy = np.append(t[:stop], np.interp(max_fpr, f[stop - 1:stop + 1], t[stop - 1:stop + 1]))
    area = float(np.sum(np.diff(x) * (yy[1:] + yy[:-1]) / 2))
    lo, hi = 0.5 * max_fpr ** 2, max_fpr
    return 0.5 * (1 + (area - lo) / (hi - lo))


@pytest.mark.parametrize("seed", range(6))
def test_partial_auc_matches_sklearn_algorithm_with_ties_and_fpr_on_a_vertex(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(50) < 0.4
    y[:2] = [True, False]
    s = np.round(rng.standard_normal(50) + y, 0)  # few distinct values: tie groups span the cut
    n_neg = int((~y).sum())
    for max_fpr in (0.05, 0.1, 0.3, 1 / n_neg, 3 / n_neg):  # k / n_neg: the cut falls on an ROC vertex
        assert partial_auc(y, s, max_fpr) == pytest.approx(naive_pauc_sklearn(y, s, max_fpr), abs=1e-12)
