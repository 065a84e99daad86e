"""Index audio files into a library: scan → classify (new/changed/moved/unchanged) → decode and window in
worker threads → embed in full batches on the model thread → commit in batches → update the index.

A crash loses at most the files since the last commit; the next run skips what was committed.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from songseek.engine.audio import decode_stream, iter_windows
from songseek.engine.encoders import Encoder
from songseek.engine.errors import IncompatibleLibraryError, SongseekError, UsageError
from songseek.engine.hashing import file_sha256
from songseek.engine.progress import NullProgress, Progress
from songseek.engine.storage.manifest import Manifest, check_compatible
from songseek.engine.storage.store import Failure, TrackRecord
from songseek.engine.storage.writer import LibraryWriter

from .sources import ScanResult, SourceFile, display_path, scan
from .tags import Tags, read_tags


@dataclass(frozen=True)
class IndexConfig:
    window_s: float = 10.0
    hop_s: float | None = None          # None = window_s
    batch_size: int = 16
    workers: int = 2                    # decode threads
    index_factory: str = "auto"
    nprobe: int | None = None           # IVF lists a query probes by default, saved (0: automatic; None: keep)
    prune: bool = True                  # drop tracks whose files are gone (under the sources given)
    prune_empty: bool = False           # prune even under a source folder where no audio file was found
    retry_failed: bool = False          # retry known failures even when the file did not change
    commit_every_files: int = 64        # commit after this many finished files ...
    commit_every_s: float = 120.0       # ... or this many seconds, whichever comes first


@dataclass
class IndexReport:
    """What one `songseek index` run did (counts of files), plus throughput."""

    added: int = 0
    changed: int = 0
    moved: int = 0
    removed: int = 0
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
        return (f"added {self.added}, changed {self.changed}, moved {self.moved}, removed {self.removed}, "
                f"unchanged {self.unchanged}, failed {self.failed}"
                + (f" (+{self.skipped_failed} known failures skipped)" if self.skipped_failed else "")
                + f"; {self.windows} windows, {self.audio_s / 3600:.2f} h audio in {self.seconds:.1f} s; "
                f"index {self.index_action}")


def new_manifest(encoder: Encoder, config: IndexConfig) -> Manifest:
    hop = config.hop_s or config.window_s
    return Manifest(encoder=encoder.info, window_s=config.window_s, hop_s=hop,
                    index_factory=config.index_factory)


def index_paths(sources: list[Path], library: Path, encoder: Encoder, config: IndexConfig = IndexConfig(),
                progress: Progress | None = None, wait: bool = False) -> IndexReport:
    """Bring ``library`` up to date with the audio files under ``sources`` (created if absent)."""
    if config.nprobe is not None and config.nprobe < 0:
        raise UsageError(f"--nprobe must be 0 (automatic) or more (got {config.nprobe})")
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    report = IndexReport()
    with LibraryWriter(library, new_manifest(encoder, config), wait=wait) as writer:
        m = writer.manifest
        check_compatible(m, encoder.info, library)
        hop = config.hop_s or config.window_s
        if (m.window_s, m.hop_s) != (config.window_s, hop) and m.tracks_file:
            raise IncompatibleLibraryError(
                f"{library} uses --window {m.window_s} --hop {m.hop_s}; "
                "pass the same values or use a new library")
        found = scan(sources)
        if not m.tracks_file:
            writer.commit()  # a new library opens (empty) from its first moment, whatever happens next
        for path, why in found.unreadable:
            cls, _, reason = why.partition(": ")
            shown = display_path(path)
            _fail(writer, report, Failure(shown, cls or "OSError", f"{shown}: {reason}", time.time()))
        todo = _classify(writer, found.files, config, report)
        if config.prune:
            _prune(writer, found, report, config.prune_empty)
        progress.start(len(todo), "embedding")
        try:
            _embed_files(writer, encoder, todo, m.window_s, m.hop_s, config, report, progress)
        except KeyboardInterrupt:
            writer.commit()  # keep every file finished before the interrupt
            raise
        if config.nprobe is not None:
            writer.set_nprobe(config.nprobe)
        writer.commit()
        report.index_action = writer.update_index(config.index_factory)
    progress.close()
    report.seconds = time.perf_counter() - t0
    return report


def _fail(writer: LibraryWriter, report: IndexReport, failure: Failure) -> None:
    writer.record_failure(failure)
    report.failures.append(failure)
    report.failed += 1


def _under(path: str, roots: tuple[Path, ...]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots)


def _prune(writer: LibraryWriter, found: ScanResult, report: IndexReport, prune_empty: bool = False) -> None:
    """Remove tracks (and failure records) whose files are gone, but only under this run's source roots:
    tracks fed by other folders are left alone, and a root where no audio file was found at all (an
    unmounted drive looks like that) prunes nothing."""
    seen = {str(f.path) for f in found.files} | {display_path(p) for p, _ in found.unreadable}
    live_roots = tuple(r for r in found.roots if prune_empty or any(_under(p, (r,)) for p in seen))
    for r in found.roots:
        if r not in live_roots and any(_under(row["path"], (r,)) for row in writer.tracks.values()):
            report.notes.append(f"no audio file found under {r}: its tracks were kept (is a drive "
                                "unmounted? pass --prune to remove them)")
    for tid, row in list(writer.tracks.items()):
        if row["path"] not in seen and _under(row["path"], live_roots) and not os.path.lexists(row["path"]):
            writer.remove_track(tid)
            report.removed += 1
    for path in list(writer.failures):
        if path not in seen and _under(path, live_roots) and not os.path.lexists(path):
            writer.clear_failure(path)


def _classify(writer: LibraryWriter, files: list[SourceFile], config: IndexConfig,
              report: IndexReport) -> list[tuple[SourceFile, str, str]]:
    """Decide per file: unchanged, moved (path update), known failure, or to embed (added/changed)."""
    by_path = writer.path_index()
    by_hash = {row["content_hash"]: tid for tid, row in writer.tracks.items()}
    todo: list[tuple[SourceFile, str, str]] = []
    taken: set[str] = set()
    for f in files:
        key = str(f.path)
        tid = by_path.get(key)
        if tid is not None:
            row = writer.tracks[tid]
            if row["size"] == f.size and row["mtime"] == f.mtime:
                report.unchanged += 1
                taken.add(tid)
                continue
        fail = writer.failures.get(key)
        if (fail is not None and not config.retry_failed and fail.size == f.size and fail.mtime == f.mtime
                and f.ctime <= fail.time):
            report.skipped_failed += 1  # unchanged since it failed (content, times and permissions)
            continue
        try:
            digest = file_sha256(f.path)
        except OSError as exc:
            _fail(writer, report, Failure(key, type(exc).__name__,
                                          f"{key}: cannot read the file ({exc.strerror})",
                                          time.time(), f.size, f.mtime))
            continue
        if tid is not None and writer.tracks[tid]["content_hash"] == digest:
            writer.update_path(tid, key, f.mtime)  # touched, same content
            report.unchanged += 1
            taken.add(tid)
            continue
        other = by_hash.get(digest)
        if other is not None and other not in taken and not Path(writer.tracks[other]["path"]).exists():
            writer.update_path(other, key, f.mtime)
            report.moved += 1
            taken.add(other)
            continue
        new_id = digest[:16]
        if new_id in writer.tracks and new_id != tid:  # same content at two live paths: keep both
            new_id = f"{new_id}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"
        todo.append((f, digest, "changed" if tid is not None else "added"))
        if tid is not None and tid != new_id:
            writer.remove_track(tid)
        taken.add(new_id)
    return todo


_DONE = object()
# Decoders start a file only while it is at most this many files past the first unfinished one.
MAX_FILES_AHEAD = 256
_IDLE = object()


def _decode_windows(f: SourceFile, sample_rate: int, window_s: float, hop_s: float
                    ) -> Iterator[tuple[np.ndarray, float, float]]:
    yield from iter_windows(decode_stream(f.path, sample_rate), sample_rate, window_s, hop_s)


def _embed_files(writer: LibraryWriter, encoder: Encoder, todo: list[tuple[SourceFile, str, str]],
                 window_s: float, hop_s: float, config: IndexConfig, report: IndexReport,
                 progress: Progress) -> None:
    """Decode in worker threads into a bounded queue; embed full batches here; add finished files."""
    if not todo:
        return
    sr = encoder.info.sample_rate
    q: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=max(4 * config.batch_size, 8))
    stop = threading.Event()

    def work(i: int) -> None:
        f = todo[i][0]
        while i - finished_upto[0] > MAX_FILES_AHEAD and not stop.is_set():
            time.sleep(0.01)  # files finish in order: don't pile up vectors behind one long file
        if stop.is_set():
            return
        try:
            n = 0
            for item in _decode_windows(f, sr, window_s, hop_s):
                if stop.is_set():
                    return
                q.put((i, item))
                n += 1
            if n == 0:
                raise SongseekError(f"{f.path}: no audio samples decoded")
            _check_unchanged(f)
            q.put((i, _DONE))
        except BaseException as exc:  # any failure of one file is recorded, never fatal for the run
            q.put((i, exc))

    pending: dict[int, list[tuple[float, float]]] = {}  # window times only: samples go to the batch
    vectors: dict[int, list[np.ndarray]] = {}
    done_files: set[int] = set()
    failed: set[int] = set()
    finished = 0
    last_commit, since_commit = time.monotonic(), 0
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        t = time.perf_counter()
        out = encoder.embed_audio(np.stack([w for _, w in batch]))
        report.model_seconds += time.perf_counter() - t
        for (i, _), vec in zip(batch, out, strict=True):
            if i not in failed:
                vectors.setdefault(i, []).append(vec)
        batch.clear()

    def finish(i: int) -> None:
        nonlocal since_commit
        f, digest, kind = todo[i]
        wins = pending.pop(i, [])
        vecs = vectors.pop(i, [])
        starts = np.array([s for s, _ in wins])
        ends = np.array([e for _, e in wins])
        try:
            tags = read_tags(f.path)
        except Exception:  # tags are decoration: a tag reader bug must not lose the track
            tags = Tags()
        tid = digest[:16]
        if tid in writer.tracks and writer.tracks[tid]["path"] != str(f.path):
            tid = f"{tid}-{hashlib.sha1(str(f.path).encode()).hexdigest()[:6]}"
        rec = TrackRecord(track_id=tid, path=str(f.path), content_hash=digest, size=f.size, mtime=f.mtime,
                          duration_s=float(ends.max()) if len(ends) else 0.0, title=tags.title,
                          artist=tags.artist, album=tags.album, genre=tags.genre, year=tags.year,
                          added_at=time.time())
        try:
            writer.add_track(rec, np.stack(vecs), starts, ends)
        except SongseekError as exc:  # e.g. the encoder made NaN vectors for this file
            _fail(writer, report, Failure(str(f.path), type(exc).__name__, str(exc), time.time(),
                                          f.size, f.mtime))
            progress.advance(files=1)
            return
        setattr(report, kind, getattr(report, kind) + 1)
        report.windows += len(vecs)
        report.audio_s += rec.duration_s
        progress.advance(files=1, windows=len(vecs), audio_s=rec.duration_s)
        since_commit += 1
        maybe_commit()

    next_file = 0
    finished_upto = [0]  # next_file, as the decoder threads see it

    def finish_ready() -> None:
        """Finish files in their scan order (so a library's layout never depends on thread timing): each
        once its decoder is done and all its windows have vectors; failed files are skipped."""
        nonlocal next_file
        while next_file < len(todo):
            i = next_file
            if i in failed:
                next_file += 1
            elif i in done_files and pending.get(i) and len(vectors.get(i, [])) == len(pending[i]):
                done_files.discard(i)
                next_file += 1
                finish(i)
            else:
                break
        finished_upto[0] = next_file

    def maybe_commit() -> None:
        nonlocal since_commit, last_commit
        if since_commit and (since_commit >= config.commit_every_files
                             or time.monotonic() - last_commit > config.commit_every_s):
            writer.commit()
            last_commit, since_commit = time.monotonic(), 0

    with ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="decode") as pool:
        futures = [pool.submit(work, i) for i in range(len(todo))]
        try:
            while finished < len(todo):
                try:
                    i, item = q.get(timeout=0.05 if batch else None)
                except queue.Empty:
                    flush()  # decoders are slower than the model right now: don't wait on a full batch
                    i, item = -1, _IDLE
                if item is _IDLE:
                    pass
                elif item is _DONE:
                    done_files.add(i)
                    finished += 1
                elif isinstance(item, BaseException):
                    if not isinstance(item, Exception):
                        raise item  # SystemExit, KeyboardInterrupt... in a decoder: stop the run
                    failed.add(i)
                    pending.pop(i, None)
                    vectors.pop(i, None)
                    finished += 1
                    f = todo[i][0]
                    msg = str(item) if str(f.path) in str(item) else f"{f.path}: {item}"
                    _fail(writer, report, Failure(str(f.path), type(item).__name__, msg, time.time(),
                                                  f.size, f.mtime))
                    progress.advance(files=1)
                else:
                    win, s, e = cast(tuple[np.ndarray, float, float], item)
                    pending.setdefault(i, []).append((s, e))
                    batch.append((i, win))
                    if len(batch) >= config.batch_size:
                        flush()
                finish_ready()
                maybe_commit()
            flush()
            finish_ready()
        finally:
            stop.set()
            for fu in futures:
                fu.cancel()
            while any(not fu.done() for fu in futures):  # unblock workers stuck on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    time.sleep(0.01)


class FileChangedError(SongseekError):
    """A file changed (size or modification time) while it was being read."""


def _check_unchanged(f: SourceFile) -> None:
    try:
        st = f.path.stat()
    except OSError as exc:
        raise FileChangedError(f"{f.path}: vanished while being read ({exc.strerror})") from None
    if st.st_size != f.size or st.st_mtime != f.mtime:
        raise FileChangedError(f"{f.path}: changed while being read; it is indexed on the next run")
