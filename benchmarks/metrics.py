"""Retrieval metrics, pure: similarity scores or ranks in, numbers out.

Conventions (docs/benchmarks.md has the formulas and where each comes from):

* Ranks are 1-based. A query's *first rank* is the rank of its best-ranked relevant candidate, so with
  several relevant candidates (five captions per clip for audio→text, several tracks for a query) a
  query counts as a hit at K when *any* relevant candidate is in the top K (LAION-CLAP, MusCALL).
* Ties (equal scores) are broken **pessimistically** by default: a relevant candidate is placed after
  every non-relevant candidate with the same score, so a degenerate scorer (all scores equal) gets
  rank N, never rank 1. ``ties="optimistic"`` places it before them; ``ties="stable"`` orders tied
  candidates by candidate index (what a stable sort of ``-scores`` gives).
* ``R@K`` = fraction of queries with first rank ≤ K (a fraction in [0, 1], not a percentage).
* ``mAP@10``: with one relevant candidate per query AP@10 = 1/rank if rank ≤ 10 else 0 (DCASE 2022,
  LAION-CLAP). With several relevant candidates AP@k = Σ_{i≤k} P(i)·rel(i) / D where the divisor D is
  chosen by ``normalize``: ``"n_relevant"`` (default; D = number of relevant candidates, as the DCASE
  2023 baseline and LAION-CLAP's Clotho audio→text evaluation do), ``"min_k"`` (D = min(n_relevant, k),
  the usual IR definition, reaches 1 when the top k are all relevant) or ``"retrieved"`` (D = number of
  relevant candidates within the top k, the DCASE 2022 baseline; 0 when none). All three equal 1/rank
  when there is one relevant candidate.
* ``MedR`` = ``numpy.median`` of the 1-based first ranks, so an even number of queries can give x.5
  (MusCALL reports 81.5). LAION-CLAP's code reports floor(median(rank - 1)) + 1 instead, which is an
  integer and can be up to 0.5 lower. ``MeanR`` = mean first rank.

Arrays: ``scores`` (Q, N), query q against candidate n, higher is better, any real dtype (bool, signed
or unsigned integer, float), cast to float64 on entry (integers beyond ±2**53 are refused, float64 cannot
hold them exactly); ``relevant`` a sequence of Q integer arrays of candidate indices; ranks int64 (Q,).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Literal

import numpy as np

from songseek.engine.errors import UsageError

TieRule = Literal["pessimistic", "optimistic", "stable"]
APNormalize = Literal["n_relevant", "min_k", "retrieved"]
Groups = np.ndarray | Sequence[Hashable]  # one cluster label per query (cluster bootstrap)

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 100)
TIE_RULES: tuple[str, ...] = ("pessimistic", "optimistic", "stable")
AP_NORMALIZE: tuple[str, ...] = ("n_relevant", "min_k", "retrieved")


def relevance_mask(relevant: Sequence[np.ndarray | Sequence[int]], n_candidates: int) -> np.ndarray:
    """bool (Q, N): True where candidate n is relevant to query q. Raises UsageError on a bad index
    or on a query without any relevant candidate (it has no rank)."""
    mask = np.zeros((len(relevant), n_candidates), dtype=bool)
    for q, rel in enumerate(relevant):
        idx = np.asarray(rel, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise UsageError(f"query {q} has no relevant candidate; drop it before computing ranks")
        if idx.min() < 0 or idx.max() >= n_candidates:
            raise UsageError(f"query {q}: relevant index out of range 0..{n_candidates - 1} (got {idx.tolist()})")
        mask[q, idx] = True
    return mask


_EXACT_INT = 2**53  # integers up to this size are exact in float64


def _check_scores(scores: np.ndarray, n_queries: int) -> np.ndarray:
    """float64 (Q, N) copy of ``scores``. The cast is the boundary: unsigned or narrow integer scores
    would wrap when negated (``-np.uint8(1) == 255``), which silently reorders the ranking."""
    s = np.asarray(scores)
    if s.ndim != 2:
        raise UsageError(f"scores must be a 2-D array (queries, candidates), got shape {s.shape}")
    if s.shape[0] != n_queries:
        raise UsageError(f"scores has {s.shape[0]} rows but relevant lists {n_queries} queries")
    if s.shape[1] == 0:
        raise UsageError("scores has no candidate columns")
    if not (s.dtype == np.bool_ or np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)):
        raise UsageError(f"scores must be real numbers (bool, integer or float), got dtype {s.dtype}")
    if np.issubdtype(s.dtype, np.integer) and s.size and max(abs(int(s.min())), abs(int(s.max()))) > _EXACT_INT:
        raise UsageError(f"integer scores beyond ±2**53 are not exact as float64; rescale them (got {s.dtype})")
    f = s.astype(np.float64, copy=False)  # callers never write to it: float64 input is not copied
    if not np.all(np.isfinite(f)):
        raise UsageError("scores must be finite numbers (found NaN or inf)")
    return f


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise UsageError(f"ties must be one of {', '.join(TIE_RULES)}, got {ties!r}")


def ranks_from_scores(
    scores: np.ndarray,
    relevant: Sequence[np.ndarray | Sequence[int]],
    ties: TieRule = "pessimistic",
) -> np.ndarray:
    """int64 (Q,): 1-based rank of the best-ranked relevant candidate of each query.

    ``scores`` float (Q, N), higher = better; ``relevant[q]`` int array of candidate indices relevant to
    query q (at least one). ``ties`` as in the module docstring (default pessimistic).
    """
    _check_ties(ties)
    s = _check_scores(scores, len(relevant))
    mask = relevance_mask(relevant, s.shape[1])
    best = np.where(mask, s, -np.inf).max(axis=1, keepdims=True)  # best relevant score per query
    above = (s > best).sum(axis=1)  # all of these are non-relevant (best is the max relevant score)
    if ties == "optimistic":
        return (1 + above).astype(np.int64)
    tied_other = (s == best) & ~mask
    if ties == "pessimistic":
        return (1 + above + tied_other.sum(axis=1)).astype(np.int64)
    # stable: tied candidates in index order; the first relevant candidate at the best score wins
    first_rel = np.argmax(mask & (s == best), axis=1)
    before = np.arange(s.shape[1])[None, :] < first_rel[:, None]
    return (1 + above + (tied_other & before).sum(axis=1)).astype(np.int64)


def ranked_relevance(
    scores: np.ndarray,
    relevant: Sequence[np.ndarray | Sequence[int]],
    depth: int = 10,
    ties: TieRule = "pessimistic",
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of the top ``depth`` candidates of each query, in ranked order, with ties as in
    :func:`ranks_from_scores`.

    Returns (bool (Q, min(depth, N)), int64 (Q,) number of relevant candidates per query). Feed both to
    :func:`average_precision_at_k`.
    """
    _check_ties(ties)
    if depth < 1:
        raise UsageError(f"depth must be >= 1, got {depth}")
    s = _check_scores(scores, len(relevant))
    mask = relevance_mask(relevant, s.shape[1])
    depth = min(depth, s.shape[1])
    # Only candidates scoring at least the depth-th best score can reach the top `depth`.
    threshold = -np.partition(-s, depth - 1, axis=1)[:, depth - 1]
    out = np.zeros((s.shape[0], depth), dtype=bool)
    for q in range(s.shape[0]):
        cand = np.flatnonzero(s[q] >= threshold[q])
        rel = mask[q, cand]
        if ties == "pessimistic":
            tie_key = rel.astype(np.int8)  # relevant after non-relevant
        elif ties == "optimistic":
            tie_key = (~rel).astype(np.int8)
        else:
            tie_key = np.zeros(cand.size, dtype=np.int8)
        # lexsort: the last key is primary. Sort by -score, then tie_key, then index.
        order = np.lexsort((cand, tie_key, -s[q, cand]))[:depth]
        out[q] = rel[order]
    return out, mask.sum(axis=1).astype(np.int64)


