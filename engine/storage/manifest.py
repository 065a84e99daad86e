"""The library manifest: the self-description every reader checks before it trusts a library.

A library directory holds ``manifest.json`` naming the committed files; anything not named there
(left by a crashed writer) is ignored by readers and removed by the next writer.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.errors import IncompatibleLibraryError, LibraryError
from songseek.engine.hashing import quick_hash

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
# The only names a manifest may give its files: plain names inside the library folder, by kind.
FILE_NAMES = {
    "frames": re.compile(r"frames-\d{6,12}\.arrow"),
    "tracks": re.compile(r"tracks-\d{6,12}\.arrow"),
    "failures": re.compile(r"failures-\d{6,12}\.arrow"),
    "index": re.compile(r"index-\d{6,12}\.faiss"),
    "extra": re.compile(r"extra-[a-z][a-z0-9_]{0,39}-\d{6,12}\.arrow"),
}
EXTRA_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Bounds of the numbers a manifest may hold (anything beyond is damage, not a library).
MAX_ROWS = 1 << 40
MAX_SECONDS = 86_400.0


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
    # a cheap identity of every named file (quick_hash: size + first and last 64 KiB), checked by every
    # reader on open, so a swapped or overwritten file is refused without a full checksum run
    quick_hashes: dict[str, str] = field(default_factory=dict)
    # the newest superseded tracks/failures/index file and extra table of each kind, kept until that kind
    # is replaced again: readers that opened an older manifest still find its files (and repair a fallback)
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
        """Parse and validate a manifest (types, ranges, finiteness, file names); LibraryError names the
        field of a damaged one."""
        version = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise LibraryError(f"{where}: manifest has no schema_version; if this is a songseek library, "
                               f"run `songseek repair --library {where.parent}`")
        if version > SCHEMA_VERSION:
            raise IncompatibleLibraryError(
                f"{where} uses library schema {version}, newer than this songseek's {SCHEMA_VERSION}: "
                "upgrade songseek (pip install -U songseek)"
            )
        try:
            return _parse(cls, data)
        except _Damaged as exc:
            raise LibraryError(f"{where}: damaged manifest ({exc}); "
                               f"run `songseek repair --library {where.parent}`") from None

    def bumped(self, **changes: Any) -> Manifest:
        """A copy with the next generation number and a fresh timestamp."""
        return replace(self, generation=self.generation + 1, updated_at=time.time(), **changes)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(fh)`` into a temporary name, fsync, rename over ``path``, fsync the folder; on any failure
    the temporary file is removed and ``path`` is as it was."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # O_NOFOLLOW | O_EXCL after an unlink: never write through a link planted under the temporary name
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def verify_quick_hash(root: Path, name: str, manifest: Manifest) -> None:
    """Raise LibraryError when ``name`` is not the file the manifest committed (its quick hash differs)."""
    if (root / name).is_symlink():
        raise LibraryError(f"{root / name}: a symbolic link, not a file the library wrote; "
                           f"run `songseek repair --library {root}`")
    want = manifest.quick_hashes.get(name)
    if not want:
        return  # written by a songseek without identities
    kind = "index" if name.endswith(".faiss") else "library file"
    try:
        got = quick_hash(root / name)
    except OSError as exc:
        raise LibraryError(f"{root / name}: missing or damaged {kind} ({exc.strerror}); "
                           f"run `songseek repair --library {root}`") from None
    if got != want:
        raise LibraryError(f"{root / name}: missing or damaged {kind} (not the file this library committed: its "
                           f"identity hash differs); run `songseek repair --library {root}`")


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Commit ``manifest`` (atomically); returns it with the quick hash of every file it names, computed
    for files new since the last manifest and carried over for the others."""
    names = [*manifest.files(), *manifest.previous_files]
    quick = {n: manifest.quick_hashes.get(n) or quick_hash(root / n) for n in names
             if manifest.quick_hashes.get(n) or (root / n).is_file()}
    manifest = replace(manifest, quick_hashes=quick)
    atomic_write_bytes(root / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2).encode())
    return manifest


