"""File hashes, in one place: the full SHA-256 of a file's bytes, and a quick identity of its ends.

Used for manifest checksums (verified by repair), track content hashes (incremental indexing), checkpoint
identities (encoders) and dataset fingerprints (benchmark reports)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

QUICK_HASH_BYTES = 1 << 16


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def quick_hash(path: Path) -> str:
    """A cheap identity of a file: sha256 of its size and its first and last QUICK_HASH_BYTES bytes.
    Readers check it on open (a full checksum run is `songseek repair --check`)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(str(size).encode() + b"\0" + fh.read(QUICK_HASH_BYTES))
        if size > QUICK_HASH_BYTES:
            fh.seek(max(QUICK_HASH_BYTES, size - QUICK_HASH_BYTES))
            h.update(fh.read(QUICK_HASH_BYTES))
    return h.hexdigest()[:32]
