"""Index audio files into a library: scan → classify (new/changed/moved/unchanged) → decode and window in
worker threads → embed in full batches on the model thread → commit in batches → update the index.

The decode, embed and commit stages live in stages.py; this module plans the job (scan, classify, prune)
and drives the stages with threads. ray_runner.py drives the same stages on a Ray cluster.
A crash loses at most the files since the last commit; the next run skips what was committed.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from songseek.engine.encoders import Encoder
from songseek.engine.errors import IncompatibleLibraryError, UsageError
from songseek.engine.hashing import file_sha256
from songseek.engine.progress import NullProgress, Progress
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import Manifest, check_compatible
from songseek.engine.storage.store import Failure
from songseek.engine.storage.writer import LibraryWriter

from .sources import ScanResult, SourceFile, check_sources, display_path, scan
from .stages import (
    CommitStage,
    FileChangedError,
    FileJob,
    IndexReport,
    WindowStream,
    checked_windows,
    embed_windows,
    failure_message,
)
from .stages import decode_windows as _decode_windows  # a module global: tests wrap it

__all__ = ["EmbedDriver", "FileChangedError", "IndexConfig", "IndexReport", "check_encoder_name", "index_paths",
           "new_manifest", "plan_jobs"]


MAX_WINDOW_S = 600.0  # CLAP models read 7-10 s; ten minutes is far past any real setting


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
    rehash: bool = False                # hash every file, even one whose size and mtime are unchanged
    commit_every_files: int = 64        # commit after this many finished files ...
    commit_every_s: float = 120.0       # ... or this many seconds, whichever comes first

    def __post_init__(self) -> None:
        # checked before anything is written: a NaN or huge window in a new library's manifest would leave it
        # unopenable (and a 10^5 s window asks for gigabytes per window)
        for name, value in (("window", self.window_s), ("hop", self.hop_s)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                          and 0 < value <= MAX_WINDOW_S):
                raise UsageError(f"--{name} must be a number of seconds in (0, {MAX_WINDOW_S:g}] (got {value!r})")


def new_manifest(encoder: Encoder, config: IndexConfig) -> Manifest:
    hop = config.hop_s or config.window_s
    return Manifest(encoder=encoder.info, window_s=config.window_s, hop_s=hop,
                    index_factory=config.index_factory)


def check_encoder_name(m: Manifest, name: str, library: Path) -> None:
    """Refuse ``--encoder name`` for a library built with another encoder from its manifest alone, before any
    weights load (check_compatible still compares checkpoint, dim and sample rate once the model is loaded).
    A library of precomputed vectors takes any encoder of its dimension: that needs the model, so it passes."""
    have = m.encoder.name
    if name != have and have != "precomputed":
        built = f"{have!r}" + (f" (checkpoint {m.encoder.checkpoint})" if m.encoder.checkpoint else "")
        raise IncompatibleLibraryError(
            f"{library} was built with another encoder: {built}, not {name!r} as --encoder asks; drop --encoder "
            "to use the library's own, or index into a new library")


# Drives the decode and embed stages for a planned job list into the commit stage (threads here; Ray in
# ray_runner.py): (commit stage, encoder, window_s, hop_s, config) -> None.
EmbedDriver = Callable[[CommitStage, Encoder, float, float, "IndexConfig"], None]


def index_paths(sources: Sequence[str | Path] | str | Path, library: str | Path, encoder: Encoder,
                config: IndexConfig = IndexConfig(), progress: Progress | None = None, wait: bool = False,
                driver: EmbedDriver | None = None) -> IndexReport:
    """Bring ``library`` up to date with the audio files under ``sources`` (folders or files; one path or
    a list; created if absent). ``wait``: wait for another writer instead of LibraryLockedError.
    ``driver`` runs decode and embedding (default: threads in this process); this process alone writes."""
    # str paths as Library.open takes them (a bare str must not be read as a list of one-letter paths)
    paths = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    root = Path(library).expanduser()
    if config.nprobe is not None and config.nprobe < 0:
        raise UsageError(f"--nprobe must be 0 (automatic) or more (got {config.nprobe})")
    faiss_index.check_factory(config.index_factory, encoder.info.dim)  # the index is built after the commit
    check_sources(paths, root)  # before the library is created or opened: a bad argument changes nothing
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    report = IndexReport()
    with LibraryWriter(root, new_manifest(encoder, config), wait=wait) as writer:
        jobs = plan_jobs(writer, paths, encoder, config, report)
        progress.start(len(jobs), "embedding")
        commit = CommitStage(writer, jobs, report, progress, config.commit_every_files, config.commit_every_s)
        try:
            if jobs:
                (driver or run_threads)(commit, encoder, writer.manifest.window_s, writer.manifest.hop_s, config)
        except KeyboardInterrupt:
            writer.commit()  # keep every file finished before the interrupt
            raise
        if config.nprobe is not None:
            writer.set_nprobe(config.nprobe)
        writer.commit()
        report.index_action = writer.update_index(config.index_factory)
        if config.nprobe and faiss_index.ivf_nlist(writer.manifest.index_description) == 0:
            report.notes.append(f"--nprobe {config.nprobe} is saved; it takes effect once the index is IVF "
                                f"(now {writer.manifest.index_description or 'none'}: no lists to probe)")
    if report.removed_failed:
        report.notes.append(f"{report.removed_failed} track(s) left search: the file changed and the new "
                            "content failed to index (listed above and by songseek failures); fix or replace "
                            "the file and index again")
    progress.close()
    report.seconds = time.perf_counter() - t0
    return report


def plan_jobs(writer: LibraryWriter, sources: list[Path], encoder: Encoder, config: IndexConfig,
              report: IndexReport) -> list[FileJob]:
    """Check the library fits, scan ``sources``, record unreadable paths, classify every file (unchanged,
    moved, known failure: handled here) and prune; returns the files to embed, in scan order."""
    m = writer.manifest
    library = writer.root
    check_compatible(m, encoder.info, library)
    hop = config.hop_s or config.window_s
    if (m.window_s, m.hop_s) != (config.window_s, hop) and m.tracks_file:
        raise IncompatibleLibraryError(  # both spellings: the CLI's options and the Python API's IndexConfig
            f"{library} uses --window {m.window_s} --hop {m.hop_s} (IndexConfig(window_s={m.window_s}, "
            f"hop_s={m.hop_s})); pass the same values or use a new library")
    found = scan(sources)
    if not m.tracks_file:
        writer.commit()  # a new library opens (empty) from its first moment, whatever happens next
    for path, why in found.unreadable:
        cls, _, reason = why.partition(": ")
        shown = display_path(path)
        _fail(writer, report, Failure(shown, cls or "OSError", f"{shown}: {reason}", time.time()))
    jobs = _classify(writer, found.files, config, report)
    if config.prune:
        _prune(writer, found, report, config.prune_empty)
    return jobs


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
              report: IndexReport) -> list[FileJob]:
    """Decide per file: unchanged, moved (path update), known failure, or to embed (added/changed)."""
    by_path = writer.path_index()
    by_hash: dict[str, list[str]] = defaultdict(list)  # every track of a content hash: copies move one by one
    for track_id, row in writer.tracks.items():
        by_hash[row["content_hash"]].append(track_id)
    todo: list[FileJob] = []
    taken: set[str] = set()
    for f in files:
        key = str(f.path)
        tid = by_path.get(key)
        if tid is not None:
            row = writer.tracks[tid]
            # a tag editor set to keep file times can change the bytes and keep size and mtime: --rehash
            if row["size"] == f.size and row["mtime"] == f.mtime and not config.rehash:
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
            if writer.tracks[tid]["mtime"] != f.mtime:
                writer.update_path(tid, key, f.mtime)  # touched, same content
            report.unchanged += 1
            taken.add(tid)
            continue
        other = next((t for t in by_hash.get(digest, ()) if t not in taken
                      and not Path(writer.tracks[t]["path"]).exists()), None)
        if other is not None:
            writer.update_path(other, key, f.mtime)
            report.moved += 1
            taken.add(other)
            continue
        job = FileJob(f, digest, "changed" if tid is not None else "added")
        new_id = job.track_id(writer.tracks)
        todo.append(job)
        if tid is not None:
            # The old track goes now, whatever the new content gives: its vectors describe audio the file no
            # longer holds, so keeping it after the new content fails (garbage, truncated) would serve hits
            # for a file that cannot play them. The run counts it as removed (CommitStage) when it fails.
            writer.remove_track(tid)
        taken.add(new_id)
    return todo



# Decoders start a file only while it is at most this many files past the first unfinished one.
MAX_FILES_AHEAD = 256
_IDLE = object()


@dataclass(frozen=True)
class _Decoded:
    windows: int  # a decoder finished its file with this many windows
    length_s: float | None = None  # ... of this many seconds of audio (None: the decoder did not say)


def run_threads(commit: CommitStage, encoder: Encoder, window_s: float, hop_s: float, config: IndexConfig) -> None:
    """Decode in worker threads into a bounded queue; embed full batches on this thread; commit in order."""
    jobs, report = commit.jobs, commit.report
    sr = encoder.info.sample_rate
    q: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=max(4 * config.batch_size, 8))
    stop = threading.Event()

    def work(i: int) -> None:
        f = jobs[i].source
        while i - commit.next_job > MAX_FILES_AHEAD and not stop.is_set():
            time.sleep(0.01)  # files finish in order: don't pile up vectors behind one long file
        if stop.is_set():
            return
        try:
            n = 0
            windows = WindowStream(checked_windows(f, _decode_windows(f, sr, window_s, hop_s)))
            for item in windows:
                if stop.is_set():
                    return
                q.put((i, item))
                n += 1
            q.put((i, _Decoded(n, windows.length_s)))
        except BaseException as exc:  # any failure of one file is recorded, never fatal for the run
            q.put((i, exc))

    seen: dict[int, int] = {}  # windows decoded so far, per job
    batch: list[tuple[int, int, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        out, seconds = embed_windows(encoder, np.stack([w for _, _, w in batch]))
        report.model_seconds += seconds
        for (i, n, _), vec in zip(batch, out, strict=True):
            commit.vector(i, n, vec)
        batch.clear()

    finished = 0
    with ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="decode") as pool:
        futures = [pool.submit(work, i) for i in range(len(jobs))]
        try:
            while finished < len(jobs):
                try:
                    i, item = q.get(timeout=0.05 if batch else None)
                except queue.Empty:
                    flush()  # decoders are slower than the model right now: don't wait on a full batch
                    i, item = -1, _IDLE
                if item is _IDLE:
                    pass
                elif isinstance(item, _Decoded):
                    commit.decoded(i, item.windows, item.length_s)
                    finished += 1
                elif isinstance(item, BaseException):
                    if not isinstance(item, Exception):
                        raise item  # SystemExit, KeyboardInterrupt... in a decoder: stop the run
                    commit.fail(i, type(item).__name__, failure_message(jobs[i].path, item))
                    finished += 1
                else:
                    win, s, e = cast(tuple[np.ndarray, float, float], item)
                    n = seen.get(i, 0)
                    seen[i] = n + 1
                    commit.window(i, n, s, e)
                    batch.append((i, n, win))
                    if len(batch) >= config.batch_size:
                        flush()
                commit.finish_ready()
            flush()
            commit.finish_ready()
        finally:
            stop.set()
            for fu in futures:
                fu.cancel()
            while any(not fu.done() for fu in futures):  # unblock workers stuck on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    time.sleep(0.01)
