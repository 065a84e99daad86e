"""Arrow tables on disk: frame shards (one row per window), the tracks table and the failures table.

Frame shards are immutable once committed; a track's frames are contiguous in one shard, so the
tracks table can point at them with (frame_start, frame_count) in global frame-row numbers. Shards are
read memory-mapped: vectors are numpy views into the page cache, never a copy of the whole table.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from songseek.engine.errors import LibraryError
from songseek.engine.hashing import file_sha256
from songseek.engine.storage.manifest import Manifest, fsync_dir, verify_quick_hash

TRACK_FIELDS = [
    pa.field("track_id", pa.string(), nullable=False),
    pa.field("path", pa.string()),
    pa.field("content_hash", pa.string()),
    pa.field("size", pa.int64()),
    pa.field("mtime", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("title", pa.string()),
    pa.field("artist", pa.string()),
    pa.field("album", pa.string()),
    pa.field("genre", pa.string()),
    pa.field("year", pa.int32()),
    pa.field("frame_start", pa.int64(), nullable=False),
    pa.field("frame_count", pa.int32(), nullable=False),
    pa.field("added_at", pa.float64()),
]
TRACKS_SCHEMA = pa.schema(TRACK_FIELDS)

FAILURES_SCHEMA = pa.schema([
    pa.field("path", pa.string()),
    pa.field("error_class", pa.string()),
    pa.field("message", pa.string()),
    pa.field("time", pa.float64()),
    pa.field("size", pa.int64()),
    pa.field("mtime", pa.float64()),
])


def frames_schema(dim: int, manifest: Manifest | None = None) -> pa.Schema:
    """One row per window; the manifest's key facts ride along in the schema metadata."""
    fields = [
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ]
    meta = {}
    if manifest is not None:
        meta = {
            "songseek.encoder": manifest.encoder.name,
            "songseek.checkpoint": manifest.encoder.checkpoint,
            "songseek.dim": str(dim),
            "songseek.window_s": str(manifest.window_s),
            "songseek.hop_s": str(manifest.hop_s),
            "songseek.schema_version": str(manifest.schema_version),
        }
    return pa.schema(fields, metadata=meta)


@dataclass(frozen=True)
class TrackRecord:
    """One row of the tracks table, before its frames are placed (frame_start/count come from the writer)."""

    track_id: str
    path: str
    content_hash: str = ""
    size: int = 0
    mtime: float = 0.0
    duration_s: float = 0.0
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    year: int | None = None
    added_at: float = 0.0


@dataclass(frozen=True)
class Failure:
    """A file that could not be indexed, kept so `songseek failures` can show it and reruns can skip it."""

    path: str
    error_class: str
    message: str
    time: float
    size: int = -1
    mtime: float = -1.0


def write_table_atomic(path: Path, table: pa.Table) -> str:
    """Arrow IPC file as one record batch, written under a temporary name, fsynced, then renamed.

    Returns the file's hex SHA-256 (read back from the temporary file before the rename). On any error
    the temporary file is removed and ``path`` is untouched.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # never write through a link planted under the temporary name
    table = table.combine_chunks()
    try:
        with pa.OSFile(str(tmp), "wb") as sink:
            with ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=max(table.num_rows, 1))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return digest


def read_table_mmap(path: Path) -> pa.Table:
    """Memory-map an Arrow IPC file; raises LibraryError naming the file when it is missing or damaged."""
    try:
        source = pa.memory_map(str(path), "r")
        return ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise LibraryError(
            f"{path}: missing or damaged library file ({exc}); run `songseek repair --library {path.parent}`"
        ) from exc


def read_library_table(root: Path, name: str, manifest: Manifest) -> pa.Table:
    """A committed table of the library, after checking it is the file the manifest committed (quick hash)."""
    verify_quick_hash(root, name, manifest)
    return read_table_mmap(root / name)


def read_failures(root: Path, manifest: Manifest) -> pa.Table:
    """The committed failures table (empty when there is none), identity-checked like every library file:
    a swapped-in table that Arrow reads fine would otherwise list failures this library never recorded."""
    if not manifest.failures_file:
        return FAILURES_SCHEMA.empty_table()
    return read_library_table(root, manifest.failures_file, manifest)


def vectors_view(table: pa.Table, dim: int) -> np.ndarray:
    """Zero-copy float32 (rows, dim) view of a shard's vector column."""
    col = table.column("vector")
    if not pa.types.is_fixed_size_list(col.type) or col.type.list_size != dim:
        raise ValueError(f"vector column is {col.type}, expected fixed_size_list<float>[{dim}]")
    if col.num_chunks != 1:
        col = pa.chunked_array([pa.concat_arrays(col.chunks)])
    flat = col.chunk(0).values
    arr = flat.to_numpy(zero_copy_only=True)
    return arr.reshape(-1, dim)


def tracks_table_from_records(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TRACKS_SCHEMA)


def failures_table(failures: list[Failure]) -> pa.Table:
    return pa.Table.from_pylist([f.__dict__ for f in failures], schema=FAILURES_SCHEMA)


