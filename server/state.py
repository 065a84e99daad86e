"""The open Library, swapped for a new one when `songseek index` commits a new generation.

Writers replace ``manifest.json`` atomically and keep the previous generation's files one more commit, so a
Library opened from one manifest is always a complete state. Each request takes the current snapshot once
and uses it to the end; a newer manifest is noticed by its stat and opened beside the old one, which keeps
serving until the new one is complete. The query encoder moves to the new Library, so it stays warm.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from songseek.engine.errors import SongseekError
from songseek.engine.query.filters import DEFAULT_LIMITS, FilterLimits
from songseek.engine.query.search import Library
from songseek.engine.storage.manifest import MANIFEST_NAME, Manifest, read_manifest


@dataclass(frozen=True)
class Snapshot:
    """One generation of the library as requests see it, with the lookups the routes need."""

    library: Library
    generation: int
    row_of: dict[str, int]          # track_id -> row of library.tracks
    warnings: tuple[str, ...]

    @property
    def random_weights(self) -> bool:
        return self.library.manifest.encoder.random_weights

    def column(self, name: str, row: int) -> Any:
        """One cell of the tracks table as a Python value (None when the library has no such column)."""
        if name not in self.library.tracks.column_names:
            return None
        return self.library.tracks.column(name)[row].as_py()


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def _first_key(root: Path) -> tuple[int, int, int]:
    """The manifest's stat key at startup; no library there is read_manifest's one-line error, not an OSError."""
    try:
        return _stat_key(root / MANIFEST_NAME)
    except OSError:
        read_manifest(root)  # raises LibraryError naming the folder and how to create a library
        return _stat_key(root / MANIFEST_NAME)  # it appeared meanwhile


def _identity(manifest: Manifest) -> tuple[int, float]:
    """Which state of which library a manifest describes: its generation, and when the library was created
    (a library removed and indexed again in the same folder starts its generations over, and reached the
    served one's number: the server kept the old tables and loaded the new index under them)."""
    return manifest.generation, manifest.created_at


class LibraryHolder:
    """Hands out the current Snapshot; re-opens the library when its manifest changes."""

    def __init__(self, root: Path, device: str = "auto", warm: bool = True,
                 filter_limits: FilterLimits = DEFAULT_LIMITS, persist_text_cache: bool = False) -> None:
        self.root = Path(root).expanduser()
        self._device = device
        self._filter_limits = filter_limits
        self._persist_text_cache = persist_text_cache
        self._lock = threading.Lock()
        self._key = _first_key(self.root)
        self._snap = self._open(None)
        self.last_reload_error = ""
        if warm and self._snap.library.manifest.encoder.name != "precomputed":
            _ = self._snap.library.encoder  # load the query encoder now, not on the first request

    def _open(self, previous: Library | None) -> Snapshot:
        encoder = None
        if previous is not None and previous.manifest.encoder.name != "precomputed":
            try:
                encoder = previous.encoder
            except SongseekError:  # never loaded, and cannot be: the new generation loads its own
                encoder = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                lib = Library.open(self.root, encoder=encoder, device=self._device,
                                   filter_limits=self._filter_limits, persist_text_cache=self._persist_text_cache)
            except SongseekError:
                if encoder is None:
                    raise
                # the encoder changed: load the new one
                lib = Library.open(self.root, device=self._device, filter_limits=self._filter_limits,
                                   persist_text_cache=self._persist_text_cache)
        if previous is not None and lib.manifest.encoder.name != "precomputed":
            # a new encoder is loaded now, as at start: one that cannot load (weights missing on this machine)
            # keeps the old generation serving instead of failing every query of the new one
            _ = lib.encoder
        ids = lib.tracks.column("track_id").to_pylist() if lib.tracks.num_rows else []
        return Snapshot(lib, lib.manifest.generation, {t: i for i, t in enumerate(ids)},
                        tuple(str(w.message) for w in caught))

    def current(self) -> Snapshot:
        """The newest complete generation (re-opened here when the manifest changed since the last look)."""
        try:
            key = _stat_key(self.root / MANIFEST_NAME)
        except OSError:
            return self._snap  # mid-swap or removed: keep serving the state we have
        if key == self._key:
            return self._snap
        with self._lock:
            if key != self._key:
                try:
                    if _identity(read_manifest(self.root)) != _identity(self._snap.library.manifest):
                        self._snap = self._open(self._snap.library)
                    self._key = key
                    self.last_reload_error = ""  # what /api/health reports is the state now, not a past failure
                except SongseekError as exc:
                    # A new generation that cannot be opened (yet): keep serving the complete one we have
                    # and look again on the next request.
                    self.last_reload_error = str(exc)
        return self._snap
