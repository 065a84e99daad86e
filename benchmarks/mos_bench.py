"""Opinion-score benchmark (MusicEval Table I): MSE, LCC, SRCC, KTAU at utterance and system level.

The rated tracks of a library are split by seed into train and test (85/15 as the paper by default); the
MLP head (engine/analysis/mos.py) is trained on the train part and evaluated on the test part. Utterance level:
metrics over test clips. System level: the mean true and predicted score per system (a column of the
ratings file, e.g. the generator that made each clip), then the metrics over systems.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.analysis.mos import MosTrainConfig, Ratings, rated_vectors, read_ratings, train_head
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library

from .score_metrics import kendall_tau, mse, pearson, spearman


@dataclass(frozen=True)
class MosMetrics:
    """MSE, LCC (Pearson), SRCC (Spearman), KTAU (Kendall tau-b) over ``n`` items; correlations are None
    where undefined (fewer than 2 items or a constant series)."""

    n: int
    mse: float
    lcc: float | None
    srcc: float | None
    ktau: float | None


@dataclass(frozen=True)
class MosBenchReport:
    """Per score ("impression", "alignment"): utterance-level and (with systems) system-level metrics."""

    utterance: dict[str, MosMetrics]
    system: dict[str, MosMetrics]
    n_train: int
    n_test: int
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"utterance": {k: asdict(v) for k, v in self.utterance.items()},
                "system": {k: asdict(v) for k, v in self.system.items()}, "n_train": self.n_train,
                "n_test": self.n_test, "seed": self.seed, "settings": self.settings}


def split_indices(n: int, test_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) int64 index arrays: a seeded permutation, the first round(n * test_fraction) are test
    (at least 2 when n allows, so correlations exist)."""
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    if n < 4:
        raise UsageError(f"a train/test split needs at least 4 rated tracks, got {n}")
    n_test = min(max(2, int(round(n * test_fraction))), n - 2)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _safe(fn: Any, a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        return float(fn(a, b))
    except UsageError:
        return None


def mos_metrics(true: np.ndarray, pred: np.ndarray) -> MosMetrics:
    t, p = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    if len(t) != len(p) or len(t) == 0:
        raise UsageError(f"mos metrics need equal, non-empty arrays (got {len(t)} and {len(p)})")
    return MosMetrics(len(t), float(np.mean((t - p) ** 2)) if len(t) == 1 else mse(t, p),
                      _safe(pearson, t, p), _safe(spearman, t, p), _safe(kendall_tau, t, p))


def system_means(true: np.ndarray, pred: np.ndarray, systems: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean true and predicted score per system (systems in sorted order): two float64 (S,) arrays."""
    names = sorted(set(systems))
    sys = np.asarray(systems, dtype=object)
    t, p = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    return (np.asarray([t[sys == s].mean() for s in names]), np.asarray([p[sys == s].mean() for s in names]))


def evaluate(ratings: Ratings, impression: np.ndarray, alignment: np.ndarray | None) -> tuple[dict, dict]:
    """(utterance, system) metrics of predictions for ``ratings`` (pure)."""
    pairs = {"impression": (ratings.impression, impression)}
    if ratings.alignment is not None and alignment is not None:
        pairs["alignment"] = (ratings.alignment, alignment)
    utt = {k: mos_metrics(t, p) for k, (t, p) in pairs.items()}
    sysm = {}
    if ratings.systems is not None:
        for k, (t, p) in pairs.items():
            st, sp = system_means(t, p, ratings.systems)
            sysm[k] = mos_metrics(st, sp)
    return utt, sysm


def run_mos_bench(library: str | Path, ratings_path: str | Path, system_column: str = "system",
                  test_fraction: float = 0.15, seed: int = 0, config: MosTrainConfig | None = None,
                  device: str = "auto") -> MosBenchReport:
    """Split, train the head on the train part, evaluate on the test part (stored vectors only)."""
    from dataclasses import replace

    lib = Library.open(library, device=device)
    ratings = read_ratings(ratings_path, lib.tracks, system_column)
    train_idx, test_idx = split_indices(len(ratings.track_ids), test_fraction, seed)
    audio, text = rated_vectors(lib, ratings)
    cfg = replace(config or MosTrainConfig(), seed=seed)
    tr = ratings.subset(train_idx)
    head = train_head(lib.manifest.encoder, audio[train_idx], tr.impression,
                      None if text is None else text[train_idx], tr.alignment, cfg)
    pred = head.predict(audio[test_idx], None if text is None else text[test_idx])
    utt, sysm = evaluate(ratings.subset(test_idx), pred.impression, pred.alignment)
    report = head.report
    return MosBenchReport(utt, sysm, len(train_idx), len(test_idx), seed,
                          {"encoder": lib.manifest.encoder.name, "unmatched": len(ratings.unmatched),
                           "unmatched_rows": list(ratings.unmatched), "rows": ratings.rows,
                           "averaged": ratings.averaged,
                           "training": report.to_json() if report else None, "config": asdict(cfg)})
