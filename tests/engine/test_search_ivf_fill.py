"""An IVF library whose probed lists hold fewer than k tracks still returns k hits, without a filter too.

The first FAISS search asks for about ``candidates`` tracks' worth of frames; when that is already the
whole index (a library of no more tracks than ``candidates``) and the probed lists run out, the exact scan
must still fill in (docs/api.md: a search returns k hits, or every track if fewer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from songseek import Library
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


def brute_best_window(lib: Library, q: np.ndarray) -> list[str]:
    """Track ids by their best window (float32 brute force, ties by id): the `max` rerank's order."""
    qn = (q / np.linalg.norm(q)).astype(np.float32)
    best = [(-float((np.asarray(lib.store.vectors(r["frame_start"], r["frame_count"])) @ qn).max()), r["track_id"])
            for r in lib.tracks.to_pylist()]
    return [t for _, t in sorted(best)]


def test_ivf_without_filter_returns_k_hits_when_the_probed_lists_hold_too_few(tmp_path: Path) -> None:
    ingest_table(vector_table(60, 16, seed=5, max_frames=20), tmp_path / "lib", index_factory="IVF16,Flat")
    lib = Library.open(tmp_path / "lib")
    assert "IVF" in lib.manifest.index_description and lib.n_tracks == 60
    rng = np.random.default_rng(2)
    for _ in range(4):
        q = rng.standard_normal(16).astype(np.float32)
        for candidates in (200, 60):  # both at least the library's tracks: the first search covers the index
            hits = lib.search(vector=q, k=60, nprobe=1, candidates=candidates, rerank="max")
            assert [h.track_id for h in hits] == brute_best_window(lib, q)
        hits = lib.search(vector=q, k=40, nprobe=1, rerank="max")
        assert [h.rank for h in hits] == list(range(1, 41))
        assert [h.track_id for h in hits] == brute_best_window(lib, q)[:40]
