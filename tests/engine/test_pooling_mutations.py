"""pooling.py against a naive reference: each track's window vectors averaged in a plain loop, then divided
by their length; a track whose windows cancel out pools to the zero vector, never to NaN."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from songseek.engine.analysis.pooling import library_track_vectors, pooled_track_vectors


class _Store:
    """What pooling reads of a FrameStore: ``dim`` and ``vectors(start, count)``."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows, self.dim = rows, rows.shape[1]

    def vectors(self, start: int, count: int) -> np.ndarray:
        assert 0 <= start and start + count <= len(self.rows)
        return self.rows[start:start + count]


def _naive(rows: np.ndarray, starts: list[int], counts: list[int]) -> list[list[float]]:
    out = []
    for s, c in zip(starts, counts):
        mean = [sum(float(rows[s + t, j]) for t in range(c)) / c for j in range(rows.shape[1])]
        norm = math.sqrt(sum(v * v for v in mean))
        out.append([v / norm if norm > 0 else 0.0 for v in mean])
    return out


def test_pooled_vectors_equal_the_naive_normalised_means() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((40, 6)).astype(np.float32)
    rows[30] = rows[20] * 1000.0  # one loud window outweighs the others of its track
    rows[31] = -rows[32]          # a track whose two windows cancel out
    starts, counts = [0, 5, 17, 18, 31, 20], [5, 12, 1, 13, 2, 11]
    store = _Store(rows)
    got = pooled_track_vectors(store, np.array(starts), np.array(counts))  # type: ignore[arg-type]
    assert got.dtype == np.float32 and got.shape == (6, 6)
    np.testing.assert_allclose(got, _naive(rows, starts, counts), atol=1e-6)
    assert not np.isnan(got).any() and (got[4] == 0).all()
    tracks = pa.table({"track_id": [f"t{i}" for i in range(6)], "frame_count": pa.array(counts, pa.int32()),
                       "frame_start": pa.array(starts, pa.int64())})
    np.testing.assert_array_equal(library_track_vectors(store, tracks), got)  # type: ignore[arg-type]