def _list_positions(ranked: Sequence[Hashable], q: int) -> dict[Hashable, int]:
    pos: dict[Hashable, int] = {}
    for i, item in enumerate(ranked):
        if item in pos:
            raise UsageError(f"query {q}: ranked list holds {item!r} twice")
        pos[item] = i + 1
    return pos


def first_ranks_from_lists(
    ranked_ids: Sequence[Sequence[Hashable]],
    relevant_ids: Sequence[Collection[Hashable]],
    n_candidates: int,
) -> tuple[np.ndarray, np.ndarray]:
    """First ranks when the engine returns ranked id lists (best first) instead of a score matrix.

    Returns (int64 (Q,) 1-based rank of the first relevant id, bool (Q,) whether one was in the list).
    A query whose relevant ids are all absent from its (truncated) list gets rank ``n_candidates``, the
    worst possible: R@K stays exact for K ≤ the list length, MedR/MeanR become upper bounds (report the
    number of misses with them).
    """
    if len(ranked_ids) != len(relevant_ids):
        raise UsageError(f"{len(ranked_ids)} ranked lists but {len(relevant_ids)} relevant sets")
    ranks = np.empty(len(ranked_ids), dtype=np.int64)
    found = np.zeros(len(ranked_ids), dtype=bool)
    for q, (ranked, rel) in enumerate(zip(ranked_ids, relevant_ids, strict=True)):
        if not rel:
            raise UsageError(f"query {q} has no relevant id; drop it before computing ranks")
        if len(ranked) > n_candidates:
            raise UsageError(f"query {q}: ranked list is longer ({len(ranked)}) than n_candidates")
        pos = _list_positions(ranked, q)
        hits = [pos[r] for r in rel if r in pos]
        found[q] = bool(hits)
        ranks[q] = min(hits) if hits else n_candidates
    return ranks, found


