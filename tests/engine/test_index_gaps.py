"""engine/storage/index.py exact_search with ties (a mutation sweep left its order open): the engine's rule,
best first and ties to the lower row (engine/query/candidates.py), holds for every k, also when k is
smaller than the number of rows and ties straddle the k-th place. Checked against a plain sort in float64
of the same float32 scores."""

from __future__ import annotations

import numpy as np
import pytest

from songseek.engine.storage.index import exact_search


def _naive(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[list[list[float]], list[list[int]]]:
    sims = queries @ vectors.T  # the same float32 products exact_search ranks
    scores, rows = [], []
    for s in sims:
        order = sorted(range(len(vectors)), key=lambda r: (-float(s[r]), r))[:k]
        rows.append(order)
        scores.append([float(s[r]) for r in order])
    return scores, rows


@pytest.mark.parametrize("seed", range(6))
def test_ties_go_to_the_lower_row_for_every_k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(20, 90)), 8
    distinct = rng.standard_normal((4, dim)).astype(np.float32)
    vectors = distinct[rng.integers(0, 4, n)]  # duplicates: every score is tied with about n/4 others
    queries = rng.standard_normal((3, dim)).astype(np.float32)
    for k in sorted({1, 2, 3, n // 4, n // 3, n // 2, n - 1, n, n + 5}):
        want_scores, want_rows = _naive(vectors, queries, k)
        scores, rows = exact_search(vectors, queries, k)
        assert rows.tolist() == want_rows, (n, k)
        assert scores.dtype == np.float32 and scores.tolist() == want_scores, (n, k)


def test_all_rows_tied_gives_the_first_k_rows() -> None:
    vectors = np.ones((50, 4), np.float32)
    queries = np.random.default_rng(7).standard_normal((2, 4)).astype(np.float32)
    for k in (1, 7, 49, 50):
        rows = exact_search(vectors, queries, k)[1]
        assert rows.tolist() == [list(range(k))] * 2
