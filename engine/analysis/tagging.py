"""Zero-shot tags (MusCALL §5.2, MS-CLAP §2.3): label prompts scored against stored window vectors.

A label set (``genres``, ``moods``, ``instruments`` shipped in engine/analysis/labels/, or any text file with one
label per line) becomes prompts through templates ("A {label} track" by default, as MusCALL); with
several templates the prompt vectors of a label are averaged and re-normalised (prompt ensembling, as
CLIP). Each track's windows are scored against every label vector (cosine) and the window scores are
aggregated into one track score per label by ``aggregate``:

- ``mean``: mean over the track's windows (the default: genre and mood describe the whole track);
- ``max``: the best window (a label that holds in one part, e.g. an instrument that enters late);
- ``fusion``: the CoLLAP temporal-attention fusion search uses (engine/query/fusion.py), between the two.

Track cosines ``c`` (N, L) then become the stored tag scores:

- ``softmax`` (single-label sets such as genres): p_l = exp(c_l / tau) / sum_l' exp(c_l' / tau), the share
  of label l among the set (MS-CLAP: softmax for multiclass);
- ``sigmoid`` (multi-label sets such as moods, instruments): p_l = sigmoid((c_l - median_n c_l) / tau),
  MS-CLAP's sigmoid for multilabel with each label centred on the library's median track, because raw
  CLAP cosines have no calibrated zero: 0.5 = as <label> as the library's typical track.

Everything here is pure (arrays in, arrays out) except ``score_library`` which reads the frame store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.errors import UsageError
from songseek.engine.query.filters import TAG_PREFIX
from songseek.engine.query.fusion import FusionParams, rerank_scores
from songseek.engine.query.search import Library
from songseek.engine.slug import label_slug
from songseek.engine.storage.store import FrameStore
from songseek.engine.storage.writer import LibraryWriter

DEFAULT_TEMPLATES: tuple[str, ...] = ("A {label} track",)
BUILTIN_SETS: tuple[str, ...] = ("genres", "moods", "instruments")
# Which normalisation each built-in set uses (a label file is single-label unless told otherwise).
MULTI_LABEL_SETS: frozenset[str] = frozenset({"moods", "instruments"})
AGGREGATIONS: tuple[str, ...] = ("mean", "max", "fusion")
NORMALISATIONS: tuple[str, ...] = ("softmax", "sigmoid")
DEFAULT_TEMPERATURE = 0.01  # the scale CLIP/CLAP models learn (logit scale ~100)
TAGS_TABLE = "tags"
_META_KEY = b"songseek.tag_sets"


@dataclass(frozen=True)
class LabelSet:
    """A named list of labels; ``name`` is the built-in set name or the file's stem."""

    name: str
    labels: tuple[str, ...]
    multi_label: bool = False


@dataclass(frozen=True)
class TagScores:
    """Zero-shot scores of N tracks against the L labels of one set.

    ``track_ids`` object (N,); ``cosine`` float32 (N, L) aggregated window cosines; ``score`` float32 (N, L)
    the stored tag scores (softmax or sigmoid of ``cosine``, see the module docstring).
    """

    labels: LabelSet
    track_ids: np.ndarray
    cosine: np.ndarray
    score: np.ndarray
    templates: tuple[str, ...]
    aggregate: str
    normalisation: str
    temperature: float

    def top_labels(self) -> list[str]:
        return [self.labels.labels[i] for i in np.argmax(self.cosine, axis=1)] if len(self.cosine) else []


def labels_dir() -> Path:
    """The folder of the shipped label lists (genres.txt, moods.txt, instruments.txt, descriptors.txt)."""
    return Path(str(resources.files("songseek.engine.analysis") / "labels"))


def parse_labels(text: str, where: str) -> tuple[str, ...]:
    """One label per line; blank lines and '#' comments skipped; duplicates (by slug) refused."""
    labels = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    labels = [lb for lb in labels if lb]
    if not labels:
        raise UsageError(f"{where}: no labels (one label per line expected)")
    seen: dict[str, str] = {}
    for lb in labels:
        slug = label_slug(lb)
        if slug in seen:
            raise UsageError(f"{where}: labels {seen[slug]!r} and {lb!r} would share the column {TAG_PREFIX}{slug}")
        seen[slug] = lb
    return tuple(labels)


