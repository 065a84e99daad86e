"""Zero-shot tagging benchmark (MusCALL Table 2): accuracy for single-label sets (GTZAN-style), ROC-AUC and
PR-AUC per label and macro for multi-label sets (MTAT-style), from a library's stored vectors.

Dataset: a CSV with ``track_id`` or ``path`` (matched to the library's tracks, engine/analysis/track_match.py)
and either ``label`` (one label per track: single-label) or ``labels`` (several, separated by ``|`` or
``;``: multi-label). The label vocabulary is ``--labels`` (a built-in set or a file) or, by default,
every label the dataset uses. Tracks are ranked per label by their aggregated window cosine with the
label's prompt vector (the paper's similarity scores); the prediction of a single-label track is the
label with the highest cosine. Each track has one row (a track named twice is refused: it would count twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.analysis.tagging import (
    DEFAULT_TEMPLATES,
    LabelSet,
    check_templates,
    label_slug,
    label_vectors,
    track_window_scores,
)
from songseek.engine.analysis.track_match import TrackMatcher, read_csv_records, row_name
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.search import Library

from .score_metrics import accuracy, average_precision, roc_auc


@dataclass(frozen=True)
class LabelledTracks:
    """Ground truth: ``track_ids`` (N,), the vocabulary ``labels`` (L,), ``targets`` bool (N, L)."""

    track_ids: tuple[str, ...]
    labels: tuple[str, ...]
    targets: np.ndarray
    single_label: bool
    unmatched: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelResult:
    """One label: positives, and accuracy (single-label: the share of its tracks predicted as it) or
    ROC-AUC / PR-AUC (None where the label has no positive or no negative track)."""

    label: str
    positives: int
    accuracy: float | None = None
    roc_auc: float | None = None
    pr_auc: float | None = None


@dataclass(frozen=True)
class TaggingReport:
    kind: str                       # "single-label" or "multi-label"
    tracks: int
    accuracy: float | None          # single-label: top-1 accuracy over tracks
    macro_accuracy: float | None    # single-label: mean over labels of per-label accuracy
    macro_roc_auc: float | None
    macro_pr_auc: float | None
    per_label: tuple[LabelResult, ...]
    skipped: tuple[str, ...]        # labels without both classes (no AUC)
    unmatched: int
    settings: dict[str, Any] = field(default_factory=dict)
    unmatched_rows: tuple[str, ...] = ()  # how each unmatched row names its track (line, id or path)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_label"] = [asdict(r) for r in self.per_label]
        return out


def _split_labels(cell: str) -> list[str]:
    for sep in ("|", ";"):
        if sep in cell:
            return [c.strip() for c in cell.split(sep) if c.strip()]
    return [cell.strip()] if cell.strip() else []


def read_labelled(path: str | Path, tracks: Any, vocabulary: Sequence[str] | None = None) -> LabelledTracks:
    """Read the dataset CSV against a library's tracks table (pyarrow)."""
    path = Path(path).expanduser()
    records = read_csv_records(path, ("track_id", "path"))
    if "label" in records[0][1]:
        col, single = "label", True
    elif "labels" in records[0][1]:
        col, single = "labels", False
    else:
        raise UsageError(f"{path}: needs a 'label' column (single-label) or 'labels' (multi-label, '|'-separated)")
    matcher = TrackMatcher(tracks, path.parent)
    ids, per_row, unmatched = [], [], []
    line_of: dict[str, int] = {}
    for i, row in records:
        tid = matcher.match(row)
        if tid is None:
            unmatched.append(row_name(row, i))
            continue
        if tid in line_of:  # counted twice, or two files matched to one track (file-name fallback)
            raise UsageError(f"{path}: {row_name(row, i)} names track {tid} again (lines {line_of[tid]} and {i}); "
                             "give each track one row (several labels: a 'labels' column, '|'-separated)")
        line_of[tid] = i
        labs = [row[col].strip()] if single else _split_labels(row[col])
        if single and not labs[0]:
            raise UsageError(f"{path} line {i}: empty label")
        if single and any(sep in labs[0] for sep in ("|", ";")):
            raise UsageError(f"{path} line {i}: {labs[0]!r} holds several labels; the 'label' column takes one "
                             "label per track (several labels per track: a 'labels' column)")
        ids.append(tid)
        per_row.append(labs)
    if not ids:
        raise UsageError(f"{path}: no row matches a track of the library; first unmatched: {', '.join(unmatched[:3])}")
    if vocabulary is None:
        seen: dict[str, str] = {}
        for labs in per_row:
            for lb in labs:
                seen.setdefault(label_slug(lb), lb)
        vocab = tuple(seen[s] for s in sorted(seen))
    else:
        vocab = tuple(vocabulary)
    col_of = {label_slug(lb): j for j, lb in enumerate(vocab)}
    targets = np.zeros((len(ids), len(vocab)), bool)
    for r, labs in enumerate(per_row):
        for lb in labs:
            j = col_of.get(label_slug(lb))
            if j is None:
                raise UsageError(f"{path}: label {lb!r} is not in the label set ({', '.join(vocab[:10])}...)")
            targets[r, j] = True
    return LabelledTracks(tuple(ids), vocab, targets, single, tuple(unmatched))