def ranked_relevance_from_lists(
    ranked_ids: Sequence[Sequence[Hashable]],
    relevant_ids: Sequence[Collection[Hashable]],
    depth: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """(bool (Q, depth), int64 (Q,)) like :func:`ranked_relevance`, from ranked id lists; lists shorter
    than ``depth`` count as non-relevant past their end; n_relevant = number of distinct relevant ids."""
    if len(ranked_ids) != len(relevant_ids):
        raise UsageError(f"{len(ranked_ids)} ranked lists but {len(relevant_ids)} relevant sets")
    rel = np.zeros((len(ranked_ids), depth), dtype=bool)
    n_rel = np.zeros(len(ranked_ids), dtype=np.int64)
    for q, (ranked, relevant) in enumerate(zip(ranked_ids, relevant_ids, strict=True)):
        wanted = set(relevant)
        if not wanted:
            raise UsageError(f"query {q} has no relevant id; drop it before computing ranks")
        _list_positions(ranked, q)
        n_rel[q] = len(wanted)
        for i, item in enumerate(list(ranked)[:depth]):
            rel[q, i] = item in wanted
    return rel, n_rel


def average_precision_at_k(
    ranked_relevance: np.ndarray,
    n_relevant: np.ndarray | Sequence[int],
    k: int = 10,
    normalize: APNormalize = "n_relevant",
) -> np.ndarray:
    """float64 (Q,): AP@k per query.

    ``ranked_relevance`` bool (Q, >= k): whether the candidate at rank i (i = 1..) is relevant, in ranked
    order; ``n_relevant`` int (Q,): how many candidates are relevant to each query in the whole
    collection (>= 1). AP@k = Σ_{i≤k} P(i)·rel(i) / D with P(i) = (relevant in top i) / i and D by
    ``normalize``: ``"n_relevant"`` (default, DCASE 2023), ``"min_k"`` (min(n_relevant, k)) or
    ``"retrieved"`` (relevant found in the top k, DCASE 2022 baseline).
    """
    if normalize not in AP_NORMALIZE:
        raise UsageError(f"normalize must be one of {', '.join(AP_NORMALIZE)}, got {normalize!r}")
    rel = np.asarray(ranked_relevance, dtype=bool)
    n_rel = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    if rel.ndim != 2 or rel.shape[0] != n_rel.shape[0]:
        raise UsageError(f"ranked_relevance must be (Q, >=k) and n_relevant (Q,); got {rel.shape} and {n_rel.shape}")
    if k < 1:
        raise UsageError(f"k must be >= 1, got {k}")
    if rel.shape[1] < k:
        raise UsageError(f"ranked_relevance has {rel.shape[1]} columns, fewer than k={k}")
    if np.any(n_rel < 1):
        raise UsageError("every query needs n_relevant >= 1")
    rel = rel[:, :k]
    if np.any(rel.sum(axis=1) > n_rel):
        raise UsageError("ranked_relevance has more relevant hits than n_relevant for some query")
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, k + 1)[None, :]
    total = (precision * rel).sum(axis=1)
    if normalize == "n_relevant":
        denom = n_rel.astype(np.float64)
    elif normalize == "min_k":
        denom = np.minimum(n_rel, k).astype(np.float64)
    else:
        denom = rel.sum(axis=1).astype(np.float64)
    out: np.ndarray = np.divide(total, denom, out=np.zeros_like(total), where=denom > 0)
    return out