def load_label_set(spec: str, multi_label: bool | None = None) -> LabelSet:
    """``genres`` / ``moods`` / ``instruments`` (shipped lists) or a path to a text file of labels."""
    if spec in BUILTIN_SETS or spec == "descriptors":
        path = labels_dir() / f"{spec}.txt"
        name = spec
        multi = spec in MULTI_LABEL_SETS
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UsageError(f"label set {spec}: not {', '.join(BUILTIN_SETS)} and no such file")
        name = label_slug(path.stem)
        multi = False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the labels ({exc})") from exc
    return LabelSet(name=name, labels=parse_labels(text, str(path)),
                    multi_label=multi if multi_label is None else multi_label)


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    out = tuple(templates) or DEFAULT_TEMPLATES
    for t in out:
        if "{label}" not in t:
            raise UsageError(f"template {t!r} has no {{label}} placeholder (e.g. \"A {{label}} track\")")
    return out


def label_vectors(embed_text: Callable[[list[str]], np.ndarray], labels: Sequence[str],
                  templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """float32 (L, dim) unit vectors: per label, the mean of its prompt vectors (one per template),
    re-normalised. ``embed_text`` returns unit rows (Encoder.embed_text)."""
    templates = check_templates(templates)
    prompts = [t.replace("{label}", lb) for lb in labels for t in templates]
    vecs = np.asarray(embed_text(prompts), dtype=np.float32).reshape(len(labels), len(templates), -1)
    mean = vecs.mean(axis=1)
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def aggregate_windows(sims: np.ndarray, lengths: np.ndarray, how: str = "mean",
                      params: FusionParams | None = None) -> np.ndarray:
    """Track scores from window scores. sims float (B, Tmax, L) (padding beyond lengths ignored),
    lengths int (B,) → float32 (B, L). ``how``: mean, max or fusion (engine/query/fusion.py), each track
    on its own similarity scale (a track's tags do not depend on the other tracks of the batch)."""
    if how not in AGGREGATIONS:
        raise UsageError(f"aggregate must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    sims = np.asarray(sims, dtype=np.float32)
    out = np.empty((sims.shape[0], sims.shape[2]), np.float32)
    own_scale = np.arange(sims.shape[0])
    for lab in range(sims.shape[2]):
        out[:, lab] = rerank_scores(how, sims[:, :, lab], lengths, params, own_scale).score
    return out


def normalise(cosine: np.ndarray, how: str, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Tag scores from track cosines float (N, L): ``softmax`` over labels per track, or ``sigmoid`` of
    each label's cosine minus its median over tracks. Both divide by ``temperature`` (> 0)."""
    if how not in NORMALISATIONS:
        raise UsageError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {how!r}")
    if not temperature > 0 or not np.isfinite(temperature):
        raise UsageError(f"temperature must be a finite number > 0, got {temperature}")
    c = np.asarray(cosine, dtype=np.float64)
    if c.size == 0:
        return c.astype(np.float32)
    if how == "softmax":
        z = (c - c.max(axis=1, keepdims=True)) / temperature
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    z = (c - np.median(c, axis=0, keepdims=True)) / temperature
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)  # = sigmoid(z), without overflow


def track_window_scores(store: FrameStore, frame_start: np.ndarray, frame_count: np.ndarray,
                        text_vectors: np.ndarray, how: str = "mean", params: FusionParams | None = None,
                        batch_frames: int = 65536) -> np.ndarray:
    """Aggregated window cosines of every track with every text vector: float32 (N, L).

    ``frame_start``/``frame_count`` int (N,) are the tracks table's columns; ``text_vectors`` float32 (L, dim)
    unit rows. Tracks are processed in batches of about ``batch_frames`` padded frames."""
    starts = np.asarray(frame_start, dtype=np.int64)
    counts = np.asarray(frame_count, dtype=np.int64)
    t = np.ascontiguousarray(text_vectors, dtype=np.float32)
    out = np.zeros((len(starts), len(t)), np.float32)
    order = np.argsort(starts, kind="stable")
    i = 0
    while i < len(order):
        j, tmax = i, 0
        while j < len(order) and (j == i or (j - i + 1) * max(tmax, counts[order[j]]) <= batch_frames):
            tmax = max(tmax, int(counts[order[j]]))
            j += 1
        rows = order[i:j]
        sims = np.zeros((len(rows), tmax, len(t)), np.float32)
        for b, r in enumerate(rows):
            sims[b, :counts[r]] = store.vectors(int(starts[r]), int(counts[r])) @ t.T
        out[rows] = aggregate_windows(sims, counts[rows], how, params)
        i = j
    return out


def score_tracks(store: FrameStore, tracks: pa.Table, embed_text: Callable[[list[str]], np.ndarray],
                 labels: LabelSet, templates: Sequence[str] = DEFAULT_TEMPLATES, aggregate: str = "mean",
                 temperature: float = DEFAULT_TEMPERATURE, params: FusionParams | None = None) -> TagScores:
    """Zero-shot tag scores of every track of a library (its FrameStore and tracks table)."""
    templates = check_templates(templates)
    vecs = label_vectors(embed_text, labels.labels, templates)
    starts = tracks.column("frame_start").to_numpy(zero_copy_only=False)
    counts = tracks.column("frame_count").to_numpy(zero_copy_only=False)
    cos = track_window_scores(store, starts, counts, vecs, aggregate, params)
    how = "sigmoid" if labels.multi_label else "softmax"
    ids = np.asarray(tracks.column("track_id").to_pylist(), dtype=object)
    return TagScores(labels, ids, cos, normalise(cos, how, temperature), templates, aggregate, how, temperature)


def tags_table(scores: TagScores, existing: pa.Table | None = None, encoder_id: str = "") -> pa.Table:
    """The library's ``tags`` table after adding one set: columns ``track_id``, ``top_<set>`` (best label by
    cosine) and ``tag_<slug>`` float32 per label. How each set was made (labels, templates, aggregation,
    normalisation, temperature, encoder) is in the schema metadata.

    Columns are named by label, so a label belongs to one set at a time: the set tagged last. Columns of
    other sets are kept (for the tracks scored now); a label this set shares with another is this set's
    now, and leaves the other set's ``labels`` for its ``taken_by`` (so its metadata never describes a
    column it no longer wrote). Re-tagging a set drops the columns of its old labels that no set lists."""
    import json

    name = scores.labels.name
    cols: dict[str, pa.Array] = {"track_id": pa.array(list(scores.track_ids), pa.string())}
    new_cols = {f"top_{name}": pa.array(scores.top_labels(), pa.string())}
    for k, lb in enumerate(scores.labels.labels):
        new_cols[TAG_PREFIX + label_slug(lb)] = pa.array(scores.score[:, k], pa.float32())
    meta: dict[str, dict[str, Any]] = {}
    if existing is not None and existing.num_rows:
        old_meta = (existing.schema.metadata or {}).get(_META_KEY)
        meta = json.loads(old_meta) if old_meta else {}
        previous = meta.pop(name, None)
        for info in meta.values():  # labels this set takes over from the others
            taken = [lb for lb in info.get("labels", []) if TAG_PREFIX + label_slug(lb) in new_cols]
            if taken:
                info["labels"] = [lb for lb in info["labels"] if lb not in taken]
                info["taken_by"] = {**info.get("taken_by", {}), **{lb: name for lb in taken}}
        listed = {TAG_PREFIX + label_slug(lb) for info in meta.values() for lb in info.get("labels", [])}
        stale = {TAG_PREFIX + label_slug(lb) for lb in (previous or {}).get("labels", [])} - listed
        pos = {tid: i for i, tid in enumerate(existing.column("track_id").to_pylist())}
        take = pa.array([pos.get(t) for t in scores.track_ids], pa.int64())
        for column in existing.column_names:
            if column != "track_id" and column not in new_cols and column not in stale:
                cols[column] = existing.column(column).combine_chunks().take(take)
    cols.update(new_cols)
    meta[name] = {
        "labels": list(scores.labels.labels), "templates": list(scores.templates),
        "aggregate": scores.aggregate, "normalisation": scores.normalisation,
        "temperature": scores.temperature, "encoder": encoder_id,
    }
    table = pa.table(cols)
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})