def _only_lock_file(root: Path) -> bool:
    """Whether ``root`` is a folder holding just the writer's ``.lock`` (what an older failed run left)."""
    try:
        with os.scandir(root) as entries:
            return [e.name for e in itertools.islice(entries, 2)] == [".lock"]
    except OSError:
        return False


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    if not path.is_file():
        if root.is_file():  # `index DIR --library FILE` would be refused too: do not suggest it
            raise LibraryError(f"{root} is a file, not a library folder (--library takes the folder that "
                               "songseek index or ingest made)")
        if not root.exists() or _only_lock_file(root):  # scanned only when there is no manifest
            raise LibraryError(f"no library at {root}: create one with `songseek index DIR --library {root}`")
        if any(FILE_NAMES["tracks"].fullmatch(p.name) for p in root.iterdir()):
            # a lost manifest: repair rebuilds it from the copy in the tracks table (index refuses this folder)
            raise LibraryError(f"{root} holds library files but no {MANIFEST_NAME}; "
                               f"run `songseek repair --library {root}`")
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
    if differs and (lib.name, lib.checkpoint) == (encoder.name, encoder.checkpoint):
        # the same name or path now gives other weights (a file or directory replaced since indexing):
        # passing that same --checkpoint again, the advice below, cannot help
        raise IncompatibleLibraryError(
            f"{where} was built with another encoder: {'; '.join(differs)}. The {encoder.name} checkpoint "
            f"{lib.checkpoint} holds other weights now than when the library was built: put those weights back "
            "there, or index into a new library"
        )
    if differs:
        raise IncompatibleLibraryError(
            f"{where} was built with another encoder: {'; '.join(differs)}. "
            f"Use --encoder {lib.name} --checkpoint {lib.checkpoint} (Python: load_encoder({lib.name!r}, "
            f"{lib.checkpoint!r})) or index into a new library"
        )


class _Damaged(ValueError):
    """A manifest value of the wrong type or out of range (the message names the field)."""


def _int(data: dict[str, Any], key: str, lo: int, hi: int, default: int | None = 0) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _Damaged(f"{key} must be an integer from {lo} to {hi}, not {_show(value)}")
    return value


def _float(data: dict[str, Any], key: str, lo: float, hi: float, default: float | None = None,
           open_lo: bool = False) -> float:
    value = data.get(key, default)
    if (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (lo < value if open_lo else lo <= value) and value <= hi):
        return float(value)
    span = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]"
    raise _Damaged(f"{key} must be a finite number in {span}, not {_show(value)}")


def _str(data: dict[str, Any], key: str, default: str = "", max_len: int = 4096) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise _Damaged(f"{key} must be text of at most {max_len} characters, not {_show(value)}")
    return value


def _name(value: Any, key: str, kinds: tuple[str, ...], empty_ok: bool = False) -> str:
    """A file name the manifest gives: a plain name of one of ``kinds`` inside the library folder."""
    if empty_ok and value == "":
        return ""
    if not isinstance(value, str) or not any(FILE_NAMES[k].fullmatch(value) for k in kinds):
        raise _Damaged(f"{key} must be a plain {'/'.join(kinds)} file name inside the library folder, "
                       f"not {_show(value)}")
    return value


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list) or len(value) > 1_000_000:
        raise _Damaged(f"{key} must be a list, not {_show(value)}")
    return value


def _dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _Damaged(f"{key} must be an object, not {_show(value)}")
    return value


def _hashes(data: dict[str, Any], key: str, digits: int, what: str) -> dict[str, str]:
    """A {file name: lowercase hex hash of ``digits`` digits} field."""
    out = {}
    for k, v in _dict(data, key).items():
        _name(k, f"{key} key", tuple(FILE_NAMES))
        if not isinstance(v, str) or not re.fullmatch(f"[0-9a-f]{{{digits}}}", v):
            raise _Damaged(f"{key}[{k}] must be {what}, not {_show(v)}")
        out[k] = v
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _encoder(data: Any) -> EncoderInfo:
    if not isinstance(data, dict):
        raise _Damaged(f"encoder must be an object, not {_show(data)}")
    name = _str(data, "name", default=None, max_len=100)  # type: ignore[arg-type]
    if not name:
        raise _Damaged("encoder.name must be a non-empty name")
    random_weights = data.get("random_weights", False)
    if not isinstance(random_weights, bool):
        raise _Damaged(f"encoder.random_weights must be true or false, not {_show(random_weights)}")
    try:
        return EncoderInfo(name=name, checkpoint=_str(data, "checkpoint"), dim=_int(data, "dim", 1, 65_536, None),
                           sample_rate=_int(data, "sample_rate", 0, 1_000_000, None),
                           checkpoint_sha256=_str(data, "checkpoint_sha256", max_len=128),
                           random_weights=random_weights,
                           native_window_s=_float(data, "native_window_s", 0.0, MAX_SECONDS, 0.0),
                           text_max_tokens=_int(data, "text_max_tokens", 0, 1_000_000))
    except _Damaged as exc:
        raise _Damaged(f"encoder.{exc}") from None


