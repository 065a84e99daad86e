"""`songseek repair`: verify a library's files against the manifest's checksums, recover what can be
recovered, rebuild the FAISS index from the Arrow shards, and (``compact``) rewrite the shards without
dead frames.

What repair does with each kind of damage (every action is listed in the returned report):

- manifest.json missing, unreadable or damaged: rebuilt from the newest ``tracks-*.arrow`` whose
  embedded manifest (the writer stamps one into every tracks table) names files that all exist and
  verify. A manifest from a *newer* songseek is never touched (upgrade instead).
- a frame shard missing, damaged or failing its checksum: the tracks whose frames lie in it are dropped
  (the next `songseek index` re-embeds their files) and the remaining shards are compacted.
- the tracks table damaged: the previous generation's tracks table (kept one commit for this) is used
  when it verifies and fits the shards; otherwise the library keeps its frames but no tracks, and the
  next `songseek index` re-embeds every file.
- the failures table damaged: rebuilt empty (the next `songseek index` retries the failed files and records
  those that fail again); an extra table damaged: dropped (`songseek tag`, `mos`, `duplicates` write it again).
- the index missing or damaged (or fine): rebuilt from the shards, always.

In a library of precomputed vectors (`songseek ingest`) the advice is to ingest them again instead: `index`
has no audio to re-embed there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.errors import IncompatibleLibraryError, LibraryError
from songseek.engine.hashing import file_sha256, quick_hash
from songseek.engine.storage.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from songseek.engine.storage.store import (
    FAILURES_SCHEMA,
    TRACKS_SCHEMA,
    frames_schema,
    read_table_mmap,
    write_table_atomic,
)
from songseek.engine.storage.writer import (
    EMBEDDED_MANIFEST_KEY,
    TRACKS_FILE,
    IndexWriteError,
    acquire_lock,
    remove_orphans,
    write_failure,
    write_index,
)

# Rows per shard written by compaction (about 1 GB of 512-d float32 vectors).
COMPACT_SHARD_ROWS = 500_000
_NUMBERED = re.compile(r"(?:frames|tracks|failures|index|extra-[a-z0-9_]+)-(\d{6,})\.(?:arrow|faiss)")


@dataclass
class RepairReport:
    """What `songseek repair` found and did. ``problems`` are the damaged files (one line each)."""

    path: str
    generation_before: int = -1          # -1: the manifest could not be read
    generation_after: int = -1
    manifest_recovered_from: str = ""    # tracks file whose embedded manifest replaced manifest.json
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    dropped_tracks: int = 0
    compacted: bool = False
    dead_frames_removed: int = 0
    tracks: int = 0
    frames: int = 0
    index: str = ""

    def summary(self) -> str:
        state = "no damage found" if not self.problems else f"{len(self.problems)} damaged file(s) repaired"
        return (f"{self.path}: {state}; checked {self.files_checked} files; {self.tracks} tracks, "
                f"{self.frames} frames; dropped {self.dropped_tracks} tracks; "
                + (f"compacted ({self.dead_frames_removed} dead frames removed); " if self.compacted else "")
                + f"index {self.index or 'none'}; generation {self.generation_after}")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_file(root: Path, name: str, manifest: Manifest) -> str | None:
    """None when ``name`` is a regular file (not a link) that matches its recorded checksum and identity
    hash and, for a frame shard, holds the rows the manifest says (readable, for libraries without
    checksums), else a one-line reason."""
    path = root / name
    if path.is_symlink():
        return f"{name}: a symbolic link, not a file the library wrote"
    if not path.is_file():
        return f"{name}: missing"
    want = manifest.checksums.get(name)
    try:
        if want is None and manifest.checksums:
            return f"{name}: the manifest records no checksum for it (not a file this library committed)"
        if want is not None:
            got = file_sha256(path)
            if got != want:
                return f"{name}: checksum mismatch (sha256 {got[:12]}…, manifest {want[:12]}…)"
        quick = manifest.quick_hashes.get(name)
        if quick and quick_hash(path) != quick:
            return f"{name}: identity hash mismatch (replaced or overwritten since its commit)"
    except OSError as exc:
        return f"{name}: unreadable ({exc.strerror})"
    if name.endswith(".arrow"):
        try:
            table = read_table_mmap(path)
        except LibraryError as exc:
            return f"{name}: {_reason(exc)}"
        rows = dict(zip(manifest.frame_shards, manifest.shard_rows))
        if name in rows and table.num_rows != rows[name]:
            return f"{name}: holds {table.num_rows} frames, the manifest says {rows[name]}"
    return None


def _reason(exc: LibraryError) -> str:
    """A LibraryError's message without the file name before it and the advice to run repair after it."""
    text = str(exc).split(": ", 1)[-1]
    return re.sub(r";? ?(?:if this is a songseek library, )?run `songseek repair[^`]*`", "", text).strip()


