"""Naive loop references for engine/query/fusion.py, written straight from docs/fusion.md (CoLLAP Eqs. 1-7
and the scale-free standardisation); the fusion, rerank and benchmark tests check the engine against them."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from songseek.engine.query.fusion import FusionParams


def naive_geometry(t: int, p: FusionParams) -> tuple[int, int, int]:
    if p.mode == "frames":
        h, s = max(1, math.floor(p.kernel + 0.5)), max(1, math.floor(p.stride + 0.5))
    else:
        h = max(1, math.floor(t * p.kernel / 30 + 1e-9))
        s = max(1, math.floor(t * p.stride / 30 + 1e-9))
    h = min(h, t)  # short-track rule
    return h, s, (t - h) // s + 1


def softmax_weighted(values: list[float], tau: float) -> float:
    """sum_i softmax(values / tau)_i * values_i, stabilised by the max."""
    top = max(values)
    weights = [math.exp((v - top) / tau) for v in values]
    return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)


def naive_track(s: list[float], p: FusionParams) -> dict:
    t = len(s)
    h, st, w = naive_geometry(t, p)
    m = [[s[v * st + k] for k in range(h)] for v in range(w)]  # Eq. 1: M(v, h) = s_{vS+h}
    pv = [softmax_weighted(m[v], p.temperature) for v in range(w)]  # Eq. 3, kernel-wise
    oh = [softmax_weighted([m[v][k] for v in range(w)], p.temperature) for k in range(h)]  # Eq. 4, temporal
    r_k = sum(pv) / w  # mean over kernels (not the paper's 1/H)
    r_t = sum(oh) / h  # mean over offsets (not the paper's 1/W)
    mass = [0.0] * w  # temporal attention mass of each kernel: sum_h A_T(v, h)
    for k in range(h):
        col = [m[v][k] for v in range(w)]
        top = max(col)
        weights = [math.exp((x - top) / p.temperature) for x in col]
        for v in range(w):
            mass[v] += weights[v] / sum(weights)
    key = mass if p.segment == "attention" else pv
    best_v = key.index(max(key))  # earliest of the best kernels
    return {
        "score": p.gamma_k * r_k + p.gamma_t * r_t,
        "r_k": r_k,
        "r_t": r_t,
        "best_window": max(s),
        "first": best_v * st,
        "last": best_v * st + h - 1,
        "key": key,
        "h": h,
        "s": st,
    }


def naive_span(s: list[float], longest: int, exponent: float) -> dict:
    """The ``span`` segment: every run of 1..longest frames, scored sum / length**exponent; the first
    best in (length, start) order (the shorter run, then the earliest). ``key`` maps (start, length) to
    its score for near-tie checks."""
    key = {(i, n): sum(s[i:i + n]) / n**exponent for n in range(1, min(longest, len(s)) + 1)
           for i in range(len(s) - n + 1)}
    top = max(key.values())
    n, i = min((n, i) for (i, n), v in key.items() if v == top)
    return {"first": i, "last": i + n - 1, "key": key, "h": n, "s": 1}


def naive_fuse(sims: np.ndarray, lengths: np.ndarray, p: FusionParams) -> list[dict]:
    out = []
    for b in range(len(lengths)):
        s = [float(v) for v in sims[b, : lengths[b]]]
        r = naive_track(s, p)
        if p.segment == "span":
            longest = p.segment_kernel if p.segment_kernel > 0 else p.kernel
            r.update(naive_span(s, max(1, math.floor(longest + 0.5)), p.span_exponent))
        elif p.segment_kernel > 0:  # the segment comes from the same computation with the other kernel
            seg = naive_track(s, replace(p, kernel=p.segment_kernel, segment_kernel=0.0))
            r.update({k: seg[k] for k in ("first", "last", "key", "h", "s")})
        out.append(r)
    return out


def naive_standardize(rows: list[list[float]]) -> tuple[float, float]:
    """mu, sigma of one query: every candidate track weighs the same."""
    mu = sum(sum(r) / len(r) for r in rows) / len(rows)
    var = sum(sum((x - mu) ** 2 for x in r) / len(r) for r in rows) / len(rows)
    return mu, (math.sqrt(var) if var > 1e-24 else 1.0)


def naive_scores(mode: str, rows: list[list[float]], params: FusionParams) -> list[float]:
    """One query's scores with plain loops: standardise, CoLLAP (naive_fuse), map back; blend adds the
    mean, each part standardised over the candidates; hedge (and auto, which is hedge without a query
    kind) orders by min(fusion rank, w x mean rank, w x r_t rank) and hands out the fusion scores, best
    first, in that order; part orders by min(max rank, w x fusion rank) and hands out the max scores,
    whole by min(mean rank, w x fusion rank) and hands out the mean scores."""
    mu, sd = naive_standardize(rows)
    if mode == "mean":
        return [sum(r) / len(r) for r in rows]
    if mode in ("max", "none", "align"):  # align, one query vector: its best window
        return [max(r) for r in rows]
    tmax = max(len(r) for r in rows)
    z = np.zeros((len(rows), tmax))
    for i, r in enumerate(rows):
        z[i, : len(r)] = [(x - mu) / sd for x in r]
    lengths = np.array([len(r) for r in rows])
    fused = naive_fuse(z, lengths, params)
    score = [params.gamma_k * f["r_k"] + params.gamma_t * f["r_t"] for f in fused]
    if mode in ("hedge", "auto", "part", "whole"):
        means = [sum(z[i, : len(r)]) / len(r) for i, r in enumerate(rows)]
        maxes = [max(z[i, : len(r)]) for i, r in enumerate(rows)]
        r_t = [f["r_t"] for f in fused]

        def ranks(x: list[float]) -> list[int]:
            order = sorted(range(len(x)), key=lambda i: (-x[i], i))
            return [order.index(i) + 1 for i in range(len(x))]

        w = params.hedge_weight
        base, others = {"part": (maxes, [score]), "whole": (means, [score])}.get(mode, (score, [means, r_t]))
        rank_b, rank_o = ranks(base), [ranks(o) for o in others]
        key = [min([rank_b[i]] + [w * ro[i] for ro in rank_o]) for i in range(len(rows))]
        final = sorted(range(len(rows)), key=lambda i: (key[i], rank_b[i], i))
        best_first = sorted(base, reverse=True)
        hedged = [0.0] * len(rows)
        for position, i in enumerate(final):
            hedged[i] = best_first[position]
        score = hedged
    if mode == "blend":
        means = [sum(z[i, : len(r)]) / len(r) for i, r in enumerate(rows)]

        def center(x: list[float]) -> list[float]:
            m = sum(x) / len(x)
            s = math.sqrt(sum((v - m) ** 2 for v in x) / len(x))
            return [(v - m) / (s if s > 1e-12 else 1.0) for v in x]

        score = [(params.mean_weight * a + b) / (1 + params.mean_weight)
                 for a, b in zip(center(means), center(score), strict=True)]
    return [mu + sd * s for s in score]
