"""The one writer of a library: buffers tracks, commits them in batches, keeps the FAISS index in step.

Crash safety: every commit writes new files under temporary names, fsyncs and renames them, then swaps
``manifest.json`` the same way. A reader (or a crash) sees the previous manifest or the new one, never a
mix; files a crashed writer left behind are not in the manifest and are removed by the next writer.
One writer at a time: an flock on ``.lock`` that the kernel releases when the process dies, so a lock
left by a killed indexer is never stale.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.errors import LibraryError, LibraryLockedError, UsageError
from songseek.engine.hashing import file_sha256
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import (
    EXTRA_TABLE_NAME,
    MANIFEST_NAME,
    Manifest,
    read_manifest,
    verify_quick_hash,
    write_manifest,
)
from songseek.engine.storage.store import (
    FAILURES_SCHEMA,
    TRACKS_SCHEMA,
    Failure,
    TrackRecord,
    VectorReader,
    frames_schema,
    read_failures,
    read_library_table,
    write_table_atomic,
)
from songseek.engine.version import __version__

LOCK_NAME = ".lock"
EMBEDDED_MANIFEST_KEY = b"songseek.manifest"
# A committed tracks table: what `songseek repair` rebuilds a lost manifest from (its embedded copy).
TRACKS_FILE = re.compile(r"tracks-(\d{6,})\.arrow")
# The names a writer creates (committed files and their temporary names); only these are ever deleted.
_OWN_FILE = re.compile(r"(\.)?((frames|tracks|failures)-\d{6,}\.arrow|index-\d{6,}\.faiss|manifest\.json"
                       r"|extra-[a-z0-9_]+-\d{6,}\.arrow"
                       r")(\.tmp-\d+)?")
# Extra tables (put_table): SQL-safe names (manifest.EXTRA_TABLE_NAME) that do not shadow the built-in tables.
RESERVED_TABLES = frozenset({"tracks", "frames", "failures", "manifest", "index"})


def index_rebuild_due(m: Manifest, want: str, n_frames: int) -> bool:
    """Whether the index must be rebuilt rather than extended: none yet, another factory string than the
    one ``auto`` (or the user) now asks for, or an IVF index grown past 4x the frames it was trained on."""
    return (not m.index_file or want != m.index_description
            or (faiss_index.ivf_nlist(want) > 0 and n_frames > 4 * max(m.index_trained_on, 1)))


def refuse_library_without_manifest(root: Path) -> None:
    """Raise LibraryError when ``root`` holds a tracks table but no manifest: a library whose manifest is gone.
    Starting afresh would delete the files repair rebuilds it from. Without a tracks table, repair has nothing
    to work with, so what is there is a crash leftover (a first commit killed before its tracks table) that a
    new writer removes. Also called by `songseek index` before any model loads."""
    root = Path(root).expanduser()
    if (not root.is_dir() or (root / MANIFEST_NAME).exists()
            or not any(TRACKS_FILE.fullmatch(p.name) and not p.is_dir() for p in root.iterdir())):
        return
    raise LibraryError(f"{root} holds library files but no {MANIFEST_NAME}; run `songseek repair "
                       f"--library {root}` to rebuild it from them (nothing was changed)")


class LibraryWriter:
    """Open (or create) a library for writing. Use as a context manager; ``commit()`` makes work durable."""

    def __init__(self, root: Path, new_manifest: Manifest | None = None, wait: bool = False) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None
        self._made: Path | None = None  # the topmost folder this writer created (removed again if unused)
        self._made_lock = False
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"library {self.root} is a file, not a folder")
        if new_manifest is None and not (self.root / MANIFEST_NAME).is_file():
            read_manifest(self.root)  # a mistyped --library fails here, naming the fix, before anything is made
        self._made = _missing_top(self.root)
        self._made_lock = not (self.root / LOCK_NAME).exists()  # only a lock file this writer made is removed
        self._lock_fd = _acquire_lock(self.root, wait, create=new_manifest is not None)
        try:
            if (self.root / MANIFEST_NAME).exists():
                self.manifest = read_manifest(self.root)
            elif new_manifest is None:
                raise LibraryError(f"no library at {self.root}")
            else:
                refuse_library_without_manifest(self.root)
                self.manifest = replace(new_manifest, songseek_version=__version__)
            self._tracks: dict[str, dict[str, Any]] = {}
            self._failures: dict[str, Failure] = {}
            if self.manifest.tracks_file:
                for row in read_library_table(self.root, self.manifest.tracks_file, self.manifest).to_pylist():
                    self._tracks[row["track_id"]] = row
            for row in read_failures(self.root, self.manifest).to_pylist():
                self._failures[row["path"]] = Failure(**row)
            self._pending: list[tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]] = []
            self._pending_tables: dict[str, pa.Table] = {}
            self._dirty = False
            self._remove_orphans()
        except BaseException:
            self.close()
            raise

    # -- what is stored -------------------------------------------------------------------------
    @property
    def tracks(self) -> dict[str, dict[str, Any]]:
        """Committed and pending track rows by track id (read-only use)."""
        return self._tracks

    @property
    def failures(self) -> dict[str, Failure]:
        return self._failures

    def path_index(self) -> dict[str, str]:
        """path → track id of every stored track."""
        return {row["path"]: tid for tid, row in self._tracks.items()}

    # -- changes (durable at the next commit) ---------------------------------------------------
    def add_track(self, record: TrackRecord, vectors: np.ndarray, starts: np.ndarray,
                  ends: np.ndarray) -> None:
        """Queue a track with its frames: vectors float32 (T, dim) unit rows, starts/ends float (T,) s."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dim or len(vectors) == 0:
            raise UsageError(
                f"{record.path}: expected (frames, {self.manifest.dim}) vectors, got {vectors.shape}")
        starts, ends = np.asarray(starts, np.float64).reshape(-1), np.asarray(ends, np.float64).reshape(-1)
        if len(starts) != len(vectors) or len(ends) != len(vectors):
            raise UsageError(
                f"{record.path}: {len(vectors)} vectors but {len(starts)} starts, {len(ends)} ends")
        if not np.isfinite(vectors).all():
            raise UsageError(f"{record.path}: vectors contain NaN or inf")
        for key, value in record.__dict__.items():
            if isinstance(value, str) and not _storable(value):
                raise UsageError(f"{_printable(record.path)}: {key} is not valid Unicode text (Arrow stores UTF-8)")
        if record.track_id in self._tracks:
            self.remove_track(record.track_id)
        row = dict(record.__dict__)
        row["added_at"] = row["added_at"] or time.time()
        row["frame_start"], row["frame_count"] = -1, len(vectors)
        self._tracks[record.track_id] = row
        self._failures.pop(record.path, None)
        self._pending.append((row, vectors, starts, ends))
        self._dirty = True

    def remove_track(self, track_id: str) -> None:
        """Drop a track; its frames stay in their shard as dead rows until `songseek repair --compact`."""
        row = self._tracks.pop(track_id, None)
        if row is not None:
            self._pending = [p for p in self._pending if p[0] is not row]
            self._dirty = True

    def update_path(self, track_id: str, path: str, mtime: float) -> None:
        self._tracks[track_id]["path"] = path
        self._tracks[track_id]["mtime"] = mtime
        self._dirty = True

    def record_failure(self, failure: Failure) -> None:
        """Remember a file that failed (strings that are not valid UTF-8 are stored escaped)."""
        failure = replace(failure, path=_printable(failure.path), message=_printable(failure.message),
                          error_class=_printable(failure.error_class))
        self._failures[failure.path] = failure
        self._dirty = True

    def clear_failure(self, path: str) -> None:
        if self._failures.pop(path, None) is not None:
            self._dirty = True

    def put_table(self, name: str, table: pa.Table) -> None:
        """Replace (or add) the extra table ``name`` (tags, mos, ...): rows keyed by a string ``track_id``
        column. Durable at the next commit; `--where` sees it joined to the tracks on track_id."""
        if not EXTRA_TABLE_NAME.fullmatch(name) or name in RESERVED_TABLES:
            raise UsageError(f"bad extra table name {name!r}: use lower-case letters, digits and _, "
                             f"not one of {', '.join(sorted(RESERVED_TABLES))}")
        if "track_id" not in table.column_names or not pa.types.is_string(table.schema.field("track_id").type):
            raise UsageError(f"extra table {name!r} needs a string track_id column")
        self._pending_tables[name] = table
        self._dirty = True

    def get_table(self, name: str) -> pa.Table | None:
        """The extra table ``name`` as the next commit will leave it, or None when there is none."""
        if name in self._pending_tables:
            return self._pending_tables[name]
        file = self.manifest.extra_tables.get(name)
        return read_library_table(self.root, file, self.manifest) if file else None

    # -- durability -----------------------------------------------------------------------------
    def commit(self) -> None:
        """Write pending frames as one new shard, the tracks and failures tables, then the manifest.

        Every file goes to a temporary name, is fsynced and renamed; the manifest swap is the commit
        point. On an OSError (a full disk, say) the new files are removed, the library keeps its last
        committed generation and a LibraryError says so; the changes stay queued in this writer.
        """
        if not self._dirty and self.manifest.tracks_file:
            return
        m = self.manifest
        gen = m.generation + 1
        shards, rows = list(m.frame_shards), list(m.shard_rows)
        sums = {n: m.checksums[n] for n in m.frame_shards if n in m.checksums}
        if m.index_file and m.index_file in m.checksums:
            sums[m.index_file] = m.checksums[m.index_file]
        new_files: list[Path] = []
        tracks_name, failures_name = f"tracks-{gen:06d}.arrow", f"failures-{gen:06d}.arrow"
        extra = dict(m.extra_tables)
        extra.update({t: f"extra-{t}-{gen:06d}.arrow" for t in self._pending_tables})
        # a replaced extra table is kept like a replaced tracks table: readers of ``m`` may still open it
        previous = _superseded(m, {"tracks-": tracks_name, "failures-": failures_name,
                                   **{_extra_prefix(t): extra[t] for t in self._pending_tables}})
        sums.update({n: m.checksums[n] for n in previous if n in m.checksums})
        try:
            if self._pending:
                name = f"frames-{gen:06d}.arrow"
                table = self._pending_table(m.n_frame_rows)
                new_files.append(self.root / name)
                sums[name] = write_table_atomic(self.root / name, table)
                shards.append(name)
                rows.append(table.num_rows)
            failures = pa.Table.from_pylist([f.__dict__ for f in self._failures.values()],
                                            schema=FAILURES_SCHEMA)
            new_files.append(self.root / failures_name)
            sums[failures_name] = write_table_atomic(self.root / failures_name, failures)
            sums.update({n: m.checksums[n] for n in extra.values() if n in m.checksums})
            for tname, ttable in self._pending_tables.items():
                new_files.append(self.root / extra[tname])
                sums[extra[tname]] = write_table_atomic(self.root / extra[tname], ttable)
            new = m.bumped(frame_shards=tuple(shards), shard_rows=tuple(rows), tracks_file=tracks_name,
                           failures_file=failures_name, songseek_version=__version__, previous_files=previous,
                           extra_tables=extra)
            # The tracks table carries this generation's manifest (less its own checksum) in its schema
            # metadata, so `songseek repair` can rebuild a lost or damaged manifest.json from it.
            embedded = json.dumps(replace(new, checksums=dict(sums)).to_json()).encode()
            tracks = pa.Table.from_pylist(
                sorted(self._tracks.values(), key=lambda r: r["frame_start"]), schema=TRACKS_SCHEMA
            ).replace_schema_metadata({EMBEDDED_MANIFEST_KEY: embedded})
            new_files.append(self.root / tracks_name)
            sums[tracks_name] = write_table_atomic(self.root / tracks_name, tracks)
            new = write_manifest(self.root, replace(new, checksums=sums))
        except BaseException as exc:
            if self._manifest_on_disk_is(gen):
                # The rename landed (only the folder fsync after it, or an interrupt, came in between). Take
                # the manifest from disk: ``new`` lacks this commit's checksums and identities, and a later
                # commit built on it would name files without them (repair would then drop their tracks).
                self._committed(read_manifest(self.root))
                if isinstance(exc, OSError):
                    return
                raise
            for path in new_files:
                path.unlink(missing_ok=True)
            self._unassign_pending()
            if not isinstance(exc, OSError):
                raise
            why, fix = write_failure(exc)
            raise LibraryError(
                f"could not commit to {self.root}: {why}; the library still holds its last committed "
                f"state (generation {m.generation}); {fix} and run the same command again to resume"
            ) from exc
        self._committed(new)

    def _committed(self, new: Manifest) -> None:
        self.manifest = new
        self._pending = []
        self._pending_tables = {}
        self._dirty = False
        self._remove_orphans()

    def set_nprobe(self, nprobe: int) -> None:
        """The IVF lists each query probes by default from now on (0: the automatic rule); saved at the
        next ``commit``."""
        if nprobe < 0:
            raise UsageError(f"nprobe must be 0 (automatic) or more (got {nprobe})")
        if nprobe != self.manifest.index_nprobe:
            self.manifest = replace(self.manifest, index_nprobe=nprobe)
            self._dirty = True

    def set_rerank(self, settings: dict[str, Any]) -> None:
        """The rerank searches use by default from now on ({} = the built-in default; the query layer
        checks the contents, engine/query/fusion.py RerankSettings); saved at the next ``commit``."""
        if settings != self.manifest.rerank:
            self.manifest = replace(self.manifest, rerank=dict(settings))
            self._dirty = True

    def update_index(self, factory: str | None = None, force_rebuild: bool = False) -> str:
        """Bring the FAISS index up to every committed frame: add new rows, or rebuild when due.

        Returns what happened: "unchanged", "updated" or "rebuilt". Rebuilt when there is no index,
        the factory changes (e.g. `auto` crossing to IVF), an IVF index has grown past 4x the frames
        it was trained on, or the index file on disk cannot be read.
        """
        self.manifest, action = write_index(self.root, self.manifest, factory, force_rebuild)
        if action != "unchanged":
            self._remove_orphans()
        return action

    def close(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            if not (self.root / MANIFEST_NAME).exists():
                self._remove_unused()  # still under the lock: no writer can be using what goes
            os.close(fd)
            self._lock_fd = None

    def _remove_unused(self) -> None:
        """A run that never committed leaves no library behind: drop the lock file, then the folders this
        writer created while they are empty (a waiting writer notices the unlinked lock and takes a new one)."""
        if not self._made_lock:
            return  # a folder that was there with its lock (a library whose manifest is gone): leave all as found
        (self.root / LOCK_NAME).unlink(missing_ok=True)
        if self._made is None:
            return
        for folder in (self.root, *self.root.parents):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or not ours to remove): keep it and everything above
            if folder == self._made:
                return

    def __enter__(self) -> LibraryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------
    def _pending_table(self, first_row: int) -> pa.Table:
        cols: dict[str, list[Any]] = {"track_id": [], "frame": [], "start_s": [], "end_s": []}
        vecs = []
        row_no = first_row
        for row, vectors, starts, ends in self._pending:
            row["frame_start"] = row_no
            row_no += len(vectors)
            cols["track_id"] += [row["track_id"]] * len(vectors)
            cols["frame"] += list(range(len(vectors)))
            cols["start_s"].append(starts)
            cols["end_s"].append(ends)
            vecs.append(vectors)
        flat = np.concatenate(vecs).reshape(-1)
        dim = self.manifest.dim
        vector_col = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
        return pa.Table.from_arrays(
            [pa.array(cols["track_id"], pa.string()), pa.array(cols["frame"], pa.int32()),
             pa.array(np.concatenate(cols["start_s"])), pa.array(np.concatenate(cols["end_s"])), vector_col],
            schema=frames_schema(dim, self.manifest),
        )

    def _unassign_pending(self) -> None:
        for row, *_ in self._pending:
            row["frame_start"] = -1

    def _manifest_on_disk_is(self, generation: int) -> bool:
        return _manifest_on_disk_is(self.root, generation)

    def _remove_orphans(self) -> None:
        """Delete files no manifest names (left by a crash, or superseded by the commit before last)."""
        remove_orphans(self.root, self.manifest)


