"""engine/query/search.py candidates on an IVF index whose probed lists hold fewer tracks than a search
wants. When the first FAISS request (candidates x mean frames per track) already covers every indexed frame
(a library of no more tracks than ``candidates``, or a k near or past the library's size), the search used to
return what the probed lists held (6 of 12 hits; 421 of 1,060 tracks for -k 5000 while -k 600 gave 600)
instead of filling in by the exact scan, as it does otherwise (docs/api.md: k hits, or every track if
fewer). Found twice in session 14, by an API review and by a lifecycle review."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


def ivf_library(root: Path, tracks: int, seed: int) -> Library:
    ingest_table(vector_table(tracks, 16, seed=seed, max_frames=20), root, index_factory="IVF16,Flat")
    lib = Library.open(root)
    assert "IVF" in lib.manifest.index_description and lib.n_tracks == tracks
    return lib


def brute_order(lib: Library, q: np.ndarray) -> list[str]:
    """Every live track by its best frame's cosine, best first (float64; ties by id): the `max` order."""
    qn = q.astype(np.float64) / np.linalg.norm(q)
    best = [(-float((np.asarray(lib.store.vectors(r["frame_start"], r["frame_count"]), np.float64) @ qn).max()),
             r["track_id"]) for r in lib.tracks.to_pylist()]
    return [t for _, t in sorted(best)]


def test_a_library_no_larger_than_candidates_returns_k_hits(tmp_path: Path) -> None:
    lib = ivf_library(tmp_path / "lib", 60, seed=5)
    rng = np.random.default_rng(2)
    for _ in range(4):
        q = rng.standard_normal(16).astype(np.float32)
        for candidates in (200, 60):  # both at least the library's tracks: the first search covers the index
            hits = lib.search(vector=q, k=60, nprobe=1, candidates=candidates, rerank="max")
            assert [h.track_id for h in hits] == brute_order(lib, q)
        hits = lib.search(vector=q, k=40, nprobe=1, rerank="max")
        assert [h.rank for h in hits] == list(range(1, 41))
        assert [h.track_id for h in hits] == brute_order(lib, q)[:40]


@pytest.mark.parametrize("k", [300, 1000])
def test_k_of_the_whole_library_returns_every_track(tmp_path: Path, k: int) -> None:
    lib = ivf_library(tmp_path / "lib", 300, seed=7)
    rng = np.random.default_rng(3)
    for _ in range(3):
        q = rng.standard_normal(16).astype(np.float32)
        hits = lib.search(vector=q, k=k, nprobe=1, rerank="max")
        assert [h.track_id for h in hits] == brute_order(lib, q)


def test_more_k_never_returns_fewer_tracks(tmp_path: Path) -> None:
    lib = ivf_library(tmp_path / "lib", 300, seed=8)
    q = np.random.default_rng(4).standard_normal(16).astype(np.float32)
    counts = [len(lib.search(vector=q, k=k, nprobe=1, rerank="max")) for k in (50, 150, 250, 300, 400)]
    assert counts == [50, 150, 250, 300, 300]
