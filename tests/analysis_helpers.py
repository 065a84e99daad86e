"""Seeded libraries for the analysis tests (tags, outliers, MOS, long text): vectors planted near texts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.encoders.fake import FakeEncoder
from songseek.indexers.ingest import ingest_table

FAKE_INFO = FakeEncoder().info


def unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(np.atleast_2d(np.asarray(x, np.float32)))


def build_library(root: Path, tracks: Sequence[np.ndarray], encoder: EncoderInfo | None = FAKE_INFO,
                  ids: Sequence[str] | None = None, hop: float = 10.0) -> Path:
    """Ingest tracks given as float (T_i, dim) window vectors; track i is ``t{i:03d}`` at /music/t{i:03d}.wav."""
    rows = []
    for i, vecs in enumerate(tracks):
        tid = ids[i] if ids is not None else f"t{i:03d}"
        for f, v in enumerate(np.atleast_2d(vecs)):
            rows.append({"track_id": tid, "start_s": f * hop, "end_s": f * hop + hop,
                         "embedding": np.asarray(v, np.float32).tolist(), "path": f"/music/{tid}.wav"})
    ingest_table(pa.Table.from_pylist(rows), root, encoder=encoder)
    return root


def noisy_copies(center: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors around a direction: center + noise * N(0, I/dim)."""
    c = unit(center)[0]
    return unit(c[None, :] + noise * rng.standard_normal((n, len(c))) / np.sqrt(len(c)))
