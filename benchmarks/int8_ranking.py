"""Does a text backend change rankings? (`songseek bench text-ranking`)

For each query text, the library is searched with the torch vector (the reference), with each ONNX
backend's vector, and with a control: the torch vector moved in a random direction by exactly the angle
int8 moved it (``matched_noise``). If the control reorders the top-k as often as int8 does, the library
cannot tell int8's error from any error of that size: its top-k scores sit closer together than the error
(``score_gap``), and the check says nothing about int8 itself. Two figures tell how much room a library
leaves: ``spread``, the median cosine between different queries' vectors (near 1: the tower maps every
text to almost the same vector, as random weights do), and the median gap between the 1st and k-th score.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from songseek.benchmarks.speed import Agreement, topk_agreement
from songseek.engine.encoders import Encoder, l2_normalize, onnx_text
from songseek.engine.encoders.base import TextBackendEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library, SearchOptions

BACKENDS = ("onnx", "onnx-int8")


def matched_noise(reference: np.ndarray, cosines: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit rows at exactly ``cosines[i]`` with unit ``reference[i]``, moved in a seeded random direction
    orthogonal to it: float32 (n, dim)."""
    ref = l2_normalize(np.asarray(reference, np.float64)).astype(np.float64)
    cos = np.clip(np.asarray(cosines, np.float64), -1.0, 1.0)[:, None]
    noise = np.random.default_rng(seed).standard_normal(ref.shape)
    noise -= (noise * ref).sum(axis=1, keepdims=True) * ref
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cos * ref + np.sqrt(1.0 - cos**2) * noise).astype(np.float32)


def spread(vectors: np.ndarray) -> float:
    """Median cosine between the unit vectors of different rows (1.0: every text maps to the same vector)."""
    v = l2_normalize(vectors).astype(np.float64)
    g = v @ v.T
    return float(np.median(g[~np.eye(len(v), dtype=bool)])) if len(v) > 1 else float("nan")


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (l2_normalize(a).astype(np.float64) * l2_normalize(b).astype(np.float64)).sum(axis=1)


@dataclass(frozen=True)
class VariantCheck:
    """One way of embedding the queries against torch: its cosines and the top-k it gives."""

    name: str
    min_cosine: float
    median_cosine: float
    agreement: Agreement


@dataclass(frozen=True)
class RankingReport:
    library: str
    frames: int
    tracks: int
    encoder: str
    random_weights: bool
    queries: int
    k: int
    spread: float       # median cosine between different queries' torch vectors
    score_gap: float    # median (score of hit 1 - score of hit k) on torch's searches
    checks: tuple[VariantCheck, ...]
    load_avg: float
    tower_folder: str   # where the encoder's exported towers live (``--save`` writes the check there)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def int8_check(self) -> onnx_text.RankingCheck | None:
        """int8's result as the record ``auto`` reads (None when int8 could not run)."""
        for c in self.checks:
            if c.name == "onnx-int8":
                return onnx_text.RankingCheck(self.library, self.queries, self.k, c.agreement.identical,
                                              c.agreement.same_set, c.min_cosine, self.random_weights)
        return None


def run_text_ranking(library: Path, texts: Sequence[str], *, encoder: Encoder | None = None, k: int = 10,
                     options: SearchOptions | None = None, seed: int = 0) -> RankingReport:
    """Search ``library`` with ``texts`` embedded by torch, each ONNX backend and int8's matched-noise
    control, and compare each top-``k`` with torch's."""
    if len(texts) < 2 or k < 1:
        raise UsageError(f"run_text_ranking needs at least 2 texts and k >= 1 (got {len(texts)}, {k})")
    load = os.getloadavg()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(library, encoder=encoder, text_backend="torch", text_cache=None)
    enc = lib.encoder
    if not isinstance(enc, TextBackendEncoder):
        raise UsageError(f"the {enc.info.name} encoder has one text path (torch): nothing to compare")
    opts = replace(options or SearchOptions(), k=k).validated()
    texts = list(texts)
    vecs: dict[str, np.ndarray] = {}
    for b in ("torch", *BACKENDS):
        enc.set_text_backend(b)
        if enc.text_backend_state().backend != b:
            continue  # onnxruntime missing or export failed: nothing to compare for it
        vecs[b] = np.concatenate([lib.embed_text([t]) for t in texts])  # one at a time, as queries come
    enc.set_text_backend("torch")
    if "onnx-int8" in vecs:
        vecs["noise at int8's cosines"] = matched_noise(vecs["torch"], row_cosines(vecs["onnx-int8"], vecs["torch"]),
                                                        seed)
    hits = {name: lib.search_vectors(v, opts) for name, v in vecs.items()}
    ids = {name: [[h.track_id for h in hs] for hs in per_query] for name, per_query in hits.items()}
    gaps = [hs[0].score - hs[min(k, len(hs)) - 1].score for hs in hits["torch"] if hs]
    checks = []
    for name, v in vecs.items():
        if name == "torch":
            continue
        cos = row_cosines(v, vecs["torch"])
        checks.append(VariantCheck(name, float(cos.min()), float(np.median(cos)),
                                   topk_agreement(ids[name], ids["torch"], k)))
    info = enc.info
    return RankingReport(str(library), lib.store.n_rows, lib.n_tracks, info.name, info.random_weights, len(texts),
                         k, spread(vecs["torch"]), float(np.median(gaps)) if gaps else float("nan"),
                         tuple(checks), load, enc.text_tower_folder())
