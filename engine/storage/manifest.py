"""The library manifest: the self-description every reader checks before it trusts a library.

A library directory holds ``manifest.json`` naming the committed files; anything not named there
(left by a crashed writer) is ignored by readers and removed by the next writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.errors import IncompatibleLibraryError, LibraryError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs to trust (or refuse) a library. Frozen; writers use ``replace``."""

    encoder: EncoderInfo
    window_s: float
    hop_s: float
    schema_version: int = SCHEMA_VERSION
    songseek_version: str = ""
    metric: str = "inner_product"
    index_factory: str = "auto"      # what the user asked for; "auto" picks by size (see index.py)
    generation: int = 0              # bumped by every commit
    frame_shards: tuple[str, ...] = ()
    shard_rows: tuple[int, ...] = ()
    tracks_file: str = ""
    failures_file: str = ""
    index_file: str = ""
    index_description: str = ""      # the factory string actually built, e.g. "Flat" or "IVF1024,SQfp16"
    index_frames: int = 0            # frames [0, index_frames) are in the index; the rest: exact search
    index_trained_on: int = 0        # frames in the library when the index was (re)trained
    index_last_action: str = ""      # what the last index update did: "rebuilt" or "updated" (rows added)
    index_nprobe: int = 0            # IVF lists a query probes by default; 0 = index.default_nprobe's rule
    # the rerank searches use by default ({"rerank": mode, "params": {...}}, engine/query/fusion.py
    # RerankSettings; `songseek bench rerank --save`); empty = the built-in default
    rerank: dict[str, Any] = field(default_factory=dict)
    # sha256 of every file this manifest names (and of the kept previous-generation files), by name
    checksums: dict[str, str] = field(default_factory=dict)
    # the previous generation's tracks/failures/index files, kept one more commit for readers that
    # opened the previous manifest and as a fallback for `songseek repair`
    previous_files: tuple[str, ...] = ()
    # extra tables keyed by track_id (tags, mos, ...): name -> file, written by LibraryWriter.put_table
    extra_tables: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def n_frame_rows(self) -> int:
        return sum(self.shard_rows)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["frame_shards"] = list(self.frame_shards)
        data["shard_rows"] = list(self.shard_rows)
        data["previous_files"] = list(self.previous_files)
        return data

    def files(self) -> list[str]:
        """Every file this generation needs (shards, tracks, failures, index, extra tables), in that order."""
        return [n for n in (*self.frame_shards, self.tracks_file, self.failures_file, self.index_file,
                            *(self.extra_tables[k] for k in sorted(self.extra_tables))) if n]

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Manifest:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(version, int):
            raise LibraryError(f"{where}: manifest has no schema_version; is this a songseek library?")
        if version > SCHEMA_VERSION:
            raise IncompatibleLibraryError(
                f"{where} uses library schema {version}, newer than this songseek's {SCHEMA_VERSION}: "
                "upgrade songseek (pip install -U songseek)"
            )
        try:
            data = dict(data)
            enc = EncoderInfo(**data.pop("encoder"))
            data["frame_shards"] = tuple(str(x) for x in data.get("frame_shards", ()))
            data["shard_rows"] = tuple(int(x) for x in data.get("shard_rows", ()))
            data["previous_files"] = tuple(str(x) for x in data.get("previous_files", ()))
            data["checksums"] = {str(k): str(v) for k, v in dict(data.get("checksums", {})).items()}
            data["extra_tables"] = {str(k): str(v) for k, v in dict(data.get("extra_tables", {})).items()}
            data["index_nprobe"] = max(0, int(data.get("index_nprobe", 0)))
            data["rerank"] = dict(data.get("rerank", {}))
            known = {f for f in cls.__dataclass_fields__}
            m = cls(encoder=enc, **{k: v for k, v in data.items() if k in known})
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise LibraryError(f"{where}: damaged manifest ({exc}); "
                               f"run `songseek repair --library {where.parent}`") from exc
        if (len(m.frame_shards) != len(m.shard_rows) or not isinstance(m.encoder.dim, int)
                or m.encoder.dim <= 0):
            raise LibraryError(f"{where}: damaged manifest (shard list or dimension is inconsistent); "
                               f"run `songseek repair --library {where.parent}`")
        return m

    def bumped(self, **changes: Any) -> Manifest:
        """A copy with the next generation number and a fresh timestamp."""
        return replace(self, generation=self.generation + 1, updated_at=time.time(), **changes)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (the checksums the manifest records and `songseek repair` verifies)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename over ``path``, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_manifest(root: Path, manifest: Manifest) -> None:
    atomic_write_bytes(root / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2).encode())


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    if not root.exists():
        raise LibraryError(f"no library at {root}: create one with `songseek index DIR --library {root}`")
    if not path.is_file():
        raise LibraryError(f"{root} is not a songseek library (no {MANIFEST_NAME}); "
                           f"create one with `songseek index DIR --library {root}`")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise LibraryError(f"{path}: unreadable manifest ({exc}); "
                           f"run `songseek repair --library {root}`") from exc
    return Manifest.from_json(data, path)


def check_compatible(manifest: Manifest, encoder: EncoderInfo, where: Path) -> None:
    """Refuse an encoder that would put vectors in another space than the library's."""
    lib = manifest.encoder
    if lib.name == "precomputed":
        if encoder.dim != lib.dim:
            raise IncompatibleLibraryError(
                f"{where} holds {lib.dim}-d precomputed vectors; "
                f"encoder {encoder.name} makes {encoder.dim}-d ones")
        return
    differs = [
        f"{label} {a!r} (library) vs {b!r} (now)"
        for label, a, b in (
            ("encoder", lib.name, encoder.name),
            ("checkpoint", lib.checkpoint, encoder.checkpoint),
            ("checkpoint sha256", lib.checkpoint_sha256, encoder.checkpoint_sha256),
            ("dim", lib.dim, encoder.dim),
            ("sample rate", lib.sample_rate, encoder.sample_rate),
        )
        if a != b
    ]
    if differs:
        raise IncompatibleLibraryError(
            f"{where} was built with another encoder: {'; '.join(differs)}. "
            f"Use --encoder {lib.name} --checkpoint {lib.checkpoint} or index into a new library"
        )
