"""Metrics of one rerank rule on one :class:`~songseek.benchmarks.rerank_cases.Case`.

A rule maps one query's candidate similarities (float (B, C, T), lengths int64 (B,)) and its kind
(engine/query/kind.py; None: not known) to a FusionResult
(engine/query/fusion.py): scores rank the candidates, the segment of the candidate that carries the
query's true span is compared with it. Ties are pessimistic; mAP@10 divides by the number of relevant
candidates; intervals are 95 % percentile bootstraps over the tracks the queries are about (a cluster
bootstrap, benchmarks/metrics.py: the queries of one track are not independent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from songseek.benchmarks.metrics import metrics_ci, per_query_values, retrieval_metrics_from_scores, segment_iou
from songseek.benchmarks.rerank_cases import Case
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import FusionResult, RerankSettings
from songseek.engine.query.kind import Kind, resolve_mode
from songseek.engine.query.longtext import chunk_scores

Rule = Callable[[np.ndarray, np.ndarray, Kind], FusionResult]
KS = (1, 5, 10)


def settings_rule(settings: RerankSettings) -> Rule:
    """The engine's rule for ``settings`` (what `songseek search --rerank MODE` computes for a query of
    that kind: ``auto`` resolves by it, as Library.rerank does)."""

    def rule(sims: np.ndarray, lengths: np.ndarray, kind: Kind) -> FusionResult:
        return chunk_scores(sims, lengths, settings.params, mode=resolve_mode(settings.mode, kind))

    return rule


@dataclass(frozen=True)
class CaseResult:
    """Metrics (fractions; MedR in ranks), per-query first ranks and, where the case has spans, the
    share of queries with segment IoU >= 0.5 (``iou_hits``: 1.0/0.0 per query with a span);
    ``ci`` {metric: (lo, hi)}; ``values`` the per-query values behind each metric (pooling needs them);
    ``groups`` int64 (Q,) the track each query is about, the bootstrap's unit (``iou_groups`` for
    ``iou_hits``)."""

    metrics: dict[str, float]
    ranks: np.ndarray
    ci: dict[str, tuple[float, float]]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    iou_hits: np.ndarray = field(default_factory=lambda: np.zeros(0))
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    iou_groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _summarise(values: dict[str, np.ndarray], ranks: np.ndarray, iou_hits: np.ndarray, ci: bool,
               groups: np.ndarray, iou_groups: np.ndarray) -> CaseResult:
    metrics = {name: float(np.median(v) if name == "MedR" else np.mean(v)) for name, v in values.items()}
    intervals = metrics_ci(values, groups=groups) if ci else {}
    if iou_hits.size:
        metrics["IoU>=0.5"] = float(np.mean(iou_hits))
        if ci:
            intervals["IoU>=0.5"] = metrics_ci({"IoU>=0.5": iou_hits}, groups=iou_groups)["IoU>=0.5"]
    return CaseResult(metrics, ranks, intervals, values, iou_hits, groups, iou_groups)


def pool(results: list[CaseResult], ci: bool = True) -> CaseResult:
    """One result over the queries of several (the same kind on several seeds): per-query values joined,
    metrics and intervals computed over all of them, so a row's tolerance is not finer than one query."""
    if not results:
        raise UsageError("pool needs at least one result")
    values = {name: np.concatenate([r.values[name] for r in results]) for name in results[0].values}
    # track i of result j is its own cluster: seeds share track numbers, not tracks
    own = [(r.groups, r.iou_groups) if r.groups.size == r.ranks.size
           else (np.arange(r.ranks.size), np.arange(r.iou_hits.size)) for r in results]  # no groups: one each
    offsets = np.cumsum([0] + [int(g.max(initial=-1)) + 1 for g, _ in own])
    groups = np.concatenate([g + o for (g, _), o in zip(own, offsets)])
    iou_groups = np.concatenate([ig + o for (_, ig), o in zip(own, offsets)])
    return _summarise(values, np.concatenate([r.ranks for r in results]),
                      np.concatenate([r.iou_hits for r in results]), ci, groups, iou_groups)


def evaluate_case(case: Case, rule: Rule, ci: bool = True) -> CaseResult:
    scores = np.zeros((case.n_queries, case.sims[0].shape[0]), np.float64)
    ious = np.full(case.n_queries, np.nan)
    for q in range(case.n_queries):
        res = rule(case.sims[q], case.lengths[q], case.query_kind(q))
        scores[q] = res.score
        if np.isfinite(case.spans[q]).all():
            c, b = int(case.span_cand[q]), case.bounds[q]
            ious[q] = segment_iou(b[res.seg_first[c], 0], b[res.seg_last[c], 1], *case.spans[q])
    _, ranks, ap = retrieval_metrics_from_scores(scores, case.relevant, KS, 10)
    has = np.isfinite(ious)
    groups = case.query_groups()
    return _summarise(per_query_values(ranks, KS, 10, ap), ranks, (ious[has] >= 0.5).astype(np.float64), ci,
                      groups, groups[has])
