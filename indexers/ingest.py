"""Bring your own vectors: Parquet or Arrow files of per-window vectors become a library.

Columns: ``track_id`` (string), ``start_s``, ``end_s`` (seconds), ``embedding`` (list of float, all the
same length); optional ``path`` and tag columns (title, artist, album, genre, year, duration_s).
Vectors are L2-normalised here. Every row is checked first (an id, finite times from 0 s with end_s after
start_s, each window once, a finite non-zero vector, a window starting before a given duration_s); a bad one
is refused with one line naming it, and nothing is written. Re-ingesting a track with the same rows leaves
it as stored. The file is read as Parquet or Arrow by its first bytes, whatever its name. The manifest
records encoder ``precomputed`` unless an encoder is named (``songseek ingest --encoder NAME --checkpoint
CKPT``; then text and audio queries are embedded with it, and it must make vectors of the same dimension).
A library keeps the encoder it was created with.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from songseek.engine.encoders import EncoderInfo
from songseek.engine.encoders.base import unit_rows
from songseek.engine.errors import UsageError
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import MAX_SECONDS, Manifest, check_compatible, read_manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

REQUIRED = ("track_id", "start_s", "end_s", "embedding")
TAGS = ("title", "artist", "album", "genre")
COLUMNS_HINT = "write the vectors as Parquet or Arrow with columns track_id, start_s, end_s, embedding"


@dataclass(frozen=True)
class IngestReport:
    """``tracks``: tracks in the table; ``unchanged``: those already stored with the same rows (not rewritten);
    ``removed``: stored tracks the table did not list, dropped with ``prune``."""

    tracks: int
    unchanged: int
    removed: int = 0


def read_vectors_table(path: Path) -> pa.Table:
    """Read a Parquet / Arrow IPC (file or stream) / Feather file, told apart by their first bytes (not the
    name: a Parquet file called .arrow is still Parquet); one clear error naming the file otherwise."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a file: give a Parquet or Arrow file of vectors")
    if not path.is_file():
        raise UsageError(f"{path} does not exist: give a Parquet or Arrow file of vectors")
    try:
        with path.open("rb") as f:
            head = f.read(6)
        if head[:4] == b"PAR1":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if head == b"ARROW1" or head[:4] == b"FEA1":
            import pyarrow.feather as feather

            return feather.read_table(path)
        if head[:4] == b"\xff\xff\xff\xff":  # an IPC stream starts with a message's continuation marker
            with pa.OSFile(str(path)) as source:
                return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"{path}: not a readable Parquet/Arrow file ({exc}); {COLUMNS_HINT}") from exc
    raise UsageError(f"{path}: not a Parquet or Arrow file; {COLUMNS_HINT}")