def tag_sets(table: pa.Table) -> dict[str, dict[str, object]]:
    """How each label set in a tags table was made (the metadata ``tags_table`` stamps)."""
    import json

    raw = (table.schema.metadata or {}).get(_META_KEY)
    return dict(json.loads(raw)) if raw else {}


def tag_library(root: str | Path, sets: Sequence[LabelSet], templates: Sequence[str] = DEFAULT_TEMPLATES,
                aggregate: str = "mean", temperature: float = DEFAULT_TEMPERATURE,
                params: FusionParams | None = None, device: str = "auto") -> list[TagScores]:
    """Score every track of the library at ``root`` against each label set and store the results in its
    ``tags`` table (one commit; other sets' columns are kept). Holds the writer lock while it works."""
    if not sets:
        raise UsageError("give at least one label set (genres, moods, instruments or a label file)")
    normalise(np.zeros((1, 1)), "softmax", temperature)  # validates the temperature before any work
    with LibraryWriter(Path(root)) as writer:
        lib = Library.open(root, device=device)
        info = lib.encoder.info
        encoder_id = f"{info.name}:{info.checkpoint}"
        results = [score_tracks(lib.store, lib.tracks, lib.embed_text, s, templates, aggregate, temperature, params)
                   for s in sets]
        table = writer.get_table(TAGS_TABLE)
        for res in results:
            table = tags_table(res, table, encoder_id)
        assert table is not None
        writer.put_table(TAGS_TABLE, table)
        writer.commit()
    return results
