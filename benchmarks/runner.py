"""Retrieval benchmark runs through the real engine, so what is measured is what users get.

text→audio: every query goes through ``Library.search_vectors`` with each rerank mode; its first rank is
the rank of the best-ranked relevant track. With ``exhaustive`` (default for libraries up to
``EXHAUSTIVE_MAX`` tracks) every track is a candidate, so ranks are exact; otherwise ranks past the
returned list are censored at k+1 (said in ``settings``).
audio→text: each track scores every caption with the same rerank rule over its frames; a track's first
rank is the rank of its best-ranked caption.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from songseek import __version__
from songseek.engine.encoders import Encoder
from songseek.engine.fusion import FusionParams, rerank_scores
from songseek.engine.progress import Progress
from songseek.engine.search import Library, SearchOptions
from songseek.indexers.pipeline import IndexConfig

from .datasets import QuerySet, RetrievalDataset, dataset_hash
from .metrics import DEFAULT_KS, ranks_from_scores, retrieval_metrics, segment_iou
from .report import ModeResult

EXHAUSTIVE_MAX = 20_000


@dataclass(frozen=True)
class RetrievalRun:
    """direction ("text_to_audio", "audio_to_text") → mode → ModeResult, and the exact settings."""

    results: dict[str, dict[str, ModeResult]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for direction, modes in self.results.items():
            out[direction] = {}
            for mode, run in modes.items():
                out[direction][mode] = dict(run.metrics)
        out["settings"] = self.settings
        return out


def library_settings(lib: Library) -> dict[str, Any]:
    m = lib.manifest
    return {"songseek_version": __version__, "library": str(lib.root), "encoder": m.encoder.name,
            "checkpoint": m.encoder.checkpoint, "checkpoint_sha256": m.encoder.checkpoint_sha256,
            "random_weights": m.encoder.random_weights, "window_s": m.window_s, "hop_s": m.hop_s,
            "index": m.index_description, "tracks": lib.n_tracks}


def text_to_audio(lib: Library, vectors: np.ndarray, relevant: Sequence[Sequence[str]], modes: Sequence[str],
                  fusion: FusionParams, ks: Sequence[int] = DEFAULT_KS, candidates: int | None = None,
                  spans: Sequence[tuple[float, float] | None] | None = None) -> dict[str, ModeResult]:
    """Rank tracks for each query vector (float32 (Q, dim)); relevant = track ids per query."""
    exhaustive = lib.n_tracks <= EXHAUSTIVE_MAX
    k = lib.n_tracks if exhaustive else max(ks)
    cands = candidates or (lib.n_tracks if exhaustive else 200)
    out = {}
    for mode in modes:
        hits = lib.search_vectors(vectors, SearchOptions(k=k, rerank=mode, candidates=max(cands, k), fusion=fusion))
        ranks = np.empty(len(hits), dtype=np.int64)
        ious: list[float] = []
        for qi, (qhits, rel) in enumerate(zip(hits, relevant)):
            rel_set = set(rel)
            pos = next((h.rank for h in qhits if h.track_id in rel_set), k + 1)
            ranks[qi] = pos
            span = spans[qi] if spans is not None else None
            if span is not None:
                hit = next((h for h in qhits if h.track_id in rel_set), None)
                ious.append(float(segment_iou(hit.segment.start_s, hit.segment.end_s, *span)) if hit else 0.0)
        rate = float(np.mean(np.asarray(ious) >= 0.5)) if ious else None
        out[mode] = ModeResult({**retrieval_metrics(ranks, ks), **({} if rate is None else {"IoU@0.5": rate})},
                               ranks, n_queries=len(ranks), n_candidates=lib.n_tracks)
    return out


def audio_to_text(lib: Library, caption_vectors: np.ndarray, caption_track: Sequence[str], modes: Sequence[str],
                  fusion: FusionParams, ks: Sequence[int] = DEFAULT_KS) -> dict[str, ModeResult]:
    """Rank captions (float32 (C, dim)) for each track that owns at least one; best caption counts."""
    tracks = lib.tracks.to_pylist()
    owner = np.asarray(caption_track, dtype=object)
    out = {}
    for mode in modes:
        ranks = []
        for row in tracks:
            mine = np.flatnonzero(owner == row["track_id"])
            if len(mine) == 0:
                continue
            sims = (lib.store.vectors(row["frame_start"], row["frame_count"]) @ caption_vectors.T).T  # (C, T)
            lengths = np.full(len(sims), sims.shape[1], dtype=np.int64)
            pooled = rerank_scores("max" if mode == "none" else mode, sims.astype(np.float32), lengths, fusion)
            ranks.append(int(ranks_from_scores(pooled.score[None], [mine])[0]))  # ties: pessimistic
        r = np.asarray(ranks, dtype=np.int64)
        out[mode] = ModeResult(retrieval_metrics(r, ks), r, n_queries=len(r), n_candidates=len(caption_vectors))
    return out


def evaluate_queries(lib: Library, queries: QuerySet, modes: Sequence[str], fusion: FusionParams | None = None,
                     ks: Sequence[int] = DEFAULT_KS, candidates: int | None = None) -> RetrievalRun:
    """`songseek bench retrieval --library LIB --queries FILE`: text or vector queries with relevant ids."""
    fusion = fusion or FusionParams()
    t0 = time.perf_counter()
    texts = [q.text for q in queries.queries if q.text is not None]
    if texts and len(texts) != len(queries):
        from songseek.engine.errors import UsageError

        raise UsageError(f"{queries.path}: mix of text and vector queries; use one kind per file")
    vecs = lib.embed_text(texts) if texts else np.stack([q.vector for q in queries.queries]).astype(np.float32)
    spans = [(q.start_s, q.end_s) if q.start_s is not None and q.end_s is not None else None
             for q in queries.queries]
    t2a = text_to_audio(lib, vecs, [q.relevant for q in queries.queries], modes, fusion, ks, candidates,
                        spans if any(s is not None for s in spans) else None)
    settings = {**library_settings(lib), "queries": str(queries.path), "n_queries": len(queries),
                "modes": list(modes), "fusion": fusion.__dict__, "ks": list(ks),
                "exhaustive": lib.n_tracks <= EXHAUSTIVE_MAX, "seconds": time.perf_counter() - t0}
    return RetrievalRun({"text_to_audio": t2a}, settings)


def library_track_ids(lib: Library) -> dict[str, str]:
    """Absolute path → track id, to map dataset items onto the library built from them."""
    return {str(Path(r["path"]).resolve()): r["track_id"] for r in lib.tracks.to_pylist()}


def evaluate_dataset(dataset: RetrievalDataset, library: Path, encoder: Encoder, modes: Sequence[str],
                     config: IndexConfig | None = None, fusion: FusionParams | None = None,
                     ks: Sequence[int] = DEFAULT_KS, progress: Progress | None = None) -> RetrievalRun:
    """`songseek bench retrieval --dataset MANIFEST`: index the dataset's audio into ``library`` (only
    what is new), then text→audio over every caption and audio→text over every track."""
    from songseek.engine.errors import UsageError
    from songseek.indexers.pipeline import index_paths

    fusion = fusion or FusionParams()
    if not dataset.items:
        raise UsageError(f"{dataset.source}: no dataset item has its audio present ({len(dataset.missing)} missing)")
    t0 = time.perf_counter()
    files = sorted({it.audio_path.resolve() for it in dataset.items})
    report = index_paths(files, library, encoder, config or IndexConfig(), progress)
    lib = Library.open(library, encoder=encoder)
    ids = library_track_ids(lib)
    texts, owner = dataset.caption_pairs()
    item_track = [ids.get(str(it.audio_path.resolve())) for it in dataset.items]
    keep = [i for i, o in enumerate(owner) if item_track[o] is not None]
    if not keep:
        raise UsageError(f"{dataset.source}: none of the dataset's audio could be indexed "
                         f"(see `songseek failures --library {library}`)")
    vecs = lib.embed_text([texts[i] for i in keep])
    rel = [[item_track[owner[i]]] for i in keep]
    spans = []
    for i in keep:
        it = dataset.items[owner[i]]
        spans.append((it.start_s, it.end_s) if it.start_s is not None and it.end_s is not None else None)
    t2a = text_to_audio(lib, vecs, rel, modes, fusion, ks,
                        spans=spans if any(s is not None for s in spans) else None)
    a2t = audio_to_text(lib, vecs, [r[0] for r in rel], modes, fusion, ks)
    settings = {**library_settings(lib), "dataset": str(dataset.source), "dataset_hash": dataset_hash(dataset),
                "items": len(dataset.items), "missing_audio": len(dataset.missing), "captions": len(keep),
                "failed_to_index": report.failed, "modes": list(modes), "fusion": fusion.__dict__,
                "ks": list(ks), "exhaustive": lib.n_tracks <= EXHAUSTIVE_MAX,
                "seconds": time.perf_counter() - t0}
    return RetrievalRun({"text_to_audio": t2a, "audio_to_text": a2t}, settings)