def evaluate(scores: np.ndarray, truth: LabelledTracks) -> TaggingReport:
    """Metrics of float (N, L) label scores against the ground truth (pure)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != truth.targets.shape:
        raise UsageError(f"scores {s.shape} do not match the ground truth {truth.targets.shape}")
    per, skipped = [], []
    acc = macro_acc = None
    if truth.single_label:
        true = truth.targets.argmax(axis=1)
        pred = s.argmax(axis=1)
        acc = accuracy(true, pred)
    for j, lb in enumerate(truth.labels):
        y = truth.targets[:, j]
        a = float(np.mean(pred[y] == j)) if truth.single_label and y.any() else None
        roc = pr = None
        if y.any() and not y.all():
            roc, pr = roc_auc(y, s[:, j]), average_precision(y, s[:, j])
        else:
            skipped.append(lb)
        per.append(LabelResult(lb, int(y.sum()), a, roc, pr))
    if truth.single_label:
        accs = [r.accuracy for r in per if r.accuracy is not None]
        macro_acc = float(np.mean(accs)) if accs else None
    rocs = [r.roc_auc for r in per if r.roc_auc is not None]
    prs = [r.pr_auc for r in per if r.pr_auc is not None]
    return TaggingReport("single-label" if truth.single_label else "multi-label", len(truth.track_ids), acc,
                         macro_acc, float(np.mean(rocs)) if rocs else None, float(np.mean(prs)) if prs else None,
                         tuple(per), tuple(skipped), len(truth.unmatched),
                         unmatched_rows=truth.unmatched)


def run_tagging_bench(library: str | Path, dataset: str | Path, labels: LabelSet | None = None,
                      templates: Sequence[str] = DEFAULT_TEMPLATES, aggregate: str = "mean",
                      params: FusionParams | None = None, device: str = "auto") -> TaggingReport:
    """Score the dataset's tracks of ``library`` zero-shot and evaluate them (reads stored vectors only)."""
    from dataclasses import replace

    lib = Library.open(library, device=device)
    truth = read_labelled(dataset, lib.tracks, labels.labels if labels else None)
    templates = check_templates(templates)
    pos = {str(t): i for i, t in enumerate(lib.tracks.column("track_id").to_pylist())}
    rows = np.asarray([pos[t] for t in truth.track_ids], dtype=np.int64)
    starts = lib.tracks.column("frame_start").to_numpy(zero_copy_only=False)[rows]
    counts = lib.tracks.column("frame_count").to_numpy(zero_copy_only=False)[rows]
    vecs = label_vectors(lib.embed_text, truth.labels, templates)
    cos = track_window_scores(lib.store, starts, counts, vecs, aggregate, params)
    report = evaluate(cos, truth)
    return replace(report, settings={"templates": list(templates), "aggregate": aggregate, "score": "cosine",
                                     "encoder": lib.manifest.encoder.name, "labels": list(truth.labels)})
