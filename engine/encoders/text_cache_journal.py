"""The append-only journal of a persisted text cache: the vectors a process added since the last full save.

Rewriting the whole ``.npz`` for every new query text made a new query cost a full write of the cache (77 ms at
20,000 vectors, each call), so a loop of searches grew quadratically. New vectors are appended here instead, one
self-checking record each; ``text_cache.CachedTextEncoder`` folds the journal into the ``.npz`` once it holds more
rows than the ``.npz`` (so the writes stay linear in the vectors added).

A record: magic, 8 bytes of the encoder key's SHA-256, text length, dimension, CRC-32 of all that follows the
magic; then the UTF-8 text and the float32 little-endian vector. Reading stops at the first record that does not
check out: a torn tail (a process killed mid-write) or two processes' writes interleaved cost only the records
from there on. The cache only saves work, so nothing is ever refused here.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

MAGIC = b"SSTJ"
_HEAD = struct.Struct("<4s8sIII")  # magic, key digest, text bytes, dim, crc32
_MAX_TEXT_BYTES = 1 << 20  # a longer length field is damage, not a query
_MAX_DIM = 1 << 16


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()[:8]


def _crc(digest: bytes, text: bytes, dim: int, vector: bytes) -> int:
    return zlib.crc32(vector, zlib.crc32(text, zlib.crc32(digest + struct.pack("<II", len(text), dim))))


def encode(key: str, texts: list[str], vectors: np.ndarray) -> bytes:
    """The records of ``texts`` and their float32 (n, dim) ``vectors``, in order."""
    digest = key_digest(key)
    vecs = np.ascontiguousarray(vectors, dtype="<f4")
    parts = []
    for text, row in zip(texts, vecs, strict=True):
        tb, vb = text.encode("utf-8"), row.tobytes()
        parts.append(_HEAD.pack(MAGIC, digest, len(tb), len(row), _crc(digest, tb, len(row), vb)) + tb + vb)
    return b"".join(parts)


def append(path: Path, key: str, texts: list[str], vectors: np.ndarray) -> None:
    """Append the records to ``path`` (created if absent) with one O_APPEND write, so concurrent writers'
    records do not overwrite each other (an interleaving is caught by the CRC when read)."""
    data = memoryview(encode(key, texts, vectors))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def read(path: Path, key: str) -> tuple[list[str], np.ndarray, bool]:
    """(texts, float32 (n, dim), intact) of ``key``'s records in ``path``, up to the first damaged one;
    ``intact`` is False when one stopped the reading (records appended after it would never be read, so
    the caller should rewrite). Missing or unreadable: nothing, intact. Records of another key (a hash
    collision of the file name) are skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return [], np.zeros((0, 0), np.float32), True
    digest = key_digest(key)
    texts: list[str] = []
    rows: list[np.ndarray] = []
    at = 0
    while at + _HEAD.size <= len(data):
        magic, got_digest, n_text, dim, crc = _HEAD.unpack_from(data, at)
        end = at + _HEAD.size + n_text + 4 * dim
        if magic != MAGIC or n_text > _MAX_TEXT_BYTES or not 0 < dim <= _MAX_DIM or end > len(data):
            break
        tb = data[at + _HEAD.size: at + _HEAD.size + n_text]
        vb = data[end - 4 * dim: end]
        if _crc(got_digest, tb, dim, vb) != crc:
            break
        try:
            text = tb.decode("utf-8")
        except UnicodeDecodeError:
            break
        if got_digest == digest:
            if rows and dim != len(rows[0]):
                break
            row = np.frombuffer(vb, dtype="<f4").astype(np.float32)
            if np.isfinite(row).all():
                texts.append(text)
                rows.append(row)
        at = end
    intact = at == len(data)
    if not rows:
        return [], np.zeros((0, 0), np.float32), intact
    return texts, np.stack(rows), intact