def ingest_table(table: pa.Table, library: Path, source: str = "<table>", encoder: EncoderInfo | None = None,
                 window_s: float | None = None, hop_s: float | None = None, index_factory: str | None = None,
                 nprobe: int | None = None, prune: bool = False, wait: bool = False) -> IngestReport:
    """Add the table's tracks to ``library`` (created if absent). Every row is checked before anything is
    written; a track already stored with the same rows and tags is left as it is (re-ingesting is idempotent).
    ``index_factory``: FAISS factory string or auto (None: the library's own, auto for a new one). ``nprobe``:
    IVF lists a query probes by default, saved in the library (0: automatic; None: keep). ``prune``: the table
    lists the whole library, so stored tracks it does not list are removed in the same commit (their frames
    stay as dead rows until `songseek repair --compact`). ``wait``: wait for another writer of the library
    instead of raising LibraryLockedError."""
    if nprobe is not None and nprobe < 0:
        raise UsageError(f"--nprobe must be 0 (automatic) or more (got {nprobe})")
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise UsageError(f"{source}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
    if table.num_rows == 0:
        raise UsageError(f"{source}: no rows")
    ids = _track_ids(table, source)
    starts, ends, order = _times(table, ids, source)
    vectors = _vectors(table, ids, starts, source)
    dim = vectors.shape[1]
    cols = _track_columns(table, source)
    _check_durations(cols.get("duration_s"), ids, starts, source)
    measured_hop = _median_hop(ids, starts, order)  # 0: every track has one window, so the table shows no hop
    window = float(window_s or np.median(ends - starts))
    hop = float(hop_s or measured_hop or window)
    if not (window <= MAX_SECONDS and hop <= MAX_SECONDS):  # the manifest could not be read back
        raise UsageError(f"{source}: windows of {window:g} s every {hop:g} s; at most {MAX_SECONDS:g} s each")
    info = encoder or EncoderInfo(name="precomputed", checkpoint="", dim=dim, sample_rate=0)
    _refuse_encoder_for_precomputed(library, info)
    if info.dim != dim:
        raise UsageError(f"{source}: vectors are {dim}-d but encoder {info.name} makes {info.dim}-d vectors")
    _check_fits_library(library, source, dim, window, hop, hop_unknown=hop_s is None and not measured_hop)
    if index_factory is not None:
        faiss_index.check_factory(index_factory, dim)  # the index is built after the commit: refuse it first
    manifest = Manifest(encoder=info, window_s=window, hop_s=hop, index_factory=index_factory or "auto")
    bounds = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1], True])
    unchanged = 0
    with LibraryWriter(library, manifest, wait=wait) as writer:
        check_compatible(writer.manifest, info, library)
        for a, b in zip(bounds[:-1], bounds[1:]):
            rows = order[a:b]
            first = int(rows[0])
            tid = str(ids[first])
            duration = cols["duration_s"][first] if "duration_s" in cols else None
            rec = TrackRecord(
                track_id=tid, path=str(cols["path"][first]) if cols.get("path") and cols["path"][first] else tid,
                content_hash=_rows_hash(vectors[rows], starts[rows], ends[rows]),
                duration_s=float(duration) if duration is not None else float(ends[rows].max()),
                year=cols["year"][first] if "year" in cols else None,
                **{t: cols[t][first] for t in TAGS if t in cols},
            )
            if _same_track(writer.tracks.get(tid), rec):
                unchanged += 1  # rewriting it would only leave its old frames behind as dead rows
                continue
            writer.add_track(rec, vectors[rows], starts[rows], ends[rows])
        gone = sorted(set(writer.tracks) - set(ids.tolist())) if prune else []
        for tid in gone:
            writer.remove_track(tid)
        if nprobe is not None:
            writer.set_nprobe(nprobe)
        writer.commit()
        writer.update_index(index_factory)
    return IngestReport(tracks=len(bounds) - 1, unchanged=unchanged, removed=len(gone))


def _first(mask: np.ndarray) -> int | None:
    """The first row where ``mask`` holds, or None."""
    return int(np.argmax(mask)) if mask.any() else None


def _more(mask: np.ndarray) -> str:
    n = int(mask.sum())
    return f" (and {n - 1} more row{'s' if n > 2 else ''})" if n > 1 else ""


def _track_ids(table: pa.Table, source: str) -> np.ndarray:
    try:
        ids = np.asarray(table.column("track_id").cast(pa.string()).to_pylist(), dtype=object)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UsageError(f"{source}: track_id must hold text or numbers ({exc})") from exc
    empty = np.asarray([not t for t in ids], dtype=bool)  # None or "": sorting and the tracks table need one
    if (i := _first(empty)) is not None:
        raise UsageError(f"{source}: row {i} (0-based): track_id is empty{_more(empty)}; give every row its "
                         "track's id")
    return ids


