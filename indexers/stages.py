"""The indexing job as three stages that any executor can drive: decode → embed → commit.

- :class:`FileJob` is one file to embed, as the classifier decided it; it carries the track-id rule.
- :func:`decode_job` streams a file's windows (decode + window, CPU work; checks the file did not change).
- :func:`embed_windows` turns a batch of windows into vectors (the model; timed for the report).
- :class:`CommitStage` is the one writer's side: it collects each file's vectors (in any order), adds
  finished files to the library in job order (so the layout never depends on timing) and commits in batches.

The threaded pipeline (pipeline.py) and the Ray runner (ray_runner.py) are two drivers of these stages.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from songseek.engine.audio import decode_stream, iter_windows
from songseek.engine.encoders import Encoder
from songseek.engine.errors import SongseekError
from songseek.engine.progress import Progress
from songseek.engine.storage.store import Failure, TrackRecord
from songseek.engine.storage.writer import LibraryWriter

from .sources import SourceFile
from .tags import Tags, read_tags

JobKind = Literal["added", "changed"]
Window = tuple[np.ndarray, float, float]  # samples, start_s, end_s


@dataclass
class IndexReport:
    """What one `songseek index` run did (counts of files), plus throughput."""

    added: int = 0
    changed: int = 0
    moved: int = 0
    removed: int = 0
    removed_failed: int = 0  # of ``removed``: tracks whose file changed and then failed to index
    unchanged: int = 0
    failed: int = 0
    skipped_failed: int = 0
    windows: int = 0
    audio_s: float = 0.0
    seconds: float = 0.0
    model_seconds: float = 0.0
    index_action: str = "unchanged"
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things the user should know (e.g. a prune skipped)

    def summary(self) -> str:
        return (f"added {self.added}, changed {self.changed}, moved {self.moved}, removed {self.removed}"
                + (f" ({self.removed_failed} whose file changed and now fails)" if self.removed_failed else "")
                + f", unchanged {self.unchanged}, failed {self.failed}"
                + (f" (+{self.skipped_failed} known failures skipped)" if self.skipped_failed else "")
                + f"; {self.windows} windows, {self.audio_s / 3600:.2f} h audio in {self.seconds:.1f} s; "
                f"index {self.index_action}")


def track_id_for(digest: str, path: str, tracks: Mapping[str, Mapping[str, Any]]) -> str:
    """The track-id rule: the first 16 hex digits of the content hash, unless a track at another path
    already holds that id (the same content at two live paths): then a suffix from the path keeps both."""
    tid = digest[:16]
    if tid in tracks and tracks[tid]["path"] != path:
        tid = f"{tid}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"
    return tid


@dataclass(frozen=True)
class FileJob:
    """One file to embed: where it is (size and mtime as scanned), its content hash, and why."""

    source: SourceFile
    digest: str
    kind: JobKind

    @property
    def path(self) -> str:
        return str(self.source.path)

    def track_id(self, tracks: Mapping[str, Mapping[str, Any]]) -> str:
        return track_id_for(self.digest, self.path, tracks)


class FileChangedError(SongseekError):
    """A file changed (size or modification time) while it was being read."""


def check_unchanged(path: Path, size: int, mtime: float) -> None:
    """Raise :class:`FileChangedError` when ``path`` no longer has the size and mtime it was scanned with."""
    try:
        st = path.stat()
    except OSError as exc:
        raise FileChangedError(f"{path}: vanished while being read ({exc.strerror})") from None
    if st.st_size != size or st.st_mtime != mtime:
        raise FileChangedError(f"{path}: changed while being read; it is indexed on the next run")


def decode_windows(f: SourceFile, sample_rate: int, window_s: float, hop_s: float
                   ) -> Generator[Window, None, float]:
    """(samples, start_s, end_s) of each window of ``f``, streamed (a long file never sits in memory);
    returns the audio's length in seconds (a tail too short to index ends past the last window)."""
    return (yield from iter_windows(decode_stream(f.path, sample_rate), sample_rate, window_s, hop_s))


class WindowStream:
    """Iterate ``windows``, then read ``length_s``: what the generator returned (the audio's length in
    seconds), or None for a source that does not say (a plain iterator)."""

    def __init__(self, windows: Iterable[Window]) -> None:
        self._windows = windows
        self.length_s: float | None = None

    def __iter__(self) -> Iterator[Window]:
        # a generator returns its value through ``yield from``; a plain iterator gives None
        self.length_s = yield from cast(Generator[Window, None, "float | None"], iter(self._windows))


def checked_windows(f: SourceFile, windows: Iterable[Window]) -> Generator[Window, None, float | None]:
    """Pass ``windows`` through; then fail a file that gave none, or that changed while it was read.
    Returns the audio's length in seconds where ``windows`` says it (see :class:`WindowStream`)."""
    stream = WindowStream(windows)
    n = 0
    for item in stream:
        n += 1
        yield item
    if n == 0:
        raise SongseekError(f"{f.path}: no audio samples decoded")
    check_unchanged(f.path, f.size, f.mtime)
    return stream.length_s


def failure_message(path: str, exc: BaseException) -> str:
    """One line that names the file (once)."""
    return str(exc) if path in str(exc) else f"{path}: {exc}"


def embed_windows(encoder: Encoder, windows: np.ndarray) -> tuple[np.ndarray, float]:
    """Vectors (n, dim) float32 for windows (n, samples), and the seconds the model took."""
    t = time.perf_counter()
    out = np.asarray(encoder.embed_audio(windows), dtype=np.float32)
    return out, time.perf_counter() - t


