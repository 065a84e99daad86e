"""`songseek bench rerank --library LIB --queries FILE [--save]`: each rerank setting on the user's own
labelled queries, through the real engine, and the best one kept in the library's manifest.

The queries are embedded once; every setting of :data:`SETTINGS` (the modes of engine/query/fusion.py at a
few parameter values) ranks them through ``Library.search_vectors`` (long texts through their sentence
chunks), exactly as `songseek search` would. The best setting has the highest R@10, then mAP@10, then R@1;
a tie keeps the earlier setting (the default comes first). ``save_settings`` writes it to the manifest,
and every search of that library uses it unless it passes its own ``--rerank``/fusion parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypedDict

from songseek.engine.query.fusion import RerankSettings, params_for_hop
from songseek.engine.query.search import Library
from songseek.engine.storage.writer import LibraryWriter

from .datasets import QuerySet
from .metrics import DEFAULT_KS
from .report import ModeResult
from .runner import prepare_queries, search_plan, text_to_audio


class FusionChanges(TypedDict, total=False):
    """The FusionParams fields a tuning setting changes."""

    gamma_k: float
    gamma_t: float
    temperature: float
    mean_weight: float
    hedge_weight: float


# (label, mode, parameter changes): the default first, then the alternatives worth measuring.
SETTINGS: tuple[tuple[str, str, FusionChanges], ...] = (
    ("auto", "auto", {}),
    ("hedge", "hedge", {}),
    ("hedge, weight 2", "hedge", {"hedge_weight": 2.0}),
    ("part", "part", {}),
    ("whole", "whole", {}),
    ("fusion", "fusion", {}),
    ("fusion, max-leaning (gamma_k 0.2, tau 0.2)", "fusion", {"gamma_k": 0.2, "gamma_t": 0.8, "temperature": 0.2}),
    ("fusion, mean-leaning (gamma_k 0.5, tau 0.5)", "fusion", {"gamma_k": 0.5, "gamma_t": 0.5, "temperature": 0.5}),
    ("blend (mean weight 0.5)", "blend", {"mean_weight": 0.5}),
    ("blend (mean weight 1)", "blend", {"mean_weight": 1.0}),
    ("mean", "mean", {}),
    ("max", "max", {}),
)


@dataclass(frozen=True)
class TunedRerank:
    """Every setting's text→audio result (label → (settings, result)) and the label of the best."""

    results: dict[str, tuple[RerankSettings, ModeResult]]
    best: str

    @property
    def best_settings(self) -> RerankSettings:
        return self.results[self.best][0]


def candidate_settings(lib: Library) -> dict[str, RerankSettings]:
    """SETTINGS as RerankSettings at the library's hop (segments of 30 s whatever the hop)."""
    base = params_for_hop(lib.manifest.hop_s, window_s=lib.manifest.window_s)
    return {label: RerankSettings(mode, replace(base, **changes)) for label, mode, changes in SETTINGS}


def tune_rerank(lib: Library, queries: QuerySet, candidates: int | None = None, ci: bool = False
                ) -> TunedRerank:
    """Measure every candidate setting on ``queries`` (see the module docstring)."""
    prepared = prepare_queries(lib, queries)
    plan = search_plan(lib.n_tracks, DEFAULT_KS, candidates)
    out: dict[str, tuple[RerankSettings, ModeResult]] = {}
    for label, settings in candidate_settings(lib).items():
        res, _ = text_to_audio(lib, prepared.vectors, prepared.relevant, [settings.mode], settings.params,
                               DEFAULT_KS, plan, prepared.spans, prepared.texts, ci, kinds=prepared.kinds)
        out[label] = (settings, res[settings.mode])

    def key(label: str) -> tuple[float, float, float]:
        m = out[label][1].metrics
        return (m["R@10"], m["mAP@10"], m["R@1"])

    best = max(out, key=key)  # max returns the first of equal keys: the default wins ties
    return TunedRerank(out, best)


def save_settings(root: Path, settings: RerankSettings) -> None:
    """Keep ``settings`` in the library's manifest (one commit; nothing else changes)."""
    with LibraryWriter(root) as writer:
        writer.set_rerank(settings.to_json())
        writer.commit()