def _parse(cls: type[Manifest], data: dict[str, Any]) -> Manifest:
    """Every field checked for type and range; file names checked against FILE_NAMES."""
    shards = tuple(_name(v, "frame_shards[]", ("frames",)) for v in _list(data, "frame_shards"))
    rows_in = _list(data, "shard_rows")
    rows = tuple(_int({"shard_rows[]": v}, "shard_rows[]", 0, MAX_ROWS) for v in rows_in)
    if len(shards) != len(rows):
        raise _Damaged(f"frame_shards names {len(shards)} shards but shard_rows gives {len(rows)} row counts")
    if len(set(shards)) != len(shards):
        raise _Damaged("frame_shards names a shard twice")
    n_rows = sum(rows)
    if n_rows > MAX_ROWS:
        raise _Damaged(f"shard_rows add up to {n_rows} frames, more than {MAX_ROWS}")
    extra_in = _dict(data, "extra_tables")
    extra = {}
    for k, v in extra_in.items():
        if not EXTRA_TABLE_NAME.fullmatch(k) or k in ("tracks", "frames", "failures", "manifest", "index"):
            raise _Damaged(f"extra_tables has a bad table name {_show(k)}")
        extra[k] = _name(v, f"extra_tables[{k}]", ("extra",))
    sums = _hashes(data, "checksums", 64, "a hex sha256")
    quick = _hashes(data, "quick_hashes", 32, "a 32-digit hex hash")
    action = _str(data, "index_last_action")
    if action not in ("", "rebuilt", "updated"):
        raise _Damaged(f"index_last_action must be rebuilt or updated, not {_show(action)}")
    metric = _str(data, "metric", "inner_product")
    if metric != "inner_product":
        raise _Damaged(f"metric must be inner_product, not {_show(metric)}")
    tracks_file = _name(data.get("tracks_file", ""), "tracks_file", ("tracks",), empty_ok=True)
    if shards and not tracks_file:
        raise _Damaged("frame_shards are named but tracks_file is empty")
    index_file = _name(data.get("index_file", ""), "index_file", ("index",), empty_ok=True)
    index_frames = _int(data, "index_frames", 0, n_rows)
    if index_file and index_frames == 0 and n_rows:
        raise _Damaged("index_file is named but index_frames is 0")
    return cls(
        encoder=_encoder(data.get("encoder")),
        window_s=_float(data, "window_s", 0.0, MAX_SECONDS, open_lo=True),
        hop_s=_float(data, "hop_s", 0.0, MAX_SECONDS, open_lo=True),
        schema_version=_int(data, "schema_version", 0, SCHEMA_VERSION),
        songseek_version=_str(data, "songseek_version", max_len=100),
        metric=metric,
        index_factory=_str(data, "index_factory", "auto", max_len=200),
        generation=_int(data, "generation", 0, 10**12),
        frame_shards=shards,
        shard_rows=rows,
        tracks_file=tracks_file,
        failures_file=_name(data.get("failures_file", ""), "failures_file", ("failures",), empty_ok=True),
        index_file=index_file,
        index_description=_str(data, "index_description", max_len=200),
        index_frames=index_frames,
        index_trained_on=_int(data, "index_trained_on", 0, MAX_ROWS),
        index_last_action=action,
        index_nprobe=_int(data, "index_nprobe", 0, 1 << 20),
        rerank=dict(_dict(data, "rerank")),  # checked where it is used (fusion.RerankSettings.from_json)
        checksums=sums,
        quick_hashes=quick,
        previous_files=tuple(_name(v, "previous_files[]", ("tracks", "failures", "index", "extra"))
                             for v in _list(data, "previous_files")),
        extra_tables=extra,
        created_at=_float(data, "created_at", -1e12, 1e12, 0.0),
        updated_at=_float(data, "updated_at", -1e12, 1e12, 0.0),
    )
