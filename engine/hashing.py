"""The one file hash: hex SHA-256 of a file's bytes, read in 1 MiB chunks.

Used for manifest checksums (verified by repair), track content hashes (incremental indexing), checkpoint
identities (encoders) and dataset fingerprints (benchmark reports)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