def verify_library(root: str | Path) -> list[str]:
    """Every problem with the library's committed files, one line each (empty: all files verify).
    Changes nothing and takes no lock."""
    root = Path(root).expanduser()
    for attempt in range(3):
        m = read_manifest(root)
        problems = [p for p in (check_file(root, n, m) for n in m.files()) if p]
        if not problems:
            problems += _consistency(root, m)
        # A writer may have committed twice while the checksums were read (a commit keeps the files it
        # supersedes for one more commit only): a file it removed is no damage; check the new generation.
        if not problems or attempt == 2 or _generation(root) == m.generation:
            return problems
    return problems


def repair_library(root: str | Path, compact: bool = False, wait: bool = False) -> RepairReport:
    """Verify, recover and re-index ``root`` under its writer lock (see the module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LibraryError(f"no library at {root}: nothing to repair")
    if not (root / MANIFEST_NAME).exists() and not any(TRACKS_FILE.fullmatch(p.name) for p in root.iterdir()):
        raise LibraryError(f"{root} is not a songseek library (no {MANIFEST_NAME} and no tracks table to "
                           "rebuild one from): nothing to repair")
    fd = acquire_lock(root, wait)
    before = _generation(root)
    try:
        return _repair(root, compact)
    except (IncompatibleLibraryError, IndexWriteError):
        raise  # IndexWriteError: the repaired library is committed; only its index waits for space
    except OSError as exc:
        # a full disk, a read-only folder, an unreadable file: nothing to move aside; once that is fixed,
        # repair runs again from whatever generation is committed
        why, fix = write_failure(exc)
        state = ("the library is as it was" if _generation(root) == before
                 else f"the repaired library is committed (generation {_generation(root)})")
        raise LibraryError(f"could not repair {root}: {why} ({exc.filename or root}); {state}; {fix} and "
                           f"run `songseek repair --library {root}` again") from None
    except LibraryError as exc:
        # Never send the user from repair back to repair: say what could not be done instead.
        raise LibraryError(f"{root}: repair could not fix this library ({_reason(exc)}); move the named file "
                           "out of the folder and run repair again, or index the music into a new library "
                           "(`songseek index DIR --library NEW`)") from None
    finally:
        os.close(fd)


def _repair(root: Path, compact: bool) -> RepairReport:
    report = RepairReport(path=str(root))
    try:
        m = read_manifest(root)
        report.generation_before = m.generation
    except IncompatibleLibraryError:
        raise
    except LibraryError as exc:
        report.problems.append(f"{MANIFEST_NAME}: {_reason(exc)}")
        m = _recover_manifest(root, report)
    names = m.files()
    report.files_checked = len(names)
    bad = {n: why for n, why in ((n, check_file(root, n, m)) for n in names) if why}
    m, bad = _trust_intact_shards(root, m, bad, report)
    report.problems += list(bad.values())

    tracks = _tracks_table(root, m, bad, report)
    failures = _failures_table(root, m, bad, report)
    extra = {k: v for k, v in m.extra_tables.items() if v not in bad}
    for k in set(m.extra_tables) - set(extra):
        report.actions.append(f"dropped the damaged extra table {k!r}; write it again (e.g. `songseek tag`)")

    bad_shards = [s for s in m.frame_shards if s in bad]
    tracks, dropped = _drop_inconsistent(root, m, tracks, set(bad_shards))
    report.dropped_tracks = dropped
    if dropped:
        report.actions.append(f"dropped {dropped} tracks whose frames were lost or inconsistent; "
                              f"{_redo(root, m, 'their files', 'their vectors')}")

    gen = _next_free_generation(root, m)
    sums: dict[str, str] = {}
    shards, rows = list(m.frame_shards), list(m.shard_rows)
    live = int(np.asarray(tracks.column("frame_count").to_numpy(), dtype=np.int64).sum())
    if compact or bad_shards:
        shards, rows, tracks, gen, sums = _compact(root, m, tracks, set(bad_shards), gen)
        report.compacted = True
        report.dead_frames_removed = m.n_frame_rows - sum(m.shard_rows[i] for i, s in enumerate(m.frame_shards)
                                                          if s in bad_shards) - live
        report.actions.append(f"rewrote the frames into {len(shards)} shard(s) without dead frames")
    else:
        sums = {s: m.checksums.get(s) or file_sha256(root / s) for s in shards}

    failures_name, tracks_name = f"failures-{gen:06d}.arrow", f"tracks-{gen:06d}.arrow"
    sums[failures_name] = write_table_atomic(root / failures_name, failures)
    for v in extra.values():
        sums[v] = m.checksums.get(v) or file_sha256(root / v)
    new = replace(m, generation=gen, frame_shards=tuple(shards), shard_rows=tuple(rows), tracks_file=tracks_name,
                  failures_file=failures_name, index_file="", index_description="", index_frames=0,
                  index_trained_on=0, extra_tables=extra, previous_files=(), checksums={}, quick_hashes={})
    embedded = json.dumps(replace(new, checksums=dict(sums)).to_json()).encode()
    tracks = tracks.replace_schema_metadata({EMBEDDED_MANIFEST_KEY: embedded})
    sums[tracks_name] = write_table_atomic(root / tracks_name, tracks)
    new = write_manifest(root, replace(new, checksums=sums))
    remove_orphans(root, new)
    new, _ = write_index(root, new, new.index_factory, force_rebuild=True)
    remove_orphans(root, new)
    report.generation_after = new.generation
    report.tracks, report.frames = tracks.num_rows, live
    report.index = new.index_description or "none (empty library)"
    return report


def _trust_intact_shards(root: Path, m: Manifest, bad: dict[str, str], report: RepairReport
                         ) -> tuple[Manifest, dict[str, str]]:
    """Frame shards that fail the manifest's record (checksum, identity or row count) but match the record
    in the manifest embedded in the tracks table, which itself verifies: the manifest's record is what is
    wrong, and the shard is kept with the tracks table's record (dropping it lost every track in it)."""
    if not m.tracks_file or m.tracks_file in bad:
        return m, bad
    try:
        meta = read_table_mmap(root / m.tracks_file).schema.metadata or {}
        em = Manifest.from_json(json.loads(meta[EMBEDDED_MANIFEST_KEY]), root / m.tracks_file)
    except (LibraryError, KeyError, ValueError, TypeError):
        return m, bad
    their_rows = dict(zip(em.frame_shards, em.shard_rows))
    sums, quick, rows = dict(m.checksums), dict(m.quick_hashes), list(m.shard_rows)
    kept = dict(bad)
    for i, s in enumerate(m.frame_shards):
        if s not in bad or s not in em.checksums or check_file(root, s, em) is not None:
            continue
        sums[s] = em.checksums[s]
        quick.pop(s, None)
        if s in em.quick_hashes:
            quick[s] = em.quick_hashes[s]
        rows[i] = their_rows.get(s, rows[i])
        del kept[s]
        report.problems.append(f"{MANIFEST_NAME}: {bad[s]}; the file matches the record in {m.tracks_file}: "
                               "kept it")
    if kept == bad:
        return m, bad
    return replace(m, checksums=sums, quick_hashes=quick, shard_rows=tuple(rows)), kept


