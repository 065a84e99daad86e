"""`songseek bench rerank --library LIB --queries FILE [--save]`: each rerank setting on the user's own
labelled queries, through the real engine, and the best one kept in the library's manifest.

The queries are embedded once; every setting of :data:`SETTINGS` (the modes of engine/query/fusion.py at a
few parameter values) ranks them through ``Library.search_vectors`` (long texts through their sentence
chunks), exactly as `songseek search` would. The best setting has the highest R@10, then mAP@10, then R@1;
a tie keeps the earlier setting (the default comes first). When the queries carry spans, only settings whose
segment IoU>=0.5 is at least the default's minus :data:`IOU_TOLERANCE` are eligible: ranking alone would
happily pick ``max``, whose segments are single windows (:func:`select_best`). ``save_settings`` writes the
best to the manifest, and every search of that library uses it unless it passes its own
``--rerank``/fusion parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypedDict

from songseek.engine.query.fusion import RerankSettings, params_for_hop
from songseek.engine.query.search import Library
from songseek.engine.storage.writer import LibraryWriter, acquire_lock

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
DEFAULT_LABEL = SETTINGS[0][0]
# Project rule: a rerank default must not lose segment quality (IoU>=0.5) against `auto`; one point of slack
# absorbs ties that differ by a single query on small query sets.
IOU_TOLERANCE = 0.01
IOU_METRIC = "IoU>=0.5"


@dataclass(frozen=True)
class Selection:
    """The best label, the labels left out (label → why) and whether segment quality was measured."""

    best: str
    excluded: dict[str, str]
    segments_measured: bool


def select_best(metrics: dict[str, dict[str, float]], default: str = DEFAULT_LABEL,
                tolerance: float = IOU_TOLERANCE) -> Selection:
    """Highest (R@10, mAP@10, R@1) among the eligible settings; ties keep the earliest (``metrics`` is in
    SETTINGS order, the default first). With spans (``IoU>=0.5`` in the default's metrics) a setting whose
    IoU>=0.5 is below the default's minus ``tolerance`` is not eligible; the default always is."""
    floor = metrics[default].get(IOU_METRIC)
    excluded: dict[str, str] = {}
    if floor is not None:
        for label, m in metrics.items():
            iou = m.get(IOU_METRIC, 0.0)
            # exactly `tolerance` below is allowed: 0.06 < 0.07 - 0.01 in floats
            if label != default and iou < floor - tolerance - 1e-9:
                excluded[label] = (f"segment IoU>=0.5 {100 * iou:.1f}% is more than {100 * tolerance:g} "
                                   f"point(s) below {default}'s {100 * floor:.1f}%")
    eligible = [label for label in metrics if label not in excluded]
    best = max(eligible, key=lambda lb: (metrics[lb]["R@10"], metrics[lb]["mAP@10"], metrics[lb]["R@1"]))
    return Selection(best, excluded, floor is not None)  # max returns the first of equal keys


@dataclass(frozen=True)
class TunedRerank:
    """Every setting's text→audio result (label → (settings, result)), the label of the best, the labels
    left out for segment quality (label → why) and whether segments were measured at all (queries with
    spans)."""

    results: dict[str, tuple[RerankSettings, ModeResult]]
    best: str
    excluded: dict[str, str]
    segments_measured: bool
    unknown_relevant: int = 0                # relevant ids of the queries that are not tracks of the library
    unknown_examples: tuple[str, ...] = ()

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
    sel = select_best({label: dict(r.metrics) for label, (_, r) in out.items()})
    return TunedRerank(out, sel.best, sel.excluded, sel.segments_measured, prepared.unknown_relevant,
                       prepared.unknown_examples)


def check_writable(root: Path) -> None:
    """Raise LibraryLockedError now if another process is writing the library (``save_settings`` without
    ``wait`` would fail only after every setting was measured)."""
    os.close(acquire_lock(root))


def save_settings(root: Path, settings: RerankSettings, wait: bool = False) -> None:
    """Keep ``settings`` in the library's manifest (one commit; nothing else changes). ``wait``: wait for
    another writer of the library to finish instead of raising LibraryLockedError."""
    with LibraryWriter(root, wait=wait) as writer:
        writer.set_rerank(settings.to_json())
        writer.commit()
