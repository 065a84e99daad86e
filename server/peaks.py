"""Waveform peaks of library tracks, computed on the server (stream-decoded, engine/audio/peaks.py) and
kept in a bounded cache keyed by generation, track, file identity and bin count."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from songseek.engine.audio.decode import probe
from songseek.engine.audio.peaks import file_peaks
from songseek.engine.errors import DecodeError, UsageError
from songseek.server.errors import NotFound, TooLarge
from songseek.server.state import Snapshot

CACHE_ENTRIES = 256  # at most 2 x 4,000 floats + edges each: a few MiB in all

Key = tuple[int, str, int, int, int]


class PeaksCache:
    """``get`` answers from the cache or decodes the file once; one decode per key at a time."""

    def __init__(self, max_s: float, entries: int = CACHE_ENTRIES) -> None:
        self.max_s = max_s
        self._entries = entries
        self._lock = threading.Lock()
        self._done: OrderedDict[Key, dict[str, object]] = OrderedDict()
        self._busy: dict[Key, threading.Lock] = {}

    def get(self, snap: Snapshot, track_id: str, n: int) -> dict[str, object]:
        row = snap.row_of.get(track_id)
        if row is None:
            raise NotFound(f"no track {track_id!r} in this library")
        path = Path(str(snap.column("path", row)))
        try:
            st = path.stat()
        except OSError:
            raise NotFound(f"the file of track {track_id!r} is gone from disk ({path.name}); "
                           "re-run `songseek index` to update the library") from None
        key = (snap.generation, track_id, n, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:  # a second request for the same peaks waits for the first decode instead of repeating it
            try:
                with self._lock:
                    if key in self._done:
                        return self._done[key]
                out = {"track_id": track_id, "generation": snap.generation, **self._compute(path, n)}
                with self._lock:
                    self._done[key] = out
                    while len(self._done) > self._entries:
                        self._done.popitem(last=False)
            finally:
                with self._lock:
                    self._busy.pop(key, None)
        return out

    def _compute(self, path: Path, n: int) -> dict[str, object]:
        try:
            declared = probe(path).duration_s
            if declared > self.max_s:
                raise TooLarge(f"the track is {declared:,.0f} s long; this server draws waveforms of tracks up "
                               f"to {self.max_s:,.0f} s")
            p = file_peaks(path, n, self.max_s)
        except DecodeError as exc:  # the engine names the file by its full path: the client gets its name
            raise NotFound("the file of this track cannot be decoded now: "
                           f"{str(exc).replace(str(path), path.name)}") from None
        except UsageError as exc:  # the decoded audio ran past the bound its header promised to stay under
            raise TooLarge(f"the track decodes to more than {self.max_s:,.0f} s; no waveform ({exc})") from None
        rate = float(p.sample_rate)
        return {"bins": p.bins, "sample_rate": p.sample_rate, "duration_s": p.samples / rate,
                "mins": p.mins.tolist(), "maxs": p.maxs.tolist(), "edges_s": (p.edges / rate).tolist()}
