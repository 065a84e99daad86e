"""alignment.py against naive loops on seeded random matrices."""

from __future__ import annotations

import numpy as np
import pytest

from songseek.engine.analysis.alignment import align_pairs, best_diagonal, diagonal_runs, monotone_chain


def _naive_runs(s: np.ndarray, th: float) -> dict[int, tuple[int, int, float]]:
    m, n = s.shape
    out = {}
    for d in range(-(m - 1), n):
        best, best_start, best_mean, run, start, total = 0, 0, 0.0, 0, 0, 0.0
        for i in range(m):
            j = i + d
            if 0 <= j < n and s[i, j] >= th:
                if run == 0:
                    start, total = i, 0.0
                run += 1
                total += s[i, j]
                if run > best:
                    best, best_start, best_mean = run, start, total / run
            else:
                run = 0
        out[d] = (best, best_start, best_mean)
    return out


def _naive_chain(s: np.ndarray, th: float) -> int:
    m, n = s.shape
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            dp[i][j] = max(dp[i - 1][j], dp[i][j - 1], dp[i - 1][j - 1] + int(s[i - 1, j - 1] >= th))
    return dp[m][n]


@pytest.mark.parametrize("seed", range(6))
def test_diagonal_runs_and_chain_match_naive_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n = rng.integers(1, 14, size=2)
    s = rng.random((m, n))
    th = 0.4
    offsets, run, start, mean = diagonal_runs(s, th)
    ref = _naive_runs(s, th)
    assert offsets.tolist() == sorted(ref)
    for k, d in enumerate(offsets.tolist()):
        assert (run[k], start[k] if run[k] else 0) == ref[d][:2]
        assert mean[k] == pytest.approx(ref[d][2])
    assert monotone_chain(s, th) == _naive_chain(s, th)


def test_a_shifted_copy_is_found_at_its_offset_and_an_edit_by_the_chain() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 16))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = np.concatenate([rng.standard_normal((3, 16)) / 4, a])  # three windows of something else first
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    d = best_diagonal(a @ b.T, 0.9)
    assert (d.offset, d.start_a, d.run) == (3, 0, 20)
    assert d.mean == pytest.approx(1.0)
    edit = np.concatenate([a[:8], a[14:]])  # windows 8..13 cut out
    assert best_diagonal(edit @ a.T, 0.9).run == 8
    assert monotone_chain(edit @ a.T, 0.9) == 14
    assert best_diagonal(np.zeros((0, 3)), 0.5).run == 0


def test_batched_pairs_of_mixed_sizes_match_naive_loops() -> None:
    rng = np.random.default_rng(7)
    a, b = [], []
    for _ in range(9):
        m, n = rng.integers(1, 12, size=2)
        x = rng.standard_normal((m, 3)).astype(np.float32)
        y = rng.standard_normal((n, 3)).astype(np.float32)
        a.append(x / np.linalg.norm(x, axis=1, keepdims=True))
        b.append(y / np.linalg.norm(y, axis=1, keepdims=True))
    # a small budget forces several batches (one pair alone when it is big)
    for got, x, y in zip(align_pairs(a, b, 0.3, 0.8, budget=400), a, b):
        s = (x @ y.T).astype(np.float64)
        ref = _naive_runs(s, 0.3)
        best = max(ref.values(), key=lambda r: r[0])[0]
        assert got.diagonal.run == best
        if best:
            d = got.diagonal.offset
            assert ref[d][0] == best and got.diagonal.start_a == ref[d][1]
            assert got.diagonal.mean == pytest.approx(ref[d][2], rel=1e-5)
            assert got.diagonal.mean >= max(r[2] for r in ref.values() if r[0] == best) - 1e-5
        assert got.chain == _naive_chain(s, 0.3) and got.version_chain == _naive_chain(s, 0.8)
    # min_chain: the diagonal is searched only where the chain covers that share of the shorter track
    full = align_pairs(a, b, 0.3, 0.8)
    for got, want, x, y in zip(align_pairs(a, b, 0.3, 0.8, min_chain=0.6), full, a, b):
        searched = want.chain >= 0.6 * min(len(x), len(y))
        assert got.diagonal == (want.diagonal if searched else got.diagonal) and got.chain == want.chain
        assert searched or got.diagonal.run == 0