def write_index(root: Path, m: Manifest, factory: str | None = None, force_rebuild: bool = False
                ) -> tuple[Manifest, str]:
    """Update or rebuild the FAISS index of the committed library ``m`` and commit a manifest naming it.

    The caller holds the library's lock. Returns (the manifest now on disk, "unchanged" | "updated" |
    "rebuilt"); see ``LibraryWriter.update_index`` for when it rebuilds.
    """
    factory = factory or m.index_factory
    reader = VectorReader(root, m)  # bounded batches by pread: the build never maps every shard
    n = reader.n_rows
    want = faiss_index.auto_factory(n, m.dim) if factory == "auto" else factory
    if n == 0:
        return m, "unchanged"
    rebuild = force_rebuild or index_rebuild_due(m, want, n)
    # a missing or damaged index is rebuilt from the shards, also when no frame is new: "unchanged" would
    # leave every search failing on it (the identity check reads 128 KiB, not the index)
    rebuild = rebuild or not _index_file_intact(root, m)
    if not rebuild and m.index_frames == n and m.index_factory == factory:
        return m, "unchanged"
    idx = None
    if not rebuild:
        try:
            idx = faiss_index.load_index(root / m.index_file, use_gpu=False, mmap=False)
        except LibraryError:
            rebuild = True
        else:
            if int(idx.ntotal) != m.index_frames or int(idx.d) != m.dim:
                rebuild = True
    if rebuild or idx is None:
        idx = build_from_reader(reader, want)
        trained_on = n
    else:
        faiss_index.add_batches(idx, reader.batches(m.index_frames, n, faiss_index.ADD_BATCH))
        trained_on = m.index_trained_on
    name = f"index-{m.generation + 1:06d}.faiss"
    try:
        faiss_index.save_index(idx, root / name)
        previous = _superseded(m, {"index-": name})
        sums = {k: v for k, v in m.checksums.items() if k in m.files() or k in previous}
        sums[name] = file_sha256(root / name)
        new = m.bumped(index_file=name, index_description=want, index_frames=n,
                       index_trained_on=trained_on, index_factory=factory, checksums=sums,
                       previous_files=previous, index_last_action="rebuilt" if rebuild else "updated")
        new = write_manifest(root, new)
    except OSError as exc:
        if not _manifest_on_disk_is(root, m.generation + 1):
            (root / name).unlink(missing_ok=True)
            why, fix = write_failure(exc)
            raise IndexWriteError(f"could not write the index of {root}: {why}; searches still work "
                                  f"(exactly) on the frames the old index lacks; {fix} and run the command "
                                  "again") from exc
        new = read_manifest(root)
    return new, "rebuilt" if rebuild else "updated"


