"""Track-level vectors pooled from window vectors, shared by outliers, opinion scores and duplicates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from songseek.engine.storage.store import FrameStore


def pooled_track_vectors(store: FrameStore, frame_start: np.ndarray, frame_count: np.ndarray) -> np.ndarray:
    """float32 (N, dim): the L2-normalised mean of each track's window vectors (tracks-table order)."""
    starts = np.asarray(frame_start, dtype=np.int64)
    counts = np.asarray(frame_count, dtype=np.int64)
    out = np.zeros((len(starts), store.dim), np.float32)
    for i, (s, c) in enumerate(zip(starts, counts)):
        out[i] = store.vectors(int(s), int(c)).mean(axis=0, dtype=np.float64)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def library_track_vectors(store: FrameStore, tracks: pa.Table) -> np.ndarray:
    return pooled_track_vectors(store, tracks.column("frame_start").to_numpy(zero_copy_only=False),
                                tracks.column("frame_count").to_numpy(zero_copy_only=False))