def _naive_best(s: np.ndarray, th: float) -> tuple[int, int, int, float]:
    """(offset, start_a, run, mean) of the documented winner: the longest run, then the higher mean, then the
    smaller |offset| (and, between d and -d, the earlier offset)."""
    ref = _naive_runs(s, th)
    if max((r[0] for r in ref.values()), default=0) == 0:
        return 0, 0, 0, 0.0
    d = min(ref, key=lambda k: (-ref[k][0], -ref[k][2], abs(k), k))
    return d, ref[d][1], ref[d][0], ref[d][2]


@pytest.mark.parametrize("seed", range(8))
def test_ties_at_the_threshold_and_between_diagonals_match_naive_loops(seed: int) -> None:
    """Cosines on a grid of quarters (exact in binary): entries equal to the threshold count as matches, and
    equal runs with equal means are broken by |offset|, so ties really occur (random floats never tie)."""
    rng = np.random.default_rng(100 + seed)
    m, n = rng.integers(2, 12, size=2)
    s = rng.integers(0, 5, size=(m, n)) / 4.0  # 0, 0.25, 0.5, 0.75, 1.0
    th = 0.5
    assert (s == th).any()
    offsets, run, start, mean = diagonal_runs(s, th)
    ref = _naive_runs(s, th)
    assert [(int(run[k]), int(start[k]), float(mean[k])) for k in range(len(offsets))] == \
        [ref[d] for d in offsets.tolist()]
    d = best_diagonal(s, th)
    assert (d.offset, d.start_a, d.run, d.mean) == _naive_best(s, th)
    assert monotone_chain(s, th) == _naive_chain(s, th)
    y = [np.eye(n)]  # align_pairs on the same matrix: rows of s as vectors against the unit basis
    (got,) = align_pairs([s.astype(np.float32)], y, th, 0.75)
    g = got.diagonal
    assert (g.offset, g.start_a, g.run, g.mean) == _naive_best(s, th)
    assert got.chain == _naive_chain(s, th) and got.version_chain == _naive_chain(s, 0.75)


def test_equal_diagonals_either_side_prefer_the_smaller_offset() -> None:
    """A 1 on offsets -3, +1 and +4 only: all runs of 1 with mean 1, so the smallest |offset| (+1) wins."""
    s = np.zeros((6, 6))
    s[3, 0] = s[0, 1] = s[1, 5] = 1.0
    d = best_diagonal(s, 0.5)
    assert (d.offset, d.start_a, d.run, d.mean) == (1, 0, 1, 1.0)


def test_empty_matrices_give_the_empty_diagonal() -> None:
    from songseek.engine.analysis.alignment import Diagonal

    for shape in ((0, 3), (3, 0), (0, 0)):
        assert best_diagonal(np.zeros(shape), 0.5) == Diagonal(offset=0, start_a=0, run=0, mean=0.0)
        assert monotone_chain(np.zeros(shape), 0.5) == 0


@pytest.mark.parametrize("threshold", [0.0, -0.5])
def test_padding_never_matches_even_at_a_threshold_below_zero(threshold: float) -> None:
    """Pairs of mixed sizes share one padded batch; a padded cell is no window, so it matches nothing even
    where every real cosine does (a threshold <= 0)."""
    rng = np.random.default_rng(11)
    a, b = [], []
    for m, n in ((2, 9), (9, 2), (5, 5), (1, 7), (7, 1)):
        x = rng.standard_normal((m, 4)).astype(np.float32)
        y = rng.standard_normal((n, 4)).astype(np.float32)
        a.append(x / np.linalg.norm(x, axis=1, keepdims=True))
        b.append(y / np.linalg.norm(y, axis=1, keepdims=True))
    for got, x, y in zip(align_pairs(a, b, threshold, threshold), a, b):
        s = (x @ y.T).astype(np.float64)
        ref = _naive_runs(s, threshold)
        best = max(r[0] for r in ref.values())
        assert got.diagonal.run == best and ref[got.diagonal.offset][0] == best
        assert got.chain == got.version_chain == _naive_chain(s, threshold)
