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
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek import __version__

from . import index as faiss_index
from .errors import LibraryError, LibraryLockedError, UsageError
from .manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from .store import (
    FAILURES_SCHEMA,
    TRACKS_SCHEMA,
    Failure,
    FrameStore,
    TrackRecord,
    frames_schema,
    read_table_mmap,
    write_table_atomic,
)

LOCK_NAME = ".lock"


class LibraryWriter:
    """Open (or create) a library for writing. Use as a context manager; ``commit()`` makes work durable."""

    def __init__(self, root: Path, new_manifest: Manifest | None = None, wait: bool = False) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--library {self.root} is a file, not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.root, wait)
        try:
            if (self.root / MANIFEST_NAME).exists():
                self.manifest = read_manifest(self.root)
            elif new_manifest is None:
                raise LibraryError(f"no library at {self.root}")
            else:
                self.manifest = replace(new_manifest, songseek_version=__version__)
            self._tracks: dict[str, dict[str, Any]] = {}
            self._failures: dict[str, Failure] = {}
            if self.manifest.tracks_file:
                for row in read_table_mmap(self.root / self.manifest.tracks_file).to_pylist():
                    self._tracks[row["track_id"]] = row
            if self.manifest.failures_file:
                for row in read_table_mmap(self.root / self.manifest.failures_file).to_pylist():
                    self._failures[row["path"]] = Failure(**row)
            self._pending: list[tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]] = []
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
    def add_track(self, record: TrackRecord, vectors: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Queue a track with its frames: vectors float32 (T, dim) unit rows, starts/ends float (T,) seconds."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dim or len(vectors) == 0:
            raise UsageError(f"{record.path}: expected (frames, {self.manifest.dim}) vectors, got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise UsageError(f"{record.path}: vectors contain NaN or inf")
        if record.track_id in self._tracks:
            self.remove_track(record.track_id)
        row = dict(record.__dict__)
        row["added_at"] = row["added_at"] or time.time()
        row["frame_start"], row["frame_count"] = -1, len(vectors)
        self._tracks[record.track_id] = row
        self._failures.pop(record.path, None)
        self._pending.append((row, vectors, np.asarray(starts, np.float64), np.asarray(ends, np.float64)))
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
        self._failures[failure.path] = failure
        self._dirty = True

    def clear_failure(self, path: str) -> None:
        if self._failures.pop(path, None) is not None:
            self._dirty = True

    # -- durability -----------------------------------------------------------------------------
    def commit(self) -> None:
        """Write pending frames as one new shard, the tracks and failures tables, then the manifest."""
        if not self._dirty and self.manifest.tracks_file:
            return
        m = self.manifest
        gen = m.generation + 1
        shards, rows = list(m.frame_shards), list(m.shard_rows)
        new_files: list[Path] = []
        try:
            if self._pending:
                name = f"frames-{gen:06d}.arrow"
                table = self._pending_table(m.n_frame_rows)
                write_table_atomic(self.root / name, table)
                new_files.append(self.root / name)
                shards.append(name)
                rows.append(table.num_rows)
            tracks_name, failures_name = f"tracks-{gen:06d}.arrow", f"failures-{gen:06d}.arrow"
            tracks = pa.Table.from_pylist(
                sorted(self._tracks.values(), key=lambda r: r["frame_start"]), schema=TRACKS_SCHEMA)
            write_table_atomic(self.root / tracks_name, tracks)
            new_files.append(self.root / tracks_name)
            failures = pa.Table.from_pylist([f.__dict__ for f in self._failures.values()], schema=FAILURES_SCHEMA)
            write_table_atomic(self.root / failures_name, failures)
            new_files.append(self.root / failures_name)
            new = m.bumped(frame_shards=tuple(shards), shard_rows=tuple(rows), tracks_file=tracks_name,
                           failures_file=failures_name, songseek_version=__version__)
            write_manifest(self.root, new)
        except OSError as exc:
            for path in new_files:
                path.unlink(missing_ok=True)
            self._unassign_pending()
            why = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise LibraryError(
                f"could not commit to {self.root}: {why}; the library still holds its last committed "
                "state (generation {m.generation}); free space and run the same command again to resume"
            ) from exc
        self.manifest = new
        self._pending = []
        self._dirty = False
        self._remove_orphans()

    def update_index(self, factory: str | None = None, force_rebuild: bool = False) -> str:
        """Bring the FAISS index up to every committed frame: add new rows, or rebuild when due.

        Returns what happened: "unchanged", "updated" or "rebuilt". Rebuilt when there is no index,
        the factory changes (e.g. `auto` crossing to IVF), or an IVF index has grown past 4x the frames
        it was trained on.
        """
        m = self.manifest
        factory = factory or m.index_factory
        store = FrameStore(self.root, m)
        n = store.n_rows
        want = faiss_index.auto_factory(n, m.dim) if factory == "auto" else factory
        if n == 0:
            return "unchanged"
        rebuild = (force_rebuild or not m.index_file or want != m.index_description
                   or (want.startswith("IVF") and n > 4 * max(m.index_trained_on, 1)))
        if not rebuild and m.index_frames == n:
            return "unchanged"
        if rebuild:
            idx = faiss_index.build_index(want, m.dim, faiss_index.training_sample(store.shards(), want))
            start, trained_on = 0, n
        else:
            idx = faiss_index.load_index(self.root / m.index_file, use_gpu=False)
            start, trained_on = m.index_frames, m.index_trained_on
        faiss_index.add_rows(idx, store.shards(), start)
        name = f"index-{m.generation + 1:06d}.faiss"
        try:
            faiss_index.save_index(idx, self.root / name)
            new = m.bumped(index_file=name, index_description=want, index_frames=n, index_trained_on=trained_on,
                           index_factory=factory)
            write_manifest(self.root, new)
        except OSError as exc:
            (self.root / name).unlink(missing_ok=True)
            raise LibraryError(f"could not write the index of {self.root}: {exc}; searches still work "
                               "(exactly) on the frames the old index lacks; run the command again") from exc
        self.manifest = new
        self._remove_orphans()
        return "rebuilt" if rebuild else "updated"

    def close(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)
            self._lock_fd = None

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

    def _remove_orphans(self) -> None:
        """Delete files no manifest names (left by a crash, or superseded by the last commit)."""
        m = self.manifest
        keep = {MANIFEST_NAME, LOCK_NAME, *m.frame_shards, m.tracks_file, m.failures_file, m.index_file}
        for path in self.root.iterdir():
            if path.name in keep or path.is_dir():
                continue
            if path.suffix in (".arrow", ".faiss") or ".tmp-" in path.name:
                path.unlink(missing_ok=True)


def _acquire_lock(root: Path, wait: bool) -> int:
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LibraryLockedError(
            f"{root} is being written by {holder}; wait for it to finish (or pass --wait) and try again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"songseek pid {os.getpid()}".encode(), 0)
    return fd