def build_from_reader(reader: VectorReader, factory: str, stop: int | None = None, seed: int = 0) -> Any:
    """A new index of ``factory`` over rows [0, stop) of the reader: trained on a seeded sample, then
    filled batch by batch, so RAM holds the index, the sample (while training) and one batch."""
    stop = reader.n_rows if stop is None else min(stop, reader.n_rows)
    rows = faiss_index.training_rows(stop, factory, seed)
    idx = faiss_index.build_index(factory, reader.dim, None if rows is None else reader.gather(rows))
    faiss_index.add_batches(idx, reader.batches(0, stop, faiss_index.ADD_BATCH))
    return idx


def _index_file_intact(root: Path, m: Manifest) -> bool:
    """Whether ``m``'s index file is there and is the file it committed (its quick hash, where recorded)."""
    if not (root / m.index_file).is_file():
        return False
    try:
        verify_quick_hash(root, m.index_file, m)
    except LibraryError:
        return False
    return True


def _manifest_on_disk_is(root: Path, generation: int) -> bool:
    try:
        return read_manifest(root).generation == generation
    except LibraryError:
        return False


def remove_orphans(root: Path, m: Manifest) -> None:
    """Delete the writer's own files that ``m`` neither names nor keeps (crash leftovers, superseded files).

    Housekeeping only: a file that cannot be deleted now stays (no reader looks at it) and the next writer
    tries again, so a commit that is already durable never fails here."""
    keep = {MANIFEST_NAME, LOCK_NAME, *m.files(), *m.previous_files}
    for path in root.iterdir():
        if path.name not in keep and _OWN_FILE.fullmatch(path.name) and not path.is_dir():
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass


