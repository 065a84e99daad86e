"""Anomalous sound detection benchmark (seed 004, Table I) on the DCASE 2020 Task 2 layout.

Layout: ``ROOT/<machine_type>/train/normal_id_XX_NNNNNNNN.wav`` (normal references) and
``ROOT/<machine_type>/test/{normal,anomaly}_id_XX_NNNNNNNN.wav``; ROOT may also be the folder that
holds ``dev_data/``. Each machine type's train and test folders are indexed once into libraries under
``work`` (re-runs reuse them: indexing is incremental), then every test clip is scored by Eq. 1 — the
mean L2 distance of its (pooled) vector to its k nearest normal training clips, k = 4 — against the
training clips of the same machine ID (``reference="id"``, default) or of the whole machine type
(``"type"``). Reported per machine type and ID: AUC and pAUC (FPR <= 0.1, DCASE's), and their means.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.analysis.outliers import DEFAULT_K, knn_scores
from songseek.engine.analysis.pooling import library_track_vectors
from songseek.engine.analysis.track_match import TrackMatcher
from songseek.engine.encoders import Encoder
from songseek.engine.errors import UsageError
from songseek.engine.progress import Progress
from songseek.engine.query.search import Library
from songseek.indexers.pipeline import IndexConfig, index_paths

from .score_metrics import partial_auc, roc_auc

_ID = re.compile(r"id_(\d+)")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class DcaseClip:
    path: Path
    machine_type: str
    split: str          # train or test
    machine_id: str
    anomaly: bool


@dataclass(frozen=True)
class AnomalyRow:
    """AUC and pAUC of one machine ID (``machine_id`` "average" for a machine type's mean)."""

    machine_type: str
    machine_id: str
    normal: int
    anomalous: int
    auc: float
    pauc: float


@dataclass(frozen=True)
class AnomalyReport:
    rows: tuple[AnomalyRow, ...]
    k: int
    reference: str
    max_fpr: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_auc(self) -> float:
        ids = [r.auc for r in self.rows if r.machine_id != "average"]
        return float(np.mean(ids)) if ids else float("nan")

    @property
    def mean_pauc(self) -> float:
        ids = [r.pauc for r in self.rows if r.machine_id != "average"]
        return float(np.mean(ids)) if ids else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "k": self.k, "reference": self.reference,
                "max_fpr": self.max_fpr, "mean_auc": self.mean_auc, "mean_pauc": self.mean_pauc,
                "settings": self.settings}


def scan_dcase(root: str | Path) -> list[DcaseClip]:
    """Every clip of the layout, sorted by path. Raises UsageError when the layout is not there."""
    root = Path(root).expanduser()
    if (root / "dev_data").is_dir():
        root = root / "dev_data"
    if not root.is_dir():
        raise UsageError(f"--dataset {root} is not a folder")
    clips = []
    for mdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for split in ("train", "test"):
            for f in sorted((mdir / split).glob("*")) if (mdir / split).is_dir() else []:
                if f.suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                m = _ID.search(f.name)
                if m is None or not f.name.startswith(("normal", "anomaly")):
                    continue
                clips.append(DcaseClip(f, mdir.name, split, m.group(1), f.name.startswith("anomaly")))
    if not any(c.split == "test" for c in clips) or not any(c.split == "train" for c in clips):
        raise UsageError(f"{root}: no DCASE 2020 Task 2 layout (<machine>/train/normal_id_XX_*.wav and "
                         "<machine>/test/{normal,anomaly}_id_XX_*.wav)")
    return clips


def anomaly_rows(machine_types: Sequence[str], machine_ids: Sequence[str], anomalous: np.ndarray,
                 scores: np.ndarray, max_fpr: float = 0.1) -> list[AnomalyRow]:
    """Per (type, id) AUC / pAUC of float (n,) scores against bool (n,) labels, plus each type's average
    row (pure). IDs without both normal and anomalous clips are left out."""
    types, ids = np.asarray(machine_types, dtype=object), np.asarray(machine_ids, dtype=object)
    y, s = np.asarray(anomalous, bool), np.asarray(scores, dtype=np.float64)
    out = []
    for mt in sorted(set(types.tolist())):
        rows = []
        for mid in sorted(set(ids[types == mt].tolist())):
            sel = (types == mt) & (ids == mid)
            if y[sel].all() or not y[sel].any():
                continue
            rows.append(AnomalyRow(mt, mid, int((~y[sel]).sum()), int(y[sel].sum()), roc_auc(y[sel], s[sel]),
                                   partial_auc(y[sel], s[sel], max_fpr)))
        if rows:
            out += rows
            out.append(AnomalyRow(mt, "average", sum(r.normal for r in rows), sum(r.anomalous for r in rows),
                                  float(np.mean([r.auc for r in rows])), float(np.mean([r.pauc for r in rows]))))
    return out