def _times(table: pa.Table, ids: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """start_s, end_s as float64 and the rows in (track_id, start_s) order; refused unless every window is
    finite, from 0 s on, of some length, and listed once (a NaN or empty window would also leave the
    manifest's window unreadable)."""
    try:
        starts, ends = (table.column(c).cast(pa.float64()).to_numpy().astype(np.float64, copy=True)
                        for c in ("start_s", "end_s"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UsageError(f"{source}: start_s and end_s must hold numbers of seconds ({exc})") from exc
    bad = ~(np.isfinite(starts) & np.isfinite(ends))  # nulls became NaN
    if (i := _first(bad)) is not None:
        raise UsageError(f"{source}: track {ids[i]}, row {i} (0-based): start_s and end_s must be finite "
                         f"seconds (got {starts[i]}, {ends[i]}){_more(bad)}")
    bad = starts < 0
    if (i := _first(bad)) is not None:
        raise UsageError(f"{source}: track {ids[i]}, row {i} (0-based): start_s {starts[i]:g} is before the "
                         f"track's start (0 s){_more(bad)}")
    bad = ends <= starts
    if (i := _first(bad)) is not None:
        raise UsageError(f"{source}: track {ids[i]}, row {i} (0-based): end_s {ends[i]:g} is not after start_s "
                         f"{starts[i]:g}{_more(bad)}; a window needs a length")
    order = np.lexsort((starts, ids))
    twice = (ids[order][1:] == ids[order][:-1]) & (starts[order][1:] == starts[order][:-1])
    if twice.any():  # the same track listed twice (two files concatenated, a join gone wrong)
        k = int(np.argmax(twice))
        a, b = sorted((int(order[k]), int(order[k + 1])))
        raise UsageError(f"{source}: track {ids[a]} has two windows starting at {starts[a]:g} s (rows {a} and {b}, "
                         "0-based); list each window once")
    return starts, ends, order


def _vectors(table: pa.Table, ids: np.ndarray, starts: np.ndarray, source: str) -> np.ndarray:
    """Unit float32 (rows, dim) vectors (``unit_rows``: exact at any magnitude); NaN/inf and zero vectors are
    refused: they have no direction to match."""
    emb = table.column("embedding").combine_chunks()
    if not (pa.types.is_list(emb.type) or pa.types.is_large_list(emb.type)
            or pa.types.is_fixed_size_list(emb.type)) or not (
            pa.types.is_floating(emb.type.value_type) or pa.types.is_integer(emb.type.value_type)):
        raise UsageError(f"{source}: embedding must hold a list of numbers per row, not {emb.type}")
    nulls = np.asarray(emb.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if (i := _first(nulls)) is not None:
        raise UsageError(f"{source}: row {i} (0-based): no embedding{_more(nulls)}; give every window its vector")
    if isinstance(emb.type, pa.FixedSizeListType):
        dim = emb.type.list_size
    else:
        lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
        if len(set(lengths.tolist())) != 1:
            raise UsageError(f"{source}: embeddings have different lengths ({sorted(set(lengths.tolist()))[:5]})")
        dim = int(lengths[0])
    flat = emb.flatten().cast(pa.float64()).to_numpy(zero_copy_only=False)  # a null element becomes NaN
    x = np.asarray(flat, dtype=np.float64).reshape(-1, dim)

    def where(i: int) -> str:
        return f"{source}: track {ids[i]} at {starts[i]:g} s"

    bad = np.asarray(~np.isfinite(x).all(axis=1), dtype=bool)
    if (i := _first(bad)) is not None:
        raise UsageError(f"{where(i)}: the embedding holds NaN or inf{_more(bad)}")
    bad = np.asarray(~x.any(axis=1), dtype=bool)
    if (i := _first(bad)) is not None:
        raise UsageError(f"{where(i)}: the embedding is all zeros, so it matches nothing{_more(bad)}; drop the "
                         "row or give its real vector")
    return unit_rows(x)


def _track_columns(table: pa.Table, source: str) -> dict[str, list[Any]]:
    """The optional per-track columns as Python lists of the tracks table's types (text, float seconds,
    int32 year), so a bad value is refused here rather than failing the commit."""
    types = {**{t: pa.string() for t in (*TAGS, "path")}, "duration_s": pa.float64(), "year": pa.int32()}
    cols: dict[str, list[Any]] = {}
    for name, typ in types.items():
        if name not in table.column_names:
            continue
        try:
            cols[name] = table.column(name).cast(typ).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            what = "whole numbers" if name == "year" else "numbers of seconds" if typ == pa.float64() else "text"
            raise UsageError(f"{source}: {name} must hold {what} ({exc})") from exc
    return cols


def _check_durations(durations: list[Any] | None, ids: np.ndarray, starts: np.ndarray, source: str) -> None:
    """A given duration_s must be a length, and no window may start at or after the end it states (a padded
    last window may end after it)."""
    if durations is None:
        return
    d = np.asarray([np.inf if v is None else v for v in durations], dtype=np.float64)
    bad = ~(d > 0)  # NaN too
    if (i := _first(bad)) is not None:
        raise UsageError(f"{source}: track {ids[i]}, row {i} (0-based): duration_s must be a number of seconds "
                         f"above 0 (got {d[i]}){_more(bad)}")
    bad = starts >= d
    if (i := _first(bad)) is not None:
        raise UsageError(f"{source}: track {ids[i]} at {starts[i]:g} s: the window starts at or "
                         f"after the track's end (duration_s {d[i]:g}){_more(bad)}")


def _check_fits_library(library: Path, source: str, dim: int, window: float, hop: float, hop_unknown: bool) -> None:
    """An existing precomputed library takes only vectors of its dimension and windows of its length and hop
    (`index` refuses another --window/--hop the same way: the rerank reads frames as hop-spaced steps).
    ``hop_unknown``: every track has one window, so the table says nothing about the hop."""
    if not (library / "manifest.json").is_file():
        return
    m = read_manifest(library)
    if m.encoder.name == "precomputed" and m.dim != dim:
        raise UsageError(f"{source}: vectors are {dim}-d but {library} holds {m.dim}-d vectors; ingest them into "
                         "a new --library")
    if not m.tracks_file or m.dim != dim:
        return  # another encoder's dimension: check_compatible names the whole difference
    same = math.isclose(window, m.window_s, rel_tol=1e-3) and (
        hop_unknown or math.isclose(hop, m.hop_s, rel_tol=1e-3))
    if not same:
        raise UsageError(f"{source}: {window:g} s windows every {hop:g} s, but {library} holds {m.window_s:g} s "
                         f"windows every {m.hop_s:g} s; ingest them into a new --library")


def _rows_hash(vectors: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> str:
    """What a re-ingest compares: the track's stored vectors and window times ("vectors:" as it is no file hash)."""
    h = hashlib.sha256()
    for a in (vectors, starts, ends):
        h.update(np.ascontiguousarray(a).tobytes())
    return "vectors:" + h.hexdigest()


def _same_track(row: dict[str, Any] | None, rec: TrackRecord) -> bool:
    """Whether the stored ``row`` already holds ``rec`` (its vectors, times, path and tags)."""
    if row is None:
        return False
    return all(row.get(k) == v for k, v in rec.__dict__.items() if k != "added_at")


def _refuse_encoder_for_precomputed(library: Path, info: EncoderInfo) -> None:
    """A library's manifest keeps its first encoder, so naming one for an existing precomputed library
    would be silently dropped; say so instead."""
    if info.name == "precomputed" or not (library / "manifest.json").exists():
        return
    if read_manifest(library).encoder.name == "precomputed":
        raise UsageError(f"{library} already holds precomputed vectors without an encoder: ingest with "
                         f"--encoder {info.name} into a new --library")


def _median_hop(ids: np.ndarray, starts: np.ndarray, order: np.ndarray) -> float:
    same = ids[order][1:] == ids[order][:-1]
    steps = np.diff(starts[order])[same]
    return float(np.median(steps)) if len(steps) else 0.0
