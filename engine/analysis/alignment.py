"""Time alignment of two tracks' window vectors: pure numpy, arrays in, arrays out.

Two copies of one recording give a *diagonal* in the window × window cosine matrix ``S = A @ B.T``: window i
of one matches window i + d of the other for one offset d (a trim or added silence moves d). An edit with a
section cut or repeated breaks the diagonal into pieces at different offsets, which a *monotone chain* (the
longest run of matches with both window numbers increasing, as in LCS) still follows. Different songs with
the same sound give high cosines scattered over the matrix, not a long diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Diagonal:
    """The best diagonal of a similarity matrix (m, n): window ``start_a + t`` of A matches window
    ``start_a + offset + t`` of B for t in 0..``run``-1, each at cosine >= the threshold; ``mean`` is the
    mean cosine over that run (0 when ``run`` is 0)."""

    offset: int
    start_a: int
    run: int
    mean: float


def diagonal_runs(sim: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every offset d = j - i in -(m-1)..n-1 of ``sim`` float (m, n): the longest run of consecutive
    diagonal entries >= ``threshold``, where it starts (row i) and its mean cosine.

    Returns (offsets int64 (m+n-1,), run int64, start_a int64, mean float64); the earliest run wins ties.
    """
    s = np.asarray(sim, dtype=np.float64)
    m, n = s.shape
    offsets = np.arange(-(m - 1), n, dtype=np.int64)
    if m == 0 or n == 0:
        z = np.zeros(len(offsets), np.int64)
        return offsets, z, z.copy(), np.zeros(len(offsets))
    rows = np.arange(m)[None, :]
    cols = rows + offsets[:, None]
    valid = (cols >= 0) & (cols < n)
    diag = np.where(valid, s[np.broadcast_to(rows, cols.shape), np.clip(cols, 0, n - 1)], -np.inf)  # (D, m)
    ok = diag >= threshold
    # Run length ending at each position: count since the last miss (cumsum reset at misses).
    c = np.cumsum(ok, axis=1)
    last_miss = np.maximum.accumulate(np.where(ok, 0, c), axis=1)
    run_end: np.ndarray = c - last_miss
    end = np.argmax(run_end, axis=1)
    run: np.ndarray = run_end[np.arange(len(offsets)), end].astype(np.int64)
    start = (end - run + 1).astype(np.int64)
    csum = np.concatenate([np.zeros((len(offsets), 1)), np.cumsum(np.where(ok, diag, 0.0), axis=1)], axis=1)
    total = csum[np.arange(len(offsets)), end + 1] - csum[np.arange(len(offsets)), start]
    mean = np.where(run > 0, total / np.maximum(run, 1), 0.0)
    start = np.where(run > 0, start, 0)
    return offsets, run, start, mean


def best_diagonal(sim: np.ndarray, threshold: float) -> Diagonal:
    """The offset whose longest run is longest (ties: the higher mean cosine, then the smaller |offset|)."""
    offsets, run, start, mean = diagonal_runs(sim, threshold)
    if len(offsets) == 0 or run.max(initial=0) == 0:
        return Diagonal(offset=0, start_a=0, run=0, mean=0.0)
    best = np.lexsort((np.abs(offsets), -mean, -run))[0]
    return Diagonal(offset=int(offsets[best]), start_a=int(start[best]), run=int(run[best]), mean=float(mean[best]))


def monotone_chain(sim: np.ndarray, threshold: float) -> int:
    """Length of the longest chain of matches (i1, j1), (i2, j2), ... with i and j both strictly increasing
    and every ``sim[i, j] >= threshold`` (the LCS recurrence, one numpy row at a time)."""
    s = np.asarray(sim)
    m, n = s.shape
    if m == 0 or n == 0:
        return 0
    match = (s >= threshold).astype(np.int64)
    prev = np.zeros(n + 1, np.int64)
    for i in range(m):
        cand = np.maximum(prev[1:], prev[:-1] + match[i])
        prev = np.concatenate([[0], np.maximum.accumulate(cand)])
    return int(prev[-1])