class FrameStore:
    """Read side of the committed frame shards: global frame rows → vectors, times, owning track."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.dim = manifest.dim
        self._vectors: list[np.ndarray] = []
        starts, ends = [], []
        offsets = [0]
        for name, rows in zip(manifest.frame_shards, manifest.shard_rows, strict=True):
            table = read_library_table(root, name, manifest)
            if table.num_rows != rows:
                raise LibraryError(f"{root / name}: has {table.num_rows} rows, manifest says {rows}; "
                                   f"run `songseek repair --library {root}`")
            try:
                self._vectors.append(vectors_view(table, self.dim))
                starts.append(table.column("start_s").to_numpy())
                ends.append(table.column("end_s").to_numpy())
            except (KeyError, ValueError, pa.ArrowInvalid) as exc:
                raise LibraryError(f"{root / name}: not a frame shard of this {self.dim}-d library ({exc}); "
                                   f"run `songseek repair --library {root}`") from exc
            offsets.append(offsets[-1] + rows)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.start_s = np.concatenate(starts) if starts else np.zeros(0)
        self.end_s = np.concatenate(ends) if ends else np.zeros(0)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def shards(self) -> list[np.ndarray]:
        """Per-shard float32 (rows, dim) views, in global row order."""
        return list(self._vectors)

    def vectors(self, start: int, count: int) -> np.ndarray:
        """float32 (count, dim) view of rows [start, start+count); the range lies inside one shard (a
        track's frames always do; ``rows`` reads across shards). Any other range is a ValueError, not a
        short array."""
        if count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        shard = int(np.searchsorted(self.offsets, start, side="right") - 1)
        local = start - int(self.offsets[shard]) if 0 <= shard < len(self._vectors) else -1
        if local < 0 or count < 0 or local + count > len(self._vectors[shard]):
            raise ValueError(f"frame rows [{start}, {start + count}) are not inside one shard "
                             f"(shard starts: {self.offsets.tolist()})")
        return self._vectors[shard][local:local + count]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop-start, dim) rows that may span shards (copies only when they do)."""
        parts = []
        for s, vecs in enumerate(self._vectors):
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                parts.append(vecs[a - lo:b - lo])
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class ShardVectors:
    """Where one shard's float32 vectors lie in its file: ``rows`` × ``dim`` from byte ``offset`` on."""

    path: Path
    offset: int
    rows: int
    dim: int


def locate_vectors(path: Path, dim: int, rows: int | None = None) -> ShardVectors:
    """Find the vector column's bytes inside a committed shard (one record batch, so one contiguous run).

    The offset is the mapped address of the column minus the map's base address; the map is dropped on
    return, so no page of the shard stays counted in this process's memory.
    """
    try:
        source = pa.memory_map(str(path), "r")
        base = source.read_buffer(1).address  # zero-copy on a memory map: the map's first byte
        source.seek(0)
        vecs = vectors_view(ipc.open_file(source).read_all(), dim)
        offset, n = int(vecs.__array_interface__["data"][0]) - base, len(vecs)
        del vecs
        source.close()
    except (OSError, ValueError, KeyError, pa.ArrowInvalid) as exc:
        raise LibraryError(f"{path}: missing or damaged frame shard ({exc}); "
                           f"run `songseek repair --library {path.parent}`") from exc
    if rows is not None and n != rows:
        raise LibraryError(f"{path}: has {n} rows, manifest says {rows}; run `songseek repair --library {path.parent}`")
    return ShardVectors(Path(path), offset, n, dim)


class VectorReader:
    """Reads committed frame vectors in bounded batches with ``pread`` into a buffer this reader owns.

    Unlike the memory-mapped FrameStore, pages read here live in the kernel's page cache, not in this
    process's resident set, so building an index over 100M frames needs only one batch of them in RAM.
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.dim = manifest.dim
        for name in manifest.frame_shards:
            # the identity check readers make: an index is never built from a damaged or swapped shard
            verify_quick_hash(Path(root), name, manifest)
        self.shards = [locate_vectors(Path(root) / name, self.dim, rows)
                       for name, rows in zip(manifest.frame_shards, manifest.shard_rows, strict=True)]
        self.offsets = np.cumsum([0] + [s.rows for s in self.shards]).astype(np.int64)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def batches(self, start: int = 0, stop: int | None = None, batch: int = 32_768) -> Iterator[np.ndarray]:
        """float32 (≤ batch, dim) arrays covering global rows [start, stop) in order; each array is reused
        by the next step (copy it to keep it)."""
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        buf = np.empty((batch, self.dim), dtype=np.float32)
        row_bytes = self.dim * 4
        for s, shard in enumerate(self.shards):
            lo, hi = max(start, int(self.offsets[s])), min(stop, int(self.offsets[s + 1]))
            if lo >= hi:
                continue
            with open(shard.path, "rb", buffering=0) as fh:
                for a in range(lo, hi, batch):
                    n = min(batch, hi - a)
                    fh.seek(shard.offset + (a - int(self.offsets[s])) * row_bytes)
                    _read_exact(fh, buf[:n].data.cast("B"), shard.path)
                    yield buf[:n]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), dim) copy of the given sorted global rows (a training sample, say)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        owner = np.searchsorted(self.offsets, rows, side="right") - 1
        row_bytes = self.dim * 4
        for s in np.unique(owner):
            shard = self.shards[int(s)]
            idx = np.flatnonzero(owner == s)
            with open(shard.path, "rb", buffering=0) as fh:
                for i in idx:
                    fh.seek(shard.offset + (int(rows[i]) - int(self.offsets[s])) * row_bytes)
                    _read_exact(fh, out[i].data.cast("B"), shard.path)
        return out


def _read_exact(fh: io.FileIO, view: memoryview, path: Path) -> None:
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise LibraryError(f"{path}: shorter than its manifest says; run `songseek repair --library {path.parent}`")
        got += n
