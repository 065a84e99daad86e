"""Time alignment of two tracks' window vectors: pure numpy, arrays in, arrays out.

Two copies of one recording give a *diagonal* in the window × window cosine matrix ``S = A @ B.T``: window i
of one matches window i + d of the other for one offset d (a trim or added silence moves d). An edit with a
section cut or repeated breaks the diagonal into pieces at different offsets, which a *monotone chain* (the
longest run of matches with both window numbers increasing, as in LCS) still follows. Different songs with
the same sound give high cosines scattered over the matrix, not a long diagonal.

Everything works on a batch of pairs at once (matrices padded with -inf to one shape): one pair's matrix is
small (tens of windows a side), so per-pair numpy calls would cost more in overhead than in arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class Diagonal:
    """The best diagonal of a similarity matrix (m, n): window ``start_a + t`` of A matches window
    ``start_a + offset + t`` of B for t in 0..``run``-1, each at cosine >= the threshold; ``mean`` is the
    mean cosine over that run (0 when ``run`` is 0)."""

    offset: int
    start_a: int
    run: int
    mean: float


@dataclass(frozen=True)
class Alignment:
    """One pair's alignment: the best diagonal and the monotone chains at two thresholds."""

    diagonal: Diagonal
    chain: int             # at ``threshold``
    version_chain: int     # at ``version_threshold``


