"""engine/query/search.py candidates: a k near or past the library's size on an IVF index. The first FAISS
request (candidates × mean frames per track) then covers every indexed frame, and the probed lists hold only
some tracks: the search used to return those (421 of 1,060 tracks for -k 5000, while -k 600 gave 600)
instead of filling in by the exact scan, as it does for smaller k (docs/robustness.md: -k larger than the
library returns every track)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


def _brute_order(lib: Library, q: np.ndarray) -> list[str]:
    """Every live track by its best frame's cosine, best first (float64)."""
    qn = q.astype(np.float64) / np.linalg.norm(q)
    best = [(-float((np.asarray(lib.store.vectors(r["frame_start"], r["frame_count"]), np.float64) @ qn).max()),
             r["track_id"]) for r in lib.tracks.to_pylist()]
    return [t for _, t in sorted(best)]


@pytest.mark.parametrize("k", [300, 1000])
def test_k_of_the_whole_library_returns_every_track_through_an_ivf_index(tmp_path: Path, k: int) -> None:
    ingest_table(vector_table(300, 16, seed=7, max_frames=20), tmp_path / "lib", index_factory="IVF16,Flat")
    lib = Library.open(tmp_path / "lib")
    assert "IVF" in lib.manifest.index_description and lib.n_tracks == 300
    rng = np.random.default_rng(3)
    for _ in range(3):
        q = rng.standard_normal(16).astype(np.float32)
        hits = lib.search(vector=q, k=k, nprobe=1, rerank="max")
        assert [h.track_id for h in hits] == _brute_order(lib, q)


def test_more_k_never_returns_fewer_tracks_through_an_ivf_index(tmp_path: Path) -> None:
    ingest_table(vector_table(300, 16, seed=8, max_frames=20), tmp_path / "lib", index_factory="IVF16,Flat")
    lib = Library.open(tmp_path / "lib")
    q = np.random.default_rng(4).standard_normal(16).astype(np.float32)
    counts = [len(lib.search(vector=q, k=k, nprobe=1, rerank="max")) for k in (50, 150, 250, 300, 400)]
    assert counts == [50, 150, 250, 300, 300]
