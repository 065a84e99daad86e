"""Find audio files under the folders a user names; never follow directory symlinks (no loops)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from songseek.engine.errors import UsageError

from .decode import AUDIO_EXTENSIONS


@dataclass(frozen=True)
class SourceFile:
    path: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class ScanResult:
    files: list[SourceFile]
    unreadable: list[tuple[Path, str]]  # paths that could not be listed or stat'ed, with the reason


def scan(sources: list[Path]) -> ScanResult:
    """All audio files (by extension) under the given folders or files, sorted by path, deduplicated."""
    found: dict[Path, SourceFile] = {}
    unreadable: list[tuple[Path, str]] = []
    for src in sources:
        src = src.expanduser().absolute()
        if not src.exists():
            raise UsageError(f"{src} does not exist: give folders or audio files to index")
        candidates: list[Path]
        if src.is_file():
            candidates = [src]
        else:
            candidates = []

            def onerror(err: OSError) -> None:
                unreadable.append((Path(err.filename or src), f"{type(err).__name__}: {err.strerror}"))

            for dirpath, _dirs, names in os.walk(src, onerror=onerror, followlinks=False):
                candidates += [Path(dirpath) / n for n in names]
        for path in candidates:
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            try:
                st = path.stat()
            except OSError as exc:
                unreadable.append((path, f"{type(exc).__name__}: {exc.strerror}"))
                continue
            if os.path.isfile(path):
                found[path] = SourceFile(path, st.st_size, st.st_mtime)
    return ScanResult(sorted(found.values(), key=lambda f: str(f.path)), unreadable)
