"""Outliers with reasons (seed 004: retrieval-augmented anomaly detection with CLAP, Eq. 1 and §III-C).

Each track is one vector: the mean of its stored window vectors, L2-normalised (no audio is re-embedded).
Its anomaly score is the mean Euclidean distance to its k nearest neighbours in a reference set (Eq. 1,
k = 4 in the paper): the library itself by default, the track excluded, or another library built with
the same encoder (e.g. a folder of known-good tracks). Neighbours come from a FAISS L2 index over the
reference track vectors (exact "Flat" up to ``HNSW_THRESHOLD`` references, HNSW above).

Reasons (the paper's zero-shot method, without the LLM): for L descriptor texts T_l ("noise", "speech",
"solo piano", ...), the difference d_l = cos(x, T_l) - mean_i cos(X_i, T_l) between the outlier x and its
k neighbours X_i; the descriptors with the largest |d_l| are the reasons, with their sign (positive: the
outlier sounds more like the descriptor than its neighbours do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from songseek.engine.analysis.pooling import library_track_vectors
from songseek.engine.errors import UsageError
from songseek.engine.query.filters import filter_track_ids
from songseek.engine.query.search import Library
from songseek.engine.storage.manifest import check_compatible

DEFAULT_K = 4
HNSW_THRESHOLD = 50_000


@dataclass(frozen=True)
class Reason:
    """One descriptor that separates an outlier from its neighbours: ``difference`` = ``outlier`` -
    ``neighbours`` (cosine of the outlier's vector with the descriptor minus the neighbours' mean cosine)."""

    descriptor: str
    difference: float
    outlier: float
    neighbours: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Outlier:
    """A track, its anomaly score (mean L2 distance to its k nearest reference tracks), the neighbours
    (track ids in the reference set, nearest first, with their distances) and the reasons."""

    rank: int
    track_id: str
    path: str
    score: float
    neighbours: tuple[str, ...]
    distances: tuple[float, ...]
    reasons: tuple[Reason, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "track_id": self.track_id, "path": self.path, "score": self.score,
                "neighbours": list(self.neighbours), "distances": list(self.distances),
                "reasons": [r.to_json() for r in self.reasons]}


def _l2_index(reference: np.ndarray, factory: str | None) -> Any:
    import faiss

    dim = reference.shape[1]
    factory = factory or ("Flat" if len(reference) <= HNSW_THRESHOLD else "HNSW32")
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
    except RuntimeError as exc:
        raise UsageError(f"bad outlier index factory {factory!r}: {str(exc).splitlines()[0]}") from exc
    if not index.is_trained:
        index.train(reference)
    index.add(reference)
    return index


def knn_scores(queries: np.ndarray, reference: np.ndarray, k: int = DEFAULT_K, exclude_self: bool = False,
               factory: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 1 for every query row. queries float (N, dim), reference float (M, dim).

    With ``exclude_self`` the queries are the reference rows themselves (N == M) and row i is never its
    own neighbour. Returns (score float32 (N,), neighbour rows int64 (N, k), distances float32 (N, k)),
    neighbours nearest first; score = mean of the k Euclidean distances."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    ref = np.ascontiguousarray(reference, dtype=np.float32)
    if k < 1:
        raise UsageError(f"-k must be at least 1 (got {k})")
    if exclude_self and len(q) != len(ref):
        raise UsageError("exclude_self needs the queries to be the reference rows")
    available = len(ref) - (1 if exclude_self else 0)
    if available < k:
        raise UsageError(f"-k {k} needs at least {k + int(exclude_self)} reference tracks, "
                         f"the reference set has {len(ref)}")
    if len(q) == 0:
        return np.zeros(0, np.float32), np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    index = _l2_index(ref, factory)
    extra = 1 if exclude_self else 0
    d2, rows = index.search(q, k + extra)
    if exclude_self:
        own = rows == np.arange(len(q))[:, None]
        # drop the row itself where found, else the farthest of the k + 1 (a duplicate took its place)
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones(rows.shape, bool)
        keep[np.arange(len(q)), drop] = False
        rows = rows[keep].reshape(len(q), k)
        d2 = d2[keep].reshape(len(q), k)
    dist = np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)
    return dist.mean(axis=1, dtype=np.float64).astype(np.float32), rows.astype(np.int64), dist


def explain(x: np.ndarray, neighbours: np.ndarray, descriptor_vectors: np.ndarray,
            descriptors: Sequence[str], top: int = 3) -> tuple[Reason, ...]:
    """The ``top`` descriptors whose cosine differs most (in absolute value) between the unit vector x
    float (dim,) and the mean over its neighbours float (k, dim); descriptor_vectors float (L, dim) unit
    rows. Ties are broken by descriptor order."""
    t = np.asarray(descriptor_vectors, dtype=np.float64)
    if len(t) != len(descriptors):
        raise UsageError(f"{len(descriptors)} descriptors but {len(t)} descriptor vectors")
    own = t @ np.asarray(x, dtype=np.float64)
    near = (np.asarray(neighbours, dtype=np.float64) @ t.T).mean(axis=0)
    diff = own - near
    order = np.lexsort((np.arange(len(diff)), -np.abs(diff)))[: max(top, 0)]
    return tuple(Reason(descriptors[i], float(diff[i]), float(own[i]), float(near[i])) for i in order)


def rank_outliers(track_ids: Sequence[str], paths: Sequence[str], vectors: np.ndarray, k: int = DEFAULT_K,
                  top: int = 20, reference: np.ndarray | None = None,
                  reference_ids: Sequence[str] | None = None, descriptor_vectors: np.ndarray | None = None,
                  descriptors: Sequence[str] = (), n_reasons: int = 3, factory: str | None = None
                  ) -> list[Outlier]:
    """The ``top`` most anomalous tracks, most anomalous first (ties: track id).

    vectors float32 (N, dim) unit track vectors; ``reference``/``reference_ids`` another set (default: the
    tracks themselves, each excluded from its own neighbours). Reasons need ``descriptor_vectors``."""
    self_ref = reference is None
    ref = vectors if reference is None else reference
    ref_ids = list(track_ids) if reference_ids is None else list(reference_ids)
    if len(ref_ids) != len(ref):
        raise UsageError(f"{len(ref)} reference vectors but {len(ref_ids)} reference ids")
    scores, rows, dist = knn_scores(vectors, ref, k, exclude_self=self_ref, factory=factory)
    ids = np.asarray(list(track_ids), dtype=object)
    order = np.lexsort((ids, -scores.astype(np.float64)))[: max(top, 0)]
    out = []
    for rank, i in enumerate(order, start=1):
        reasons: tuple[Reason, ...] = ()
        if descriptor_vectors is not None and len(descriptors):
            reasons = explain(vectors[i], ref[rows[i]], descriptor_vectors, descriptors, n_reasons)
        out.append(Outlier(rank, str(ids[i]), str(paths[i]), float(scores[i]),
                           tuple(str(ref_ids[r]) for r in rows[i]), tuple(float(d) for d in dist[i]), reasons))
    return out


def find_outliers(lib: Library, k: int = DEFAULT_K, top: int = 20, reference: Library | None = None,
                  descriptors: Sequence[str] = (), n_reasons: int = 3, factory: str | None = None,
                  where: str | None = None) -> list[Outlier]:
    """``rank_outliers`` over an open Library, from its stored window vectors.

    ``reference`` is another open Library made with the same encoder (default: ``lib`` itself, or with
    ``where`` the tracks it keeps: e.g. one folder, to find the file that does not belong there).
    Reasons need the library's text encoder (for the descriptor texts); with no descriptors there are none."""
    vecs = library_track_vectors(lib.store, lib.tracks)
    ids = [str(t) for t in lib.tracks.column("track_id").to_pylist()]
    paths = [str(p) for p in lib.tracks.column("path").to_pylist()]
    if where is not None:
        keep = set(filter_track_ids(lib.tables(), where, lib.filter_limits).tolist())
        rows = [i for i, t in enumerate(ids) if t in keep]
        if not rows:  # else -k's "needs at least k + 1 reference tracks, the reference set has 0"
            raise UsageError(f"no track matches --where {where!r}: there is nothing to score")
        vecs, ids, paths = vecs[rows], [ids[i] for i in rows], [paths[i] for i in rows]
    ref_vecs = ref_ids = None
    if reference is not None:
        check_compatible(reference.manifest, lib.manifest.encoder, reference.root)
        ref_vecs = library_track_vectors(reference.store, reference.tracks)
        ref_ids = [str(t) for t in reference.tracks.column("track_id").to_pylist()]
    desc_vecs = lib.embed_text(list(descriptors)) if len(descriptors) else None
    return rank_outliers(ids, paths, vecs, k, top, ref_vecs, ref_ids, desc_vecs, descriptors, n_reasons, factory)
