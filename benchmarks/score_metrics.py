"""Pure metrics for scores (tagging, anomaly detection, opinion scores), numpy only.

- ``roc_auc``: area under the ROC curve = P(score of a random positive > a random negative), ties
  counted 1/2 (the Mann-Whitney U statistic; equals scikit-learn's ``roc_auc_score``).
- ``partial_auc``: the ROC area over FPR in [0, max_fpr] (default 0.1, DCASE 2020 Task 2), the curve
  interpolated linearly at max_fpr, McClish-standardised (0.5 random, 1 perfect) exactly as
  scikit-learn's ``roc_auc_score(max_fpr=0.1)``, which the DCASE 2020 baseline reports as pAUC;
  ``mcclish=False`` gives the plain area divided by max_fpr (0.05 random, 1 perfect).
- ``average_precision`` (PR-AUC): sum over thresholds of (R_n - R_{n-1}) P_n, the step interpolation
  scikit-learn's ``average_precision_score`` uses (MusCALL's and MTAT papers' PR-AUC).
- ``pearson`` (LCC), ``spearman`` (SRCC: Pearson of average ranks), ``kendall_tau`` (tau-b, ties
  corrected, as ``scipy.stats.kendalltau``), ``mse``.

Arrays: ``labels`` bool/0-1 (n,), ``scores`` (n,) of any real dtype, cast to float64 on entry (so
unsigned scores never wrap when subtracted or negated), higher = more positive. Degenerate inputs
(one class only, constant series) raise UsageError; callers skip those labels and say so.
"""

from __future__ import annotations

import numpy as np

from songseek.engine.errors import UsageError


def _as_float(x: np.ndarray, what: str) -> np.ndarray:
    """float64 (n,) copy: the one cast every metric goes through (uint8 - uint8 would wrap)."""
    a = np.asarray(x)
    if not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise UsageError(f"{what} must be real numbers (bool, integer or float), got dtype {a.dtype}")
    return a.astype(np.float64).reshape(-1)


def _binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = _as_float(scores, "scores")
    if len(y) != len(s):
        raise UsageError(f"{len(y)} labels but {len(s)} scores")
    if not np.isfinite(s).all():
        raise UsageError("scores contain NaN or inf")
    if y.all() or not y.any():
        raise UsageError("ROC/PR metrics need at least one positive and one negative example")
    return y, s


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x float (n,), ties sharing their average rank (float64 (n,))."""
    x = _as_float(x, "values")
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions starts+1 .. ends
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    y, s = _binary(labels, scores)
    r = average_ranks(s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) float64 at every distinct threshold, from (0, 0) to (1, 1)."""
    y, s = _binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), len(ss) - 1]  # end of each tie group
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def partial_auc(labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.1, mcclish: bool = True) -> float:
    if not 0.0 < max_fpr <= 1.0:
        raise UsageError(f"max_fpr must be in (0, 1], got {max_fpr}")
    fpr, tpr = roc_curve(labels, scores)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    x, y = list(fpr[:stop]), list(tpr[:stop])
    if stop < len(fpr) and x[-1] < max_fpr:
        x.append(max_fpr)
        y.append(float(np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1])))
    area = float(np.trapezoid(y, x))
    if not mcclish:
        return area / max_fpr
    lo, hi = 0.5 * max_fpr ** 2, max_fpr
    return 0.5 * (1.0 + (area - lo) / (hi - lo))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    y, s = _binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), len(ss) - 1]
    tp = np.cumsum(ys)[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    t, p = np.asarray(true).reshape(-1), np.asarray(predicted).reshape(-1)
    if len(t) != len(p) or len(t) == 0:
        raise UsageError(f"accuracy needs equal, non-empty arrays (got {len(t)} and {len(p)})")
    return float(np.mean(t == p))


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_float(x, "values"), _as_float(y, "values")
    if len(a) != len(b) or len(a) < 2:
        raise UsageError(f"correlations need two equal series of at least 2 values (got {len(a)}, {len(b)})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise UsageError("values contain NaN or inf")
    return a, b


def mse(x: np.ndarray, y: np.ndarray) -> float:
    a, b = _pair(x, y)
    return float(np.mean((a - b) ** 2))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    a, b = _pair(x, y)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den == 0:
        raise UsageError("correlation of a constant series is undefined")
    return float((a * b).sum() / den)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    a, b = _pair(x, y)
    return pearson(average_ranks(a), average_ranks(b))


def kendall_tau(x: np.ndarray, y: np.ndarray, block: int = 2048) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)), O(n²) in blocks."""
    a, b = _pair(x, y)
    n = len(a)
    s = 0.0
    tx = ty = 0.0
    for i in range(0, n, block):
        da = np.sign(a[i:i + block, None] - a[None, :])
        db = np.sign(b[i:i + block, None] - b[None, :])
        s += float((da * db).sum())
        tx += float((da == 0).sum())
        ty += float((db == 0).sum())
    # every pair counted twice; the diagonal (n self-pairs) counts as a tie in both
    n0 = n * (n - 1) / 2.0
    ties_x, ties_y = (tx - n) / 2.0, (ty - n) / 2.0
    den = np.sqrt((n0 - ties_x) * (n0 - ties_y))
    if den == 0:
        raise UsageError("correlation of a constant series is undefined")
    return float(s / 2.0 / den)