def _generation(root: Path) -> int:
    """The generation of the manifest on disk now (-1 when it cannot be read)."""
    try:
        return read_manifest(root).generation
    except LibraryError:
        return -1


def _next_free_generation(root: Path, m: Manifest) -> int:
    """A generation number above the manifest's and above every numbered file in the folder."""
    found = [int(mt.group(1)) for p in root.iterdir() if (mt := _NUMBERED.fullmatch(p.name))]
    return max([m.generation, *found]) + 1


def _recover_manifest(root: Path, report: RepairReport) -> Manifest:
    """The newest embedded manifest (from a tracks table) whose files all exist and verify."""
    candidates = sorted((int(mt.group(1)), p) for p in root.iterdir() if (mt := TRACKS_FILE.fullmatch(p.name)))
    for _gen, path in reversed(candidates):
        try:
            meta = read_table_mmap(path).schema.metadata or {}
            m = Manifest.from_json(json.loads(meta[EMBEDDED_MANIFEST_KEY]), path)
        except (LibraryError, KeyError, ValueError):
            continue
        if m.tracks_file != path.name:
            continue
        if all(check_file(root, n, m) is None for n in m.files() if n != m.tracks_file):
            # the embedded copy cannot hold its own file's checksum: the file is read whole here anyway
            m = replace(m, index_file="", index_description="", index_frames=0, index_trained_on=0,
                        checksums={**m.checksums, path.name: file_sha256(path)})
            report.manifest_recovered_from = path.name
            report.actions.append(f"rebuilt {MANIFEST_NAME} from the manifest embedded in {path.name} "
                                  f"(generation {m.generation})")
            return m
    raise LibraryError(f"{root / MANIFEST_NAME} is damaged and no tracks table holds a usable copy; "
                       f"index the music into a new library (`songseek index DIR --library NEW`)")


