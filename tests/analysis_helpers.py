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


def duplicate_tracks(seed: int = 0) -> list[np.ndarray]:
    """t000 a track; t001 its copy (noise, first window trimmed); t002 t000 with 4 windows cut out;
    t003..t007 unrelated tracks sharing one 'genre' direction with t000 (pooled cosine about 0.5)."""
    rng = np.random.default_rng(seed)
    genre = unit(rng.standard_normal(32))[0]
    base = unit(genre + unit(rng.standard_normal((16, 32))))
    copy = unit(base[1:] + 0.02 * rng.standard_normal((15, 32)))
    edit = np.concatenate([base[:6], base[10:]])
    others = [unit(genre + unit(rng.standard_normal((12, 32)))) for _ in range(5)]
    return [base, copy, edit, *others]


def text_tracks(seed: int = 4) -> list[np.ndarray]:
    """12 tracks in the fake encoder's space, each three runs of windows near a short text's direction, so
    that every query text finds windows of some tracks (the auto-rerank tests)."""
    enc = FakeEncoder()
    rng = np.random.default_rng(seed)
    centers = enc.embed_text(["soft piano", "loud drums", "a flute", "strings", "bass line", "a choir"])
    return [np.concatenate([noisy_copies(centers[(i + j) % len(centers)], int(rng.integers(1, 5)), 0.9, rng)
                            for j in range(3)]) for i in range(12)]