def diagonal_runs_batch(sims: np.ndarray, threshold: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``diagonal_runs`` for a batch ``sims`` (B, m, n) (pad with -inf). Returns (offsets (D,), run (B, D),
    start_a (B, D), mean (B, D)), D = m + n - 1."""
    s = np.asarray(sims, dtype=np.float64)
    bsz, m, n = s.shape
    offsets = np.arange(-(m - 1), n, dtype=np.int64)
    if m == 0 or n == 0:
        z = np.zeros((bsz, len(offsets)), np.int64)
        return offsets, z, z.copy(), np.zeros((bsz, len(offsets)))
    rows = np.arange(m)[None, :]
    cols = rows + offsets[:, None]                                          # (D, m)
    valid = (cols >= 0) & (cols < n)
    diag = np.where(valid, s[:, np.broadcast_to(rows, cols.shape), np.clip(cols, 0, n - 1)], -np.inf)  # (B, D, m)
    ok = diag >= threshold
    # Run length ending at each position: count since the last miss (cumsum reset at misses).
    c = np.cumsum(ok, axis=2)
    last_miss = np.maximum.accumulate(np.where(ok, 0, c), axis=2)
    run_end: np.ndarray = c - last_miss
    end = np.argmax(run_end, axis=2)                                        # the earliest longest run
    run: np.ndarray = np.take_along_axis(run_end, end[..., None], axis=2)[..., 0].astype(np.int64)
    start = (end - run + 1).astype(np.int64)
    csum = np.concatenate([np.zeros((bsz, len(offsets), 1)), np.cumsum(np.where(ok, diag, 0.0), axis=2)], axis=2)
    total = (np.take_along_axis(csum, (end + 1)[..., None], axis=2)
             - np.take_along_axis(csum, start[..., None].clip(0), axis=2))[..., 0]
    mean = np.where(run > 0, total / np.maximum(run, 1), 0.0)
    start = np.where(run > 0, start, 0)
    return offsets, run, start, mean


def diagonal_runs(sim: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every offset d = j - i in -(m-1)..n-1 of ``sim`` float (m, n): the longest run of consecutive
    diagonal entries >= ``threshold``, where it starts (row i) and its mean cosine.

    Returns (offsets int64 (m+n-1,), run int64, start_a int64, mean float64); the earliest run wins ties.
    """
    offsets, run, start, mean = diagonal_runs_batch(np.asarray(sim)[None], threshold)
    return offsets, run[0], start[0], mean[0]


def _best(offsets: np.ndarray, run: np.ndarray, start: np.ndarray, mean: np.ndarray) -> list[Diagonal]:
    """Per batch row, the offset whose longest run is longest (ties: higher mean, then smaller |offset|)."""
    out = []
    for b in range(run.shape[0]):
        if run[b].max(initial=0) == 0:
            out.append(Diagonal(offset=0, start_a=0, run=0, mean=0.0))
            continue
        k = np.lexsort((np.abs(offsets), -mean[b], -run[b]))[0]
        out.append(Diagonal(offset=int(offsets[k]), start_a=int(start[b, k]), run=int(run[b, k]),
                            mean=float(mean[b, k])))
    return out


def best_diagonal(sim: np.ndarray, threshold: float) -> Diagonal:
    """The offset whose longest run is longest (ties: the higher mean cosine, then the smaller |offset|)."""
    offsets, run, start, mean = diagonal_runs_batch(np.asarray(sim)[None], threshold)
    return _best(offsets, run, start, mean)[0]


def monotone_chain_batch(sims: np.ndarray, threshold: float) -> np.ndarray:
    """``monotone_chain`` for a batch ``sims`` (B, m, n) (pad with -inf): int64 (B,)."""
    s = np.asarray(sims)
    bsz, m, n = s.shape
    if m == 0 or n == 0:
        return np.zeros(bsz, np.int64)
    match = (s >= threshold).astype(np.int64)
    prev = np.zeros((bsz, n + 1), np.int64)
    for i in range(m):
        cand = np.maximum(prev[:, 1:], prev[:, :-1] + match[:, i])
        prev[:, 1:] = np.maximum.accumulate(cand, axis=1)
    return prev[:, -1].copy()


def monotone_chain(sim: np.ndarray, threshold: float) -> int:
    """Length of the longest chain of matches (i1, j1), (i2, j2), ... with i and j both strictly increasing
    and every ``sim[i, j] >= threshold`` (the LCS recurrence, one numpy row at a time)."""
    return int(monotone_chain_batch(np.asarray(sim)[None], threshold)[0])


def align_pairs(a: Sequence[np.ndarray], b: Sequence[np.ndarray], threshold: float, version_threshold: float,
                min_chain: float = 0.0, budget: int = 1 << 20) -> list[Alignment]:
    """Align pairs of unit window-vector arrays ``a[k]`` (m_k, dim) and ``b[k]`` (n_k, dim). Pairs are sorted
    by size and batched while a batch's diagonal array (pairs × offsets × rows) stays within ``budget``
    elements, so that long tracks do not blow the memory and short ones share a numpy call.

    A diagonal run is a monotone chain, so a pair whose chain covers less than ``min_chain`` of its shorter
    track cannot have a longer diagonal: its diagonal is not searched (returned empty: run 0)."""
    order = sorted(range(len(a)), key=lambda k: (len(a[k]), len(b[k])))
    out: list[Alignment | None] = [None] * len(a)
    lo = 0
    # one thread: the products are small and many; BLAS threads spin when the cores are shared
    with threadpool_limits(1, user_api="blas"):
        while lo < len(order):
            hi, m, n = lo, 0, 0
            while hi < len(order):
                m2, n2 = max(m, len(a[order[hi]])), max(n, len(b[order[hi]]))
                if hi > lo and (hi - lo + 1) * (m2 + n2) * max(m2, 1) > budget:
                    break
                hi, m, n = hi + 1, m2, n2
            ks = order[lo:hi]
            lo = hi
            for k, al in zip(ks, _align_batch([a[k] for k in ks], [b[k] for k in ks], m, n, threshold,
                                              version_threshold, min_chain)):
                out[k] = al
    return [x for x in out if x is not None]


def _align_batch(a: list[np.ndarray], b: list[np.ndarray], m: int, n: int, threshold: float,
                 version_threshold: float, min_chain: float) -> list[Alignment]:
    dim = a[0].shape[1]
    pa = np.zeros((len(a), m, dim), np.float32)
    pb = np.zeros((len(a), n, dim), np.float32)
    mask = np.zeros((len(a), m, n), bool)
    for r, (x, y) in enumerate(zip(a, b)):
        pa[r, :len(x)] = x
        pb[r, :len(y)] = y
        mask[r, :len(x), :len(y)] = True
    sims = np.where(mask, pa @ pb.transpose(0, 2, 1), -np.inf)
    chains = monotone_chain_batch(sims, threshold)
    versions = monotone_chain_batch(sims, version_threshold)
    short = np.array([max(1, min(len(x), len(y))) for x, y in zip(a, b)])
    search = np.flatnonzero(chains >= min_chain * short)
    diagonals = [Diagonal(offset=0, start_a=0, run=0, mean=0.0)] * len(a)
    if len(search):
        for row, d in zip(search.tolist(), _best(*diagonal_runs_batch(sims[search], threshold))):
            diagonals[row] = d
    return [Alignment(diagonal=diagonals[r], chain=int(chains[r]), version_chain=int(versions[r]))
            for r in range(len(a))]