class IndexWriteError(LibraryError):
    """The index could not be written (disk full, permissions): the committed library is intact and
    searches stay exact on the frames the old index lacks; running the command again finishes it."""


def write_failure(exc: OSError) -> tuple[str, str]:
    """(what went wrong, what the user can do) for an OSError met while writing library files."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is used up"), "free space"
    if exc.errno == errno.EFBIG:
        return "a file grew past the file-size limit", "raise the limit (ulimit -f) or use another disk"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied", "make the library folder and its files writable by you"
    if exc.errno == errno.EROFS:
        return "the file system is read-only", "remount it read-write (or copy the library to a writable disk)"
    return exc.strerror or str(exc), "check the disk"


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _printable(text: str) -> str:
    """``text`` with lone surrogates (undecodable file-name bytes) as backslash escapes."""
    return text if _storable(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _extra_prefix(table: str) -> str:
    """The name prefix of every generation of extra table ``table`` (names have no '-', so it is unique)."""
    return f"extra-{table}-"


def _superseded(m: Manifest, replaced: dict[str, str]) -> tuple[str, ...]:
    """The newest superseded file of each kind (tracks, failures, index, each extra table) once ``replaced``
    (prefix → new name) takes effect: the file the old manifest named if it changes, else the one it
    already kept. So a replaced file outlives one commit of its own kind, and readers of the manifest
    before that commit can still open it."""
    out = []
    kinds = [("tracks-", m.tracks_file), ("failures-", m.failures_file), ("index-", m.index_file),
             *((_extra_prefix(t), f) for t, f in sorted(m.extra_tables.items()))]
    for prefix, current in kinds:
        new = replaced.get(prefix, current)
        if current and new != current:
            out.append(current)
        else:
            out += [p for p in m.previous_files if p.startswith(prefix) and p != new]
    return tuple(out)


def acquire_lock(root: Path, wait: bool = False) -> int:
    """Take the library's writer lock (an flock the kernel drops when the process dies); returns the fd
    to ``os.close`` when done. Raises LibraryLockedError naming the holder when another process has it."""
    return _acquire_lock(root, wait)


def _missing_top(root: Path) -> Path | None:
    """The topmost of ``root`` and its parents that does not exist yet (None: ``root`` exists)."""
    missing = [p for p in (root, *root.parents) if not p.exists()]
    return missing[-1] if missing else None


def _acquire_lock(root: Path, wait: bool, create: bool = False) -> int:
    """Lock ``root`` (``create``: making the folder first). A writer that gives up on a new library unlinks
    its lock file (LibraryWriter.close): a lock taken on an unlinked file locks nothing, so take a fresh one."""
    for _ in range(_LOCK_TRIES):
        try:
            if create:
                root.mkdir(parents=True, exist_ok=True)
            fd = _lock_file(root, wait)
        except (_FolderVanished, FileNotFoundError):
            if not create:
                raise LibraryError(f"no library at {root} (the folder is gone)") from None
            continue  # a writer that gave up on this new library removed the folder between our steps
        try:
            now = os.stat(root / LOCK_NAME, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        held = os.fstat(fd)
        if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
            return fd
        os.close(fd)
    raise LibraryError(f"cannot lock the library {root}: its lock file kept being replaced; try again")


_LOCK_TRIES = 100  # each retry needs another writer to remove the lock: this only stops a pathological loop


class _FolderVanished(Exception):
    """The library folder disappeared between mkdir and opening its lock (``_acquire_lock`` retries)."""


def _lock_file(root: Path, wait: bool) -> int:
    path = root / LOCK_NAME
    try:
        # O_NOFOLLOW: a .lock that is a symlink must not make us create or overwrite a file elsewhere;
        # O_NONBLOCK: a FIFO planted as .lock must not hang the open.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        raise _FolderVanished() from None
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise LibraryError(f"{path} is a symbolic link, not a lock file; remove it and try again") from None
        if exc.errno == errno.EISDIR:
            raise LibraryError(f"{path} is a folder, not a lock file; remove it and try again") from None
        raise LibraryError(f"cannot write to the library {root} ({exc.strerror}); check its permissions") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LibraryError(f"{path} is not a regular file (a FIFO, device or folder); remove it and try again")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LibraryLockedError(
            f"{root} is being written by {holder}; wait for it to finish and try again (index, ingest, repair "
            "and bench rerank --save wait by themselves with --wait)"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise LibraryError(f"cannot lock the library {root} ({exc.strerror}); "
                           "use a library on a local disk") from None
    # A lock left by a killed process is no lock at all (the kernel dropped it): the pid below is only
    # for the message another writer prints while this one runs.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"songseek pid {os.getpid()}".encode(), 0)
    return fd