def _tracks_table(root: Path, m: Manifest, bad: dict[str, str], report: RepairReport) -> pa.Table:
    if m.tracks_file and m.tracks_file not in bad:
        return _plain(read_table_mmap(root / m.tracks_file), TRACKS_SCHEMA)
    if m.tracks_file:
        for prev in m.previous_files:
            if not prev.startswith("tracks-") or check_file(root, prev, m) or prev not in m.checksums:
                continue
            table = read_table_mmap(root / prev)
            try:
                pm = json.loads((table.schema.metadata or {})[EMBEDDED_MANIFEST_KEY])
                prev_shards = list(pm["frame_shards"])
            except (KeyError, ValueError, TypeError):
                continue
            if prev_shards == list(m.frame_shards[:len(prev_shards)]):
                report.actions.append(f"used the previous tracks table {prev}: the tracks of the last commit "
                                      f"are gone; {_redo(root, m, 'their files', 'their vectors')}")
                return _plain(table, TRACKS_SCHEMA)
        report.actions.append("no usable tracks table: kept the frames, dropped every track; "
                              f"{_redo(root, m, 'every file', 'every vector')}")
    return TRACKS_SCHEMA.empty_table()


def _redo(root: Path, m: Manifest, files: str, vectors: str) -> str:
    """How dropped tracks come back: `index` re-embeds audio files, but precomputed vectors come only from
    the user's file (`index` refuses such a library without --encoder)."""
    if m.encoder.name == "precomputed":
        return f"ingest {vectors} again (`songseek ingest FILE --library {root}`)"
    return f"`songseek index` re-embeds {files}"


def _failures_table(root: Path, m: Manifest, bad: dict[str, str], report: RepairReport) -> pa.Table:
    # A damaged one is rebuilt empty, not taken from the previous generation: that one can list files indexed
    # since and lacks the last commit's failures, while an empty table costs one retry per failed file.
    if m.failures_file and m.failures_file not in bad:
        return _plain(read_table_mmap(root / m.failures_file), FAILURES_SCHEMA)
    if m.failures_file:
        report.actions.append("dropped the damaged failures table: failed files are retried next run")
    return FAILURES_SCHEMA.empty_table()


