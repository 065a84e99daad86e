"""Naive loop references for the parts of a rerank result other than the score (r_k, r_t, best window, and
the segment), for every mode of engine/query/fusion.py rerank_scores, built on tests/rerank_reference.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from songseek.engine.query.fusion import FusionParams
from tests.rerank_reference import naive_fuse, naive_geometry, naive_standardize


def _fused(rows: list[list[float]], params: FusionParams) -> tuple[float, float, list[dict]]:
    mu, sd = naive_standardize(rows)
    z = np.zeros((len(rows), max(len(r) for r in rows)))
    for i, r in enumerate(rows):
        z[i, : len(r)] = [(x - mu) / sd for x in r]
    return mu, sd, naive_fuse(z, np.array([len(r) for r in rows]), params)


def naive_parts(mode: str, rows: list[list[float]], params: FusionParams | None = None) -> np.ndarray:
    """float64 (len(rows), 3): r_k, r_t and the best window of each row of one query. mean and max: that
    pooling of the row for both parts; every other mode: CoLLAP's parts on the standardised rows
    (naive_fuse) mapped back to the query's scale."""
    params = params or FusionParams()
    if mode == "mean":
        return np.array([[sum(r) / len(r)] * 2 + [max(r)] for r in rows])
    if mode in ("max", "none", "align"):  # align, one query vector: its best window
        return np.array([[max(r)] * 3 for r in rows])
    mu, sd, fused = _fused(rows, params)
    return np.array([[mu + sd * f["r_k"], mu + sd * f["r_t"], max(r)] for f, r in zip(fused, rows, strict=True)])


def naive_segment_keys(mode: str, rows: list[list[float]], params: FusionParams | None = None) -> list[dict]:
    """For each row, {(first, last) frame run: its segment score} under ``mode``'s segment rule, plain loops:
    max/none: every single frame by similarity; mean: every kernel of the segment search's geometry
    (``segment_kernel``, else ``kernel``, and ``stride``) by mean similarity; every other mode: naive_fuse's
    key over the standardised rows (the span rule's runs of 1..K frames, or the kernels). The segment is
    the best key (earliest on a tie)."""
    params = params or FusionParams()
    if mode in ("max", "none", "align"):  # align, one query vector: its best window
        return [{(i, i): v for i, v in enumerate(r)} for r in rows]
    if mode == "mean":
        seg = replace(params, kernel=params.segment_kernel or params.kernel)
        out = []
        for r in rows:
            h, st, w = naive_geometry(len(r), seg)
            out.append({(v * st, v * st + h - 1): sum(r[v * st:v * st + h]) / h for v in range(w)})
        return out
    keys = []
    for f in _fused(rows, params)[2]:
        key = f["key"]
        keys.append({(i, i + n - 1): v for (i, n), v in key.items()} if isinstance(key, dict)
                    else {(v * f["s"], v * f["s"] + f["h"] - 1): x for v, x in enumerate(key)})
    return keys


def assert_best_segment(key: dict, first: int, last: int, tol: float = 1e-5, what: object = "") -> None:
    """(first, last) is one of the runs in ``key`` and the best of them up to ``tol`` (float32 near-ties)."""
    assert (first, last) in key, (what, first, last, sorted(key)[:5])
    assert key[(first, last)] >= max(key.values()) - tol, (what, first, last, key[(first, last)], max(key.values()))
