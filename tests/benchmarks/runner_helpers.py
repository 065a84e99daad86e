"""Shared by the runner tests: a vector library of 40 tracks, its frames, and naive per-track scores."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa

from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.search import Library
from tests.rerank_reference import naive_scores


def open_quiet(path: Path) -> Library:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Library.open(path)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def track_frames(table: pa.Table) -> dict[str, np.ndarray]:
    ids = np.asarray(table.column("track_id").to_pylist())
    starts = table.column("start_s").to_numpy()
    emb = unit(np.asarray(table.column("embedding").to_pylist(), dtype=np.float64)).astype(np.float32)
    return {t: emb[ids == t][np.argsort(starts[ids == t])] for t in sorted(set(ids.tolist()))}


def naive_track_scores(frames: dict[str, np.ndarray], q: np.ndarray, mode: str) -> dict[str, float]:
    """Every track's score for one query, straight from its window vectors."""
    q = (q / np.linalg.norm(q)).astype(np.float32)
    if mode == "mean":  # float64 mean, as the engine's pool_mean
        return {t: float(np.mean((f @ q).astype(np.float64))) for t, f in frames.items()}
    # every track is a candidate: naive_scores puts them all on the query's own scale
    scores = naive_scores(mode, [list(f @ q) for f in frames.values()], FusionParams())
    return {t: float(sc) for t, sc in zip(frames, scores, strict=True)}


def engine_order(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda t: (-np.float32(scores[t]), t))