def _check_ranks(first_ranks: np.ndarray | Sequence[int]) -> np.ndarray:
    r = np.asarray(first_ranks)
    if r.ndim != 1 or r.size == 0:
        raise UsageError(f"first_ranks must be a non-empty 1-D array, got shape {r.shape}")
    if not np.issubdtype(r.dtype, np.integer):
        if not np.all(np.isfinite(r)) or not np.all(r == np.round(r)):
            raise UsageError("first_ranks must be whole numbers")
        r = r.astype(np.int64)
    if r.min() < 1:
        raise UsageError(f"ranks are 1-based; got a rank of {int(r.min())}")
    return r.astype(np.int64)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or min(out) < 1:
        raise UsageError(f"ks must be positive integers, got {tuple(ks)}")
    return out


def per_query_values(
    first_ranks: np.ndarray | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    map_k: int = 10,
    ap: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-query values whose mean is each metric: ``R@K`` → 0/1 hit, ``mAP@{map_k}`` → AP (1/rank
    within the cut-off unless ``ap`` float (Q,) is given, e.g. from :func:`average_precision_at_k`),
    ``MeanR`` and ``MedR`` → the rank (MedR is their median, not mean). float64 (Q,) each."""
    r = _check_ranks(first_ranks)
    out: dict[str, np.ndarray] = {}
    for k in _check_ks(ks):
        out[f"R@{k}"] = (r <= k).astype(np.float64)
    if ap is None:
        ap_v = np.where(r <= map_k, 1.0 / r, 0.0)
    else:
        ap_v = np.asarray(ap, dtype=np.float64).reshape(-1)
        if ap_v.shape != r.shape:
            raise UsageError(f"ap has shape {ap_v.shape}, first_ranks {r.shape}")
    out[f"mAP@{map_k}"] = ap_v
    out["MedR"] = r.astype(np.float64)
    out["MeanR"] = r.astype(np.float64)
    return out


def _statistic(name: str) -> Callable[..., np.ndarray]:
    return np.median if name == "MedR" else np.mean


def retrieval_metrics(
    first_ranks: np.ndarray | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    map_k: int = 10,
    ap: np.ndarray | None = None,
) -> dict[str, float]:
    """``{"R@1": .., "R@5": .., ..., "mAP@10": .., "MedR": .., "MeanR": ..}`` from 1-based first ranks.

    Recalls are fractions in [0, 1]; mAP@10 is 1/rank within the cut-off (one relevant item per query)
    unless per-query ``ap`` is given (several relevant items, see :func:`average_precision_at_k`).
    """
    values = per_query_values(first_ranks, ks, map_k, ap)
    return {name: float(_statistic(name)(v)) for name, v in values.items()}


def retrieval_metrics_from_scores(
    scores: np.ndarray,
    relevant: Sequence[np.ndarray | Sequence[int]],
    ks: Sequence[int] = DEFAULT_KS,
    map_k: int = 10,
    ties: TieRule = "pessimistic",
    ap_normalize: APNormalize = "n_relevant",
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """One call for the runner: (metrics, first_ranks int64 (Q,), ap float64 (Q,)).

    First ranks give R@K (hit if any relevant candidate is in the top K), MedR and MeanR; mAP@map_k is
    the multi-relevant AP with ``ap_normalize`` (equal to 1/rank when each query has one relevant item).
    """
    ranks = ranks_from_scores(scores, relevant, ties=ties)
    depth = min(map_k, np.asarray(scores).shape[1])
    rel, n_rel = ranked_relevance(scores, relevant, depth=depth, ties=ties)
    if depth < map_k:  # fewer candidates than the cut-off: pad with non-relevant
        rel = np.pad(rel, ((0, 0), (0, map_k - depth)))
    ap = average_precision_at_k(rel, n_rel, k=map_k, normalize=ap_normalize)
    return retrieval_metrics(ranks, ks, map_k, ap), ranks, ap


def cluster_weights(groups: Groups | range, n: int = 1000, seed: int = 0) -> np.ndarray:
    """float64 (n, Q): how often each query is drawn in ``n`` cluster-bootstrap samples. Each sample draws
    the G distinct ``groups`` (e.g. the track a query is about) G times with replacement and takes every
    query of each drawn group, so queries of one track rise and fall together. With one query per group
    it draws exactly what :func:`bootstrap_ci` draws with the same seed."""
    labels: dict[Hashable, int] = {}  # any hashable label (tuples of track ids too), numbered as first seen
    keys = groups.tolist() if isinstance(groups, np.ndarray) else groups
    inverse = np.array([labels.setdefault(g, len(labels)) for g in keys], dtype=np.int64)
    if inverse.size == 0:
        raise UsageError("cluster_weights needs at least one query")
    g = int(inverse.max()) + 1
    draws = np.random.default_rng(seed).integers(0, g, size=(n, g))
    flat = (draws + g * np.arange(n)[:, None]).reshape(-1)  # one bincount for all samples
    counts = np.bincount(flat, minlength=n * g).reshape(n, g).astype(np.float64)
    return counts[:, inverse]


def weighted_statistic(name: str, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float64 (n,): the statistic of metric ``name`` (numpy's median for MedR, else the mean) of the
    per-query values ``v`` (Q,) under each row of the weights (n, Q) that :func:`cluster_weights` gives."""
    total = w.sum(axis=1)
    if name != "MedR":
        return np.asarray((w @ v) / total, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[:, order], axis=1)
    half = total[:, None] / 2.0
    lower = v[order][np.argmax(cum >= half, axis=1)]  # an even count: the mean of the two middle values
    upper = v[order][np.argmax(cum > half, axis=1)]
    return np.asarray((lower + upper) / 2.0, dtype=np.float64)


def _check_ci_args(n: int, level: float, what: str) -> None:
    if n < 1 or not 0.0 < level < 1.0:
        raise UsageError(f"{what} needs n >= 1 and 0 < level < 1, got n={n}, level={level}")


def bootstrap_ci(
    per_query: np.ndarray | Sequence[float],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    statistic: Callable[..., np.ndarray] = np.mean,
    groups: Groups | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over queries: resample the Q per-query values with
    replacement ``n`` times (numpy default_rng(seed)), return the (1-level)/2 and (1+level)/2 quantiles.
    ``groups`` (Q,) resamples clusters instead (:func:`cluster_weights`; ``statistic`` must then be
    np.mean or np.median): queries about one track are not independent, and treating them so makes the
    interval too narrow."""
    v = np.asarray(per_query, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise UsageError("bootstrap_ci needs at least one value")
    _check_ci_args(n, level, "bootstrap_ci")
    if groups is not None:
        if len(groups) != v.size:
            raise UsageError(f"bootstrap_ci: {len(groups)} groups for {v.size} values")
        if statistic not in (np.mean, np.median):
            raise UsageError("bootstrap_ci with groups computes np.mean or np.median only")
        stats = weighted_statistic("MedR" if statistic is np.median else "mean", v, cluster_weights(groups, n, seed))
    else:
        idx = np.random.default_rng(seed).integers(0, v.size, size=(n, v.size))
        stats = np.asarray(statistic(v[idx], axis=1), dtype=np.float64)
    lo, hi = np.quantile(stats, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def metrics_ci(
    values: Mapping[str, np.ndarray],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: Groups | None = None,
) -> dict[str, tuple[float, float]]:
    """Bootstrap interval for every metric of :func:`per_query_values` output, resampling the *same*
    queries for every metric (paired); MedR uses the median, the others the mean. ``groups`` (Q,)
    resamples clusters of queries (:func:`cluster_weights`), e.g. the tracks they are about."""
    arrays = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in values.items()}
    sizes = {v.size for v in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise UsageError("metrics_ci needs per-query arrays of one non-zero length")
    _check_ci_args(n, level, "metrics_ci")
    q = sizes.pop()
    qs = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    if groups is not None and len(groups) != q:
        raise UsageError(f"metrics_ci: {len(groups)} groups for {q} queries")
    w = cluster_weights(range(q) if groups is None else groups, n, seed)  # one query per group: the plain bootstrap
    out: dict[str, tuple[float, float]] = {}
    for name, v in arrays.items():
        lo, hi = np.quantile(weighted_statistic(name, v, w), qs)
        out[name] = (float(lo), float(hi))
    return out


def segment_iou(
    pred_start: np.ndarray | float,
    pred_end: np.ndarray | float,
    true_start: np.ndarray | float,
    true_end: np.ndarray | float,
) -> np.ndarray:
    """float64, broadcast shape: temporal IoU of [pred_start, pred_end] and [true_start, true_end] in
    seconds (0 when disjoint, touching only, or both empty). Bounds must be finite: a query without a
    predicted segment has no IoU to compute; the caller counts it as 0 and says so (runner.mode_result)."""
    ps, pe, ts, te = (np.asarray(x, dtype=np.float64) for x in (pred_start, pred_end, true_start, true_end))
    if not all(np.isfinite(x).all() for x in (ps, pe, ts, te)):
        raise UsageError("segment bounds must be finite seconds; give a query without a segment IoU 0 before calling")
    if np.any(pe < ps) or np.any(te < ts):
        raise UsageError("segment ends must not come before their starts")
    inter = np.clip(np.minimum(pe, te) - np.maximum(ps, ts), 0.0, None)
    union = (pe - ps) + (te - ts) - inter
    out: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out