class CommitStage:
    """The one writer: gathers windows (times and vectors) per job, adds finished files in job order,
    records failures and commits every ``commit_every_files`` files or ``commit_every_s`` seconds."""

    def __init__(self, writer: LibraryWriter, jobs: list[FileJob], report: IndexReport, progress: Progress,
                 commit_every_files: int, commit_every_s: float) -> None:
        self.writer, self.jobs, self.report, self.progress = writer, jobs, report, progress
        self.commit_every_files, self.commit_every_s = commit_every_files, commit_every_s
        self.next_job = 0                 # every job before this one is in the library or failed
        self._windows: dict[int, dict[int, tuple[float, float, np.ndarray | None]]] = {}
        self._totals: dict[int, int] = {}  # job -> window count, once its decoder has finished
        self._lengths: dict[int, float] = {}  # job -> seconds of audio decoded, where its decoder said
        self._embedded: dict[int, int] = {}  # job -> windows that have their vector
        self._failed: set[int] = set()
        self._last_commit, self._since_commit = time.monotonic(), 0

    def window(self, i: int, n: int, start_s: float, end_s: float) -> None:
        """Window ``n`` of job ``i`` was decoded (its vector comes later through :meth:`vector`)."""
        if i not in self._failed:  # a window seen twice (a retried Ray task) keeps its first entry
            self._windows.setdefault(i, {}).setdefault(n, (start_s, end_s, None))

    def vector(self, i: int, n: int, vec: np.ndarray) -> None:
        if i not in self._failed:
            s, e, old = self._windows[i][n]
            self._windows[i][n] = (s, e, vec)
            self._embedded[i] = self._embedded.get(i, 0) + (old is None)

    def decoded(self, i: int, n_windows: int, length_s: float | None = None) -> None:
        """Job ``i``'s decoder finished with ``n_windows`` windows, from ``length_s`` seconds of audio."""
        if i not in self._failed:
            self._totals[i] = n_windows
            if length_s:
                self._lengths[i] = length_s

    def fail(self, i: int, error_class: str, message: str) -> None:
        """Job ``i`` failed (decode, read, encoder): recorded, never fatal for the run."""
        if i in self._failed:
            return
        self._failed.add(i)
        self._windows.pop(i, None)
        self._totals.pop(i, None)
        self._lengths.pop(i, None)
        self._embedded.pop(i, None)
        f = self.jobs[i].source
        self._record(Failure(str(f.path), error_class, message, time.time(), f.size, f.mtime))
        self._dropped_if_changed(i)

    def is_failed(self, i: int) -> bool:
        return i in self._failed

    @property
    def all_done(self) -> bool:
        return self.next_job >= len(self.jobs)

    def finish_ready(self) -> None:
        """Add every finished file, in job order, up to the first one still in flight."""
        while self.next_job < len(self.jobs):
            i = self.next_job
            if i not in self._failed:
                total = self._totals.get(i)
                if total is None or self._embedded.get(i, 0) != total:
                    break
                self._add(i)
            self.next_job += 1
            self.maybe_commit()
        self.maybe_commit()  # by time, too, while a long file is in flight

    def maybe_commit(self, force: bool = False) -> None:
        if self._since_commit and (force or self._since_commit >= self.commit_every_files
                                   or time.monotonic() - self._last_commit > self.commit_every_s):
            self.writer.commit()
            self._last_commit, self._since_commit = time.monotonic(), 0

    def _add(self, i: int) -> None:
        job = self.jobs[i]
        f = job.source
        self._embedded.pop(i, None)
        got = self._windows.pop(i, {})
        wins = [got[n] for n in range(self._totals.pop(i))]
        starts = np.array([s for s, _, _ in wins])
        ends = np.array([e for _, e, _ in wins])
        # the file's length, not the last window's end: a short tail is not indexed, hop > window leaves gaps
        duration_s = max(float(ends.max()) if len(ends) else 0.0, self._lengths.pop(i, 0.0))
        try:
            tags = read_tags(f.path)
        except Exception:  # tags are decoration: a tag reader bug must not lose the track
            tags = Tags()
        rec = TrackRecord(track_id=job.track_id(self.writer.tracks), path=job.path, content_hash=job.digest,
                          size=f.size, mtime=f.mtime, duration_s=duration_s,
                          title=tags.title, artist=tags.artist, album=tags.album, genre=tags.genre,
                          year=tags.year, added_at=time.time())
        try:
            self.writer.add_track(rec, np.stack([cast(np.ndarray, v) for _, _, v in wins]), starts, ends)
        except SongseekError as exc:  # e.g. the encoder made NaN vectors for this file
            self._failed.add(i)
            self._record(Failure(job.path, type(exc).__name__, str(exc), time.time(), f.size, f.mtime))
            self._dropped_if_changed(i)
            return
        r = self.report
        setattr(r, job.kind, getattr(r, job.kind) + 1)
        r.windows += len(wins)
        r.audio_s += rec.duration_s
        self.progress.advance(files=1, windows=len(wins), audio_s=rec.duration_s)
        self._since_commit += 1

    def _dropped_if_changed(self, i: int) -> None:
        """Count a failed "changed" job's old track as removed: the classifier took it out of the library
        (pipeline._classify), and its vectors describe audio the file no longer holds."""
        if self.jobs[i].kind == "changed":
            self.report.removed += 1
            self.report.removed_failed += 1

    def _record(self, failure: Failure) -> None:
        self.writer.record_failure(failure)
        self.report.failures.append(failure)
        self.report.failed += 1
        self.progress.advance(files=1)