def _library_vectors(lib_path: Path, clips: list[DcaseClip]) -> np.ndarray:
    lib = Library.open(lib_path)
    vecs = library_track_vectors(lib.store, lib.tracks)
    pos = {str(t): i for i, t in enumerate(lib.tracks.column("track_id").to_pylist())}
    matcher = TrackMatcher(lib.tracks, lib_path)
    rows = []
    for c in clips:
        tid = matcher.match({"path": str(c.path.resolve())})
        if tid is None:
            raise UsageError(f"{c.path} was not indexed into {lib_path} (see `songseek failures --library "
                             f"{lib_path}`)")
        rows.append(pos[tid])
    return vecs[rows]


def run_anomaly_bench(root: str | Path, encoder: Encoder, work: str | Path, k: int = DEFAULT_K,
                      reference: str = "id", max_fpr: float = 0.1, window_s: float | None = None,
                      progress: Progress | None = None) -> AnomalyReport:
    """Index (or reuse) each machine type's train/test folders under ``work`` with ``encoder``, score the
    test clips against the normal training clips and report AUC / pAUC per machine type and ID."""
    if reference not in ("id", "type"):
        raise UsageError(f"--reference-per must be id or type, got {reference!r}")
    clips = scan_dcase(root)
    work = Path(work).expanduser()
    window = window_s or (encoder.info.native_window_s or 10.0)
    machine_types = sorted({c.machine_type for c in clips})
    for mt in machine_types:  # before any indexing: a missing folder is refused at once
        for split, pattern in (("train", "normal_id_XX_*.wav"), ("test", "{normal,anomaly}_id_XX_*.wav")):
            if not any(c.machine_type == mt and c.split == split for c in clips):
                raise UsageError(f"{mt}: no {split} clips ({mt}/{split}/{pattern}); every machine type needs "
                                 "both train and test folders")
    types, ids, labels, scores = [], [], [], []
    for mt in machine_types:
        split_vecs = {}
        for split in ("train", "test"):
            part = [c for c in clips if c.machine_type == mt and c.split == split]
            lib_path = work / mt / split
            index_paths([part[0].path.parent], lib_path, encoder, IndexConfig(window_s=window), progress)
            split_vecs[split] = (part, _library_vectors(lib_path, part))
        (train, train_v), (test, test_v) = split_vecs["train"], split_vecs["test"]
        normal = [i for i, c in enumerate(train) if not c.anomaly]  # Eq. 1's references: normal clips only
        train, train_v = [train[i] for i in normal], train_v[normal]
        groups = sorted({c.machine_id for c in test}) if reference == "id" else [None]
        for mid in groups:
            q = [i for i, c in enumerate(test) if mid is None or c.machine_id == mid]
            r = [i for i, c in enumerate(train) if mid is None or c.machine_id == mid]
            if len(r) < k:
                where = mt if mid is None else f"{mt} id {mid}"
                raise UsageError(f"{where}: {len(r)} normal training clips, fewer than -k {k}")
            sc, _, _ = knn_scores(test_v[q], train_v[r], k)
            types += [mt] * len(q)
            ids += [test[i].machine_id for i in q]
            labels += [test[i].anomaly for i in q]
            scores += sc.tolist()
    rows = anomaly_rows(types, ids, np.asarray(labels), np.asarray(scores), max_fpr)
    return AnomalyReport(tuple(rows), k, reference, max_fpr,
                         {"encoder": encoder.info.name, "checkpoint": encoder.info.checkpoint, "window_s": window,
                          "clips": len(clips)})