def _plain(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table cast to ``schema`` (no metadata), copied out of its memory map."""
    return pa.Table.from_pylist(table.to_pylist(), schema=schema)


def _consistency(root: Path, m: Manifest) -> list[str]:
    """Tracks whose (frame_start, frame_count) do not point at their own frames."""
    if not m.tracks_file:
        return []
    tracks = read_table_mmap(root / m.tracks_file)
    _, dropped = _drop_inconsistent(root, m, tracks, set())
    return [f"{m.tracks_file}: {dropped} tracks point at frames that are not theirs"] if dropped else []


def _shard_track_ids(root: Path, m: Manifest, bad: set[str]) -> tuple[np.ndarray, list[np.ndarray | None]]:
    offsets = np.cumsum([0, *m.shard_rows])
    ids: list[np.ndarray | None] = []
    for s in m.frame_shards:
        ids.append(None if s in bad else
                   np.asarray(read_table_mmap(root / s).column("track_id").to_pylist(), dtype=object))
    return offsets, ids


def _drop_inconsistent(root: Path, m: Manifest, tracks: pa.Table, bad: set[str]) -> tuple[pa.Table, int]:
    """Keep the tracks whose frames lie in one good shard and carry their track id, frame after frame."""
    if tracks.num_rows == 0:
        return tracks, 0
    offsets, ids = _shard_track_ids(root, m, bad)
    tids = tracks.column("track_id").to_pylist()
    starts = tracks.column("frame_start").to_numpy()
    counts = tracks.column("frame_count").to_numpy()
    keep = np.zeros(len(tids), dtype=bool)
    for i, (tid, s, c) in enumerate(zip(tids, starts, counts, strict=True)):
        shard = int(np.searchsorted(offsets, s, side="right") - 1)
        if c <= 0 or s < 0 or shard >= len(ids) or s + c > offsets[shard + 1]:
            continue
        col = ids[shard]
        if col is not None and (col[s - offsets[shard]:s - offsets[shard] + c] == tid).all():
            keep[i] = True
    return tracks.filter(pa.array(keep)), int((~keep).sum())


def _compact(root: Path, m: Manifest, tracks: pa.Table, bad: set[str], gen: int
             ) -> tuple[list[str], list[int], pa.Table, int, dict[str, str]]:
    """Copy every live frame, track by track, into new shards; returns (shards, rows, tracks with new
    frame_start, the next free generation number, checksums of the new shards)."""
    offsets = np.cumsum([0, *m.shard_rows])
    tables = {s: read_table_mmap(root / s) for s in m.frame_shards if s not in bad}
    order = np.argsort(tracks.column("frame_start").to_numpy(), kind="stable")
    tracks = tracks.take(pa.array(order))
    starts = tracks.column("frame_start").to_numpy()
    counts = tracks.column("frame_count").to_numpy()
    schema = frames_schema(m.dim, m)
    shards: list[str] = []
    rows: list[int] = []
    sums: dict[str, str] = {}
    new_starts = np.zeros(len(starts), dtype=np.int64)
    pieces: list[pa.Table] = []
    n_pending = 0
    written = 0

    def flush() -> None:
        nonlocal gen, n_pending, pieces
        if not pieces:
            return
        name = f"frames-{gen:06d}.arrow"
        table = pa.concat_tables(pieces).cast(schema)
        sums[name] = write_table_atomic(root / name, table)
        shards.append(name)
        rows.append(table.num_rows)
        gen += 1
        pieces, n_pending = [], 0

    for i, (s, c) in enumerate(zip(starts, counts, strict=True)):
        shard = int(np.searchsorted(offsets, s, side="right") - 1)
        local = int(s - offsets[shard])
        pieces.append(tables[m.frame_shards[shard]].slice(local, int(c)))
        new_starts[i] = written
        written += int(c)
        n_pending += int(c)
        if n_pending >= COMPACT_SHARD_ROWS:
            flush()
    flush()
    idx = tracks.schema.get_field_index("frame_start")
    tracks = tracks.set_column(idx, tracks.schema.field(idx), pa.array(new_starts, pa.int64()))
    return shards, rows, tracks, gen, sums
