"""Benchmark datasets: typed loaders for real layouts (manifest, MusicCaps, Song Describer) and queries.

Every loader returns a frozen :class:`RetrievalDataset` whose ``items`` are the clips whose audio
exists; ``missing`` lists the expected audio paths that were not found (or are empty files). With
``on_missing="error"`` a loader raises :class:`UsageError` naming how many are missing and the first
few; with ``"skip"`` (default) it evaluates on what is present. A dataset with no audio at all is
always an error. Layouts are documented in docs/benchmarks.md.

Captions in CSV manifests: a ``caption`` cell is one caption, verbatim. A ``captions`` cell is a list:
in JSONL/Parquet a real list, in CSV a JSON list string (``["a", "b"]``) or a ``|``-separated string.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from songseek.engine.errors import UsageError
from songseek.engine.query.kind import KINDS, Kind

OnMissing = Literal["skip", "error"]
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
_SHOW_MISSING = 5


@dataclass(frozen=True)
class DatasetItem:
    """One clip: its audio file, the captions that describe it, and optionally which part of the file.

    ``start_s``/``end_s`` (seconds) select a segment of ``audio_path``; ``None`` means the whole file.
    """

    item_id: str
    audio_path: Path
    captions: tuple[str, ...]
    start_s: float | None = None
    end_s: float | None = None
    split: str | None = None


@dataclass(frozen=True)
class Subset:
    """How a seeded subset was drawn, recorded in a run's settings so that it can be drawn again:
    ``requested`` items/queries asked for, ``size`` kept (= min(requested, population)), ``seed`` of
    ``numpy.random.default_rng``, ``population`` how many there were to draw from."""

    requested: int
    size: int
    seed: int
    population: int


@dataclass(frozen=True)
class RetrievalDataset:
    """A retrieval benchmark: ``items`` (present audio only, file order) and the audio paths that were
    expected but absent (``missing``). ``root`` is the folder audio paths are relative to; ``source`` the
    file it was read from; ``subset`` how :func:`subset` drew the items (None: all of them)."""

    name: str
    root: Path
    items: tuple[DatasetItem, ...]
    missing: tuple[Path, ...] = ()
    source: Path | None = None
    subset: Subset | None = None

    @property
    def n_captions(self) -> int:
        return sum(len(it.captions) for it in self.items)

    def caption_pairs(self) -> tuple[list[str], np.ndarray]:
        """(captions flattened in item order, int64 (C,) index of the item each caption belongs to):
        text→audio queries and their relevant item; audio→text relevant captions of item i are
        ``np.flatnonzero(owner == i)``."""
        texts = [c for it in self.items for c in it.captions]
        owner = np.repeat(np.arange(len(self.items)), [len(it.captions) for it in self.items])
        return texts, owner.astype(np.int64)


# ----------------------------------------------------------------------------------------------- helpers
def _fail(path: Path, where: str, what: str) -> UsageError:
    return UsageError(f"{path}: {where}: {what}")


def _utf8_text(path: Path) -> str:
    """The file as text: UTF-8 with or without a BOM (spreadsheets write one). Anything else is refused
    with the line of the first bad byte, since guessing an encoding would silently change captions."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _fail(path, f"line {line}", f"not UTF-8 text (byte {raw[exc.start]:#04x}); save the file as "
                    "UTF-8 (e.g. iconv -f latin1 -t utf-8, or 'CSV UTF-8' in a spreadsheet)") from None


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a CSV (str cells), JSONL (JSON values) or Parquet (Arrow → Python) file, and where each
    row is for error messages ("line N" where it starts in a text file, "row N" in Parquet)."""
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            text = io.StringIO(_utf8_text(path), newline="")
            reader = csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ",")
            _ = reader.fieldnames  # reads the header
            rows, wheres, end = [], [], reader.line_num  # end: the last line read so far
            for r in reader:  # a quoted caption may span lines: count from where the row starts
                extra = r.pop(None, None)  # DictReader puts cells past the header's under the key None
                if extra is not None:  # an unquoted separator in a caption: dropping cells would cut it
                    sep = "tab" if suffix == ".tsv" else "comma"
                    raise _fail(path, f"line {end + 1}", f"{len(reader.fieldnames or []) + len(extra)} cells but "
                                f"the header has {len(reader.fieldnames or [])}; quote a cell that holds a {sep}")
                rows.append(dict(r))
                wheres.append(f"line {end + 1}")
                end = reader.line_num
            return rows, wheres
        if suffix in (".jsonl", ".ndjson"):
            rows, wheres = [], []
            # split on "\n" only: str.splitlines would also break at U+2028, which JSON strings may hold
            for n, line in enumerate(_utf8_text(path).split("\n"), 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise _fail(path, f"line {n}", f"not valid JSON ({exc.msg})") from None
                    if not isinstance(obj, dict):
                        raise _fail(path, f"line {n}", "each line must be a JSON object")
                    rows.append(obj)
                    wheres.append(f"row {len(rows)}")
            return rows, wheres
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            rows = list(pq.read_table(path).to_pylist())
            return rows, [f"row {i + 1}" for i in range(len(rows))]
    except (OSError, ValueError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from exc
    raise UsageError(f"{path}: unknown format {suffix!r}; use .csv, .tsv, .jsonl or .parquet")


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))


def _opt_float(v: Any, path: Path, where: str, col: str) -> float | None:
    if _blank(v):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise _fail(path, where, f"column {col!r} must be a number of seconds, got {v!r}") from None
    if not math.isfinite(x) or x < 0:
        raise _fail(path, where, f"column {col!r} must be finite and >= 0, got {v!r}")
    return x


def _str_list(v: Any, path: Path, where: str, col: str) -> list[str]:
    """A list cell: a real list, a JSON list string, or a '|'-separated string."""
    if isinstance(v, (list, tuple)):
        items = list(v)
    elif isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise _fail(path, where, f"column {col!r} starts with '[' but is not a JSON list") from None
            if not isinstance(items, list):
                raise _fail(path, where, f"column {col!r} must be a JSON list")
        else:
            items = text.split("|")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        items = [v]
    else:
        raise _fail(path, where, f"column {col!r} must be a list or a string, got {type(v).__name__}")
    out = []
    for x in items:
        if isinstance(x, float) and x.is_integer():
            x = int(x)
        s = str(x).strip()
        if s:
            out.append(s)
    return out


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def _present(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _finish(
    name: str,
    root: Path,
    source: Path,
    items: list[DatasetItem],
    missing: list[Path],
    on_missing: str,
    hint: str,
) -> RetrievalDataset:
    if on_missing not in ("skip", "error"):
        raise UsageError(f"on_missing must be 'skip' or 'error', got {on_missing!r}")
    total = len(items) + len(missing)
    if total == 0:
        raise UsageError(f"{source}: no items selected; check the file and the filters")
    if missing:
        shown = ", ".join(str(p) for p in missing[:_SHOW_MISSING])
        more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
        msg = f"{name}: {len(missing)} of {total} audio files are missing ({shown}{more}); {hint}"
        if not items:
            raise UsageError(f"{name}: none of the {total} audio files were found ({shown}{more}); {hint}")
        if on_missing == "error":
            raise UsageError(msg + "; or evaluate on the files present (--missing skip; in Python on_missing='skip')")
    return RetrievalDataset(name=name, root=root, items=tuple(items), missing=tuple(missing), source=source)


# ----------------------------------------------------------------------------------------------- manifest
def load_manifest(
    path: str | Path,
    root: str | Path | None = None,
    on_missing: OnMissing = "skip",
    name: str | None = None,
) -> RetrievalDataset:
    """Load a CSV / JSONL / Parquet manifest of (audio, caption) rows.

    Columns: ``path`` or ``audio_path`` (relative to ``root``, default the manifest's folder, unless
    absolute); ``caption`` (one caption) or ``captions`` (list, JSON list string or ``|``-separated);
    optional ``id``, ``start_s``, ``end_s``, ``split``. Rows with the same (file, start_s, end_s) form one
    item whose captions are the rows' captions in file order. ``item_id`` is ``id`` when given, else the
    path as first written (plus ``#start-end`` for a segment). The file is compared as an absolute path
    (``a.wav`` and ``./a.wav`` are one clip); the same caption twice for one clip is an error.
    """
    path = Path(path)
    rows, wheres = _read_rows(path)
    base = Path(root) if root is not None else path.parent
    if not rows:
        raise UsageError(f"{path}: the manifest has no rows")
    cols = set().union(*(r.keys() for r in rows))
    path_col = "path" if "path" in cols else "audio_path" if "audio_path" in cols else None
    if path_col is None:
        raise UsageError(f"{path}: needs a 'path' or 'audio_path' column (found {sorted(cols)})")
    if "caption" not in cols and "captions" not in cols:
        raise UsageError(f"{path}: needs a 'caption' or 'captions' column (found {sorted(cols)})")

    groups: dict[tuple[Path, float | None, float | None], dict[str, Any]] = {}
    for i, row in enumerate(rows):
        where = wheres[i]
        raw = row.get(path_col)
        if _blank(raw):
            raise _fail(path, where, f"column {path_col!r} is empty")
        rel = str(raw).strip()
        # one file spelt two ways (a.wav, ./a.wav, /abs/a.wav) is one clip: as two items, audio→text
        # would count the clip's other captions as wrong answers
        audio = Path(os.path.abspath(Path(rel) if Path(rel).is_absolute() else base / rel))
        caps: list[str] = []
        if not _blank(row.get("caption")):
            caps.append(str(row["caption"]).strip())
        if not _blank(row.get("captions")):
            caps.extend(_str_list(row["captions"], path, where, "captions"))
        if not caps:
            raise _fail(path, where, "no caption (columns 'caption'/'captions' are empty)")
        start = _opt_float(row.get("start_s"), path, where, "start_s")
        end = _opt_float(row.get("end_s"), path, where, "end_s")
        if (start is None) != (end is None):  # half a span would be evaluated as the whole file
            raise _fail(path, where, "give both 'start_s' and 'end_s' or neither")
        if start is not None and end is not None and end <= start:
            raise _fail(path, where, f"end_s ({end}) must be after start_s ({start})")
        key = (audio, start, end)
        rid = None if _blank(row.get("id")) else str(row["id"]).strip()
        split = None if _blank(row.get("split")) else str(row["split"]).strip()
        g = groups.setdefault(key, {"id": rid, "split": split, "captions": {}, "where": where, "rel": rel})
        if rid is not None and g["id"] is not None and rid != g["id"]:
            raise _fail(path, where, f"rows for {rel!r} carry different ids ({g['id']!r} and {rid!r})")
        g["id"] = g["id"] or rid
        g["split"] = g["split"] or split
        for cap in caps:  # a repeated caption would be two queries and two "relevant" captions for one text
            if cap in g["captions"]:
                raise _fail(path, where, f"repeats {g['captions'][cap]} (same clip, same caption {cap[:40]!r}); "
                            "remove the duplicate row or caption")
            g["captions"][cap] = where

    items: list[DatasetItem] = []
    missing: list[Path] = []
    seen: dict[str, str] = {}
    for (audio, start, end), g in groups.items():
        rel = g["rel"]
        seg = "" if start is None and end is None else f"#{_fmt(start)}-{_fmt(end)}"
        item_id = g["id"] or f"{rel}{seg}"
        if item_id in seen:
            raise _fail(path, g["where"], f"id {item_id!r} is used for two different clips")
        seen[item_id] = rel
        if _present(audio):
            items.append(DatasetItem(item_id, audio, tuple(g["captions"]), start, end, g["split"]))
        else:
            missing.append(audio)
    return _finish(
        name or path.stem,
        base,
        path,
        items,
        missing,
        on_missing,
        f"paths are relative to {base}",
    )


# ----------------------------------------------------------------------------------------------- MusicCaps
def _listing(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder) if e.is_file() and e.stat().st_size > 0}
    except OSError as exc:
        raise UsageError(f"{folder}: cannot list the audio folder ({exc})") from exc


def _is_true(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "yes")


def load_musiccaps(
    csv_path: str | Path,
    audio_dir: str | Path,
    on_missing: OnMissing = "skip",
    split: Literal["eval", "train"] | None = None,
    clip_layout: Literal["trimmed", "full"] = "trimmed",
) -> RetrievalDataset:
    """MusicCaps (musiccaps-public.csv: ytid, start_s, end_s, ..., caption, ..., is_audioset_eval).

    Audio is looked up as ``audio_dir/{ytid}{ext}`` for ext in :data:`AUDIO_EXTENSIONS` (first found).
    ``clip_layout="trimmed"`` (default; what the usual yt-dlp ``--download-sections`` scripts write):
    each file is already the 10 s clip, so items cover the whole file. ``"full"``: each file is the whole
    YouTube audio and items carry the CSV's start_s/end_s. ``split``: ``"eval"`` keeps rows with
    is_audioset_eval=True (2,858), ``"train"`` the others; item split is ``eval``/``train``.
    """
    csv_path, audio_dir = Path(csv_path), Path(audio_dir)
    if clip_layout not in ("trimmed", "full"):
        raise UsageError(f"clip_layout must be 'trimmed' or 'full', got {clip_layout!r}")
    if split not in (None, "eval", "train"):
        raise UsageError(f"split must be None, 'eval' or 'train', got {split!r}")
    if not audio_dir.is_dir():
        raise UsageError(f"{audio_dir}: audio folder not found (expected {{ytid}}.wav etc. inside)")
    rows, wheres = _read_rows(csv_path)
    need = {"ytid", "start_s", "end_s", "caption"}
    if rows and not need <= set(rows[0]):
        raise UsageError(f"{csv_path}: not a MusicCaps CSV; missing columns {sorted(need - set(rows[0]))}")
    names = _listing(audio_dir)
    items: list[DatasetItem] = []
    missing: list[Path] = []
    lines: dict[str, str] = {}  # ytid → where it was first seen
    for i, row in enumerate(rows):
        where = wheres[i]
        item_split = "eval" if _is_true(row.get("is_audioset_eval")) else "train"
        if split is not None and item_split != split:
            continue
        ytid = str(row["ytid"]).strip()
        caption = str(row.get("caption") or "").strip()
        if not ytid or not caption:
            raise _fail(csv_path, where, "empty ytid or caption")
        # one row per clip: a repeated ytid (concatenated CSVs) would make two items of one file, each
        # counting the other's caption as a wrong answer in audio→text
        if ytid in lines:
            raise _fail(csv_path, where, f"ytid {ytid!r} is already on {lines[ytid]}; MusicCaps has one row per "
                        "clip: remove the duplicate row")
        lines[ytid] = where
        start = _opt_float(row["start_s"], csv_path, where, "start_s")
        end = _opt_float(row["end_s"], csv_path, where, "end_s")
        if start is not None and end is not None and end <= start:
            raise _fail(csv_path, where, f"end_s ({end}) must be after start_s ({start})")
        found = next((ytid + ext for ext in AUDIO_EXTENSIONS if ytid + ext in names), None)
        if found is None:
            missing.append(audio_dir / f"{ytid}.wav")
            continue
        seg = (start, end) if clip_layout == "full" else (None, None)
        items.append(DatasetItem(ytid, audio_dir / found, (caption,), seg[0], seg[1], item_split))
    return _finish(
        "musiccaps" + (f"-{split}" if split else ""),
        audio_dir,
        csv_path,
        items,
        missing,
        on_missing,
        f"expected {audio_dir}/{{ytid}}.wav (or .flac/.mp3/.ogg/.opus/.m4a)",
    )


# ------------------------------------------------------------------------------------ Song Describer
def _sdd_candidates(audio_dir: Path, rel: str, track_id: str) -> list[Path]:
    """Where a Song Describer track may be, the expected place first: the released 2-minute excerpt
    ``NN/{track_id}.2min.mp3`` (NN = track_id mod 100), the CSV's path (``00/1051200.mp3``, an
    MTG-Jamendo path) turned into the excerpt name and as is; each also under a nested ``audio/``
    folder (the zip extracts to ``audio/audio/NN/...``)."""
    cands: list[str] = []
    if track_id.isdigit():
        cands.append(f"{int(track_id) % 100:02d}/{track_id}.2min.mp3")
    if rel:
        p = Path(rel)
        cands += [p.with_name(p.name.split(".")[0] + ".2min.mp3").as_posix(), rel]
    out: list[Path] = []
    for c in dict.fromkeys(cands):
        out += [audio_dir / c, audio_dir / "audio" / c]
    return out


def load_song_describer(
    csv_path: str | Path,
    audio_dir: str | Path,
    on_missing: OnMissing = "skip",
    valid_only: bool = True,
) -> RetrievalDataset:
    """Song Describer Dataset (song_describer.csv: caption_id, track_id, caption, is_valid_subset,
    familiarity, artist_id, album_id, path, duration).

    One item per track (id = track_id) with all its captions (caption_id order). ``valid_only`` keeps
    captions with is_valid_subset True (546 tracks / 746 captions in the release; all: 706 / 1,106).
    Audio: ``audio_dir/NN/{track_id}.2min.mp3`` (the released excerpts), also the CSV's path as is, and
    both under ``audio_dir/audio/``.
    """
    csv_path, audio_dir = Path(csv_path), Path(audio_dir)
    if not audio_dir.is_dir():
        raise UsageError(f"{audio_dir}: audio folder not found (expected NN/{{track_id}}.2min.mp3 inside)")
    rows, wheres = _read_rows(csv_path)
    need = {"track_id", "caption"}
    if rows and not need <= set(rows[0]):
        raise UsageError(f"{csv_path}: not a Song Describer CSV; missing columns {sorted(need - set(rows[0]))}")
    tracks: dict[str, dict[str, Any]] = {}
    cid_lines: dict[str, str] = {}
    for i, row in enumerate(rows):
        where = wheres[i]
        if valid_only and not _is_true(row.get("is_valid_subset")):
            continue
        tid = str(row["track_id"]).strip()
        if tid.endswith(".0") and tid[:-2].isdigit():
            tid = tid[:-2]
        caption = str(row.get("caption") or "").strip()
        if not tid:
            raise _fail(csv_path, where, "empty track_id")
        if not caption:
            continue  # a few crowd-sourced rows are empty; they describe nothing
        t = tracks.setdefault(tid, {"path": str(row.get("path") or "").strip(), "caps": []})
        cid = str(row.get("caption_id") or "").strip()
        if cid:  # a repeated caption_id is a repeated row: the same caption would count twice
            if cid in cid_lines:
                raise _fail(csv_path, where, f"caption_id {cid} is already on {cid_lines[cid]}; remove the "
                            "duplicate row")
            cid_lines[cid] = where
        t["caps"].append((int(cid) if cid.isdigit() else i, caption))
    items: list[DatasetItem] = []
    missing: list[Path] = []
    for tid, t in tracks.items():
        cands = _sdd_candidates(audio_dir, t["path"], tid)
        found = next((c for c in cands if _present(c)), None)
        if found is None:
            if not cands:
                raise _fail(csv_path, "track " + tid, "no 'path' and a non-numeric track_id")
            missing.append(cands[0])
            continue
        caps = tuple(c for _, c in sorted(t["caps"], key=lambda x: x[0]))
        items.append(DatasetItem(tid, found, caps, None, None, "valid" if valid_only else None))
    return _finish(
        "song-describer" + ("-valid" if valid_only else ""),
        audio_dir,
        csv_path,
        items,
        missing,
        on_missing,
        f"expected {audio_dir}/NN/{{track_id}}.2min.mp3",
    )


# ----------------------------------------------------------------------------------------------- subset/hash
def subset(dataset: RetrievalDataset, n: int, seed: int = 0) -> RetrievalDataset:
    """A fixed-size random subset of items (MusCALL evaluates on 1,000 random pairs).

    Items are sampled without replacement from the items sorted by ``item_id`` (so the choice does not
    depend on row order) with numpy ``default_rng(seed)``; the result keeps the dataset's order. An item
    keeps all its captions. ``n >= len(items)`` keeps every item. Either way ``subset`` records n, the
    seed and the population (the run's settings show it).
    """
    if n < 1:
        raise UsageError(f"subset size must be >= 1, got {n}")
    drawn = Subset(requested=n, size=min(n, len(dataset.items)), seed=seed, population=len(dataset.items))
    if n >= len(dataset.items):
        return replace(dataset, subset=drawn)
    order = sorted(range(len(dataset.items)), key=lambda i: dataset.items[i].item_id)
    picked = np.random.default_rng(seed).choice(len(order), size=n, replace=False)
    keep = sorted(order[int(j)] for j in picked)
    return replace(
        dataset,
        name=f"{dataset.name}[{n}@seed{seed}]",
        items=tuple(dataset.items[i] for i in keep),
        subset=drawn,
    )


def _relpath(p: Path, root: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def dataset_hash(dataset: RetrievalDataset) -> str:
    """sha256 (hex) over the items sorted by id: id, audio path relative to ``root``, start_s, end_s and
    captions. Equal for the same content wherever the dataset lives; recorded in the report."""
    records = sorted(
        [it.item_id, _relpath(it.audio_path, dataset.root), it.start_s, it.end_s, list(it.captions)]
        for it in dataset.items
    )
    blob = json.dumps(records, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class Query:
    """One evaluation query against an existing library: ``text`` or ``vector`` (float32 (D,)), the
    track ids that count as correct, optionally the span (seconds) of the relevant part, and optionally
    what it describes (``kind``: part or whole, engine/query/kind.py; None: read from a text's form)."""

    query_id: str
    relevant: tuple[str, ...]
    text: str | None = None
    vector: np.ndarray | None = None
    start_s: float | None = None
    end_s: float | None = None
    kind: Kind = None


@dataclass(frozen=True)
class QuerySet:
    """Queries read from ``path``; ``dim`` is the vector length when the queries are vectors; ``subset``
    how ``runner.subset_queries`` drew them (None: the whole file)."""

    path: Path
    queries: tuple[Query, ...]
    dim: int | None = None
    subset: Subset | None = None

    def __len__(self) -> int:
        return len(self.queries)


def load_queries(path: str | Path) -> QuerySet:
    """Read a queries file (Parquet / CSV / JSONL).

    Columns: ``query`` (text) or ``vector`` (list of floats; in CSV a JSON list string), ``relevant``
    (one track id or a list; in CSV a JSON list string or ``|``-separated), optional ``id``, ``start_s``
    and ``end_s`` (both or neither: the relevant span, for segment IoU) and ``kind`` (``part`` or
    ``whole``: what the query describes, which the ``auto`` rerank then uses; blank: a text's form
    decides, a vector's is not known). Each row has exactly one of
    query/vector; vectors all have one length and finite values. Raises UsageError naming the file, row
    and column of the first problem.
    """
    path = Path(path)
    rows, wheres = _read_rows(path)
    if not rows:
        raise UsageError(f"{path}: the queries file has no rows")
    cols = set().union(*(r.keys() for r in rows))
    if "relevant" not in cols:
        raise UsageError(f"{path}: needs a 'relevant' column (found {sorted(cols)})")
    if "query" not in cols and "vector" not in cols:
        raise UsageError(f"{path}: needs a 'query' (text) or 'vector' column (found {sorted(cols)})")
    queries: list[Query] = []
    dim: int | None = None
    seen: set[str] = set()
    for i, row in enumerate(rows):
        where = wheres[i]
        text = None if _blank(row.get("query")) else str(row["query"]).strip()
        vec_raw = row.get("vector")
        has_vec = not _blank(vec_raw) and not (isinstance(vec_raw, (list, tuple)) and len(vec_raw) == 0)
        if (text is None) == (not has_vec):
            raise _fail(path, where, "give exactly one of 'query' (text) and 'vector'")
        vector = None
        if has_vec:
            vector = _parse_vector(vec_raw, path, where)
            if dim is None:
                dim = int(vector.shape[0])
            elif vector.shape[0] != dim:
                raise _fail(path, where, f"column 'vector' has {vector.shape[0]} values, earlier rows {dim}")
        if _blank(row.get("relevant")):
            raise _fail(path, where, "column 'relevant' is empty")
        relevant = tuple(_str_list(row["relevant"], path, where, "relevant"))
        if not relevant:
            raise _fail(path, where, "column 'relevant' is empty")
        start = _opt_float(row.get("start_s"), path, where, "start_s")
        end = _opt_float(row.get("end_s"), path, where, "end_s")
        if (start is None) != (end is None):
            raise _fail(path, where, "give both 'start_s' and 'end_s' or neither")
        if start is not None and end is not None and end <= start:
            raise _fail(path, where, f"end_s ({end}) must be after start_s ({start})")
        kind = None if _blank(row.get("kind")) else str(row["kind"]).strip()
        if kind is not None and kind not in KINDS:
            raise _fail(path, where, f"column 'kind' must be {' or '.join(KINDS)} (or blank), got {kind!r}")
        qid = f"q{i + 1}" if _blank(row.get("id")) else str(row["id"]).strip()
        if qid in seen:
            raise _fail(path, where, f"id {qid!r} appears twice")
        seen.add(qid)
        queries.append(Query(qid, relevant, text, vector, start, end, cast(Kind, kind)))
    return QuerySet(path=path, queries=tuple(queries), dim=dim)


def _parse_vector(v: Any, path: Path, where: str) -> np.ndarray:
    values: Iterable[Any]
    if isinstance(v, str):
        try:
            values = json.loads(v)
        except json.JSONDecodeError:
            raise _fail(path, where, "column 'vector' must be a JSON list of numbers") from None
    elif isinstance(v, (Sequence, np.ndarray)):
        values = v
    else:
        raise _fail(path, where, f"column 'vector' must be a list of numbers, got {type(v).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise _fail(path, where, "column 'vector' must contain only numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise _fail(path, where, "column 'vector' must be a flat, non-empty list of numbers")
    if not np.all(np.isfinite(arr)):
        raise _fail(path, where, "column 'vector' contains NaN or inf")
    return arr
