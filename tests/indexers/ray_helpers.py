"""Helpers for the Ray indexing tests: seeded audio, a library snapshot, and an encoder whose actor dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.store import read_table_mmap

SR = 16000
# 24 long files at 48 kHz (the indexer resamples them): a run of them is still going when its first commit
# lands, even on a fast machine (one did 24 files of 4-20 s in 2.6 s, and a Ctrl-C meant for the middle of
# the run landed in Ray's shutdown).
LONG_RUN = ([24.0, 16.0, 40.0, 12.0, 32.0, 20.0, 28.0, 8.0] * 3, 48000)


def make_music(folder: Path, seconds: list[float], seed: int = 0, sample_rate: int = SR) -> list[Path]:
    """One seeded tone-plus-noise WAV per length, named t00.wav, t01.wav... (another ``sample_rate`` makes
    the indexer resample: slower decoding)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, secs in enumerate(seconds):
        t = np.arange(int(sample_rate * secs)) / sample_rate
        x = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t) + 0.05 * rng.standard_normal(len(t))
        out.append(folder / f"t{i:02d}.wav")
        sf.write(out[-1], x.astype(np.float32), sample_rate)
    return out


def wait_for_first_commit(proc: subprocess.Popen, lib: Path, seconds: float = 90) -> bool:
    """Poll until ``lib``'s manifest names a frame shard (a commit holds a track) or ``proc`` ends; False
    when it ended first (the run finished before a signal could reach its middle)."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        if (lib / "manifest.json").exists() and read_manifest(lib).frame_shards:
            return True
        time.sleep(0.01)
    return proc.poll() is None


@dataclass
class Snapshot:
    tracks: dict[str, dict]              # path -> tracks row (without frame_start, added_at)
    times: dict[str, np.ndarray]         # path -> (T, 2) window start/end seconds
    vectors: dict[str, np.ndarray]       # path -> (T, dim)
    failures: dict[str, str]             # path -> error class


def snapshot(lib: Path) -> Snapshot:
    library = Library.open(lib)
    tracks, times, vectors = {}, {}, {}
    for row in library.tracks.to_pylist():
        s, c = row.pop("frame_start"), row["frame_count"]
        row.pop("added_at")
        tracks[row["path"]] = row
        times[row["path"]] = np.stack([library.store.start_s[s:s + c], library.store.end_s[s:s + c]], axis=1)
        vectors[row["path"]] = np.array(library.store.vectors(s, c), dtype=np.float32)
    m = read_manifest(lib)
    rows = read_table_mmap(lib / m.failures_file).to_pylist() if m.failures_file else []
    fails = {row["path"]: row["error_class"] for row in rows}
    return Snapshot(tracks, times, vectors, fails)


def assert_same_library(got: Path, want: Path) -> None:
    """Same tracks (ids, hashes, sizes, frame counts), same spans, vectors with cosine >= 0.99999, same
    failures, and the same search results (order and segments) for every frame as a query."""
    a, b = snapshot(got), snapshot(want)
    assert a.tracks == b.tracks
    assert a.failures == b.failures
    for p in b.tracks:
        np.testing.assert_array_equal(a.times[p], b.times[p])
        cos = np.sum(a.vectors[p] * b.vectors[p], axis=1) / (
            np.linalg.norm(a.vectors[p], axis=1) * np.linalg.norm(b.vectors[p], axis=1))
        assert cos.min() >= 0.99999, (p, cos.min())
    la, lb = Library.open(got), Library.open(want)
    assert (la.n_tracks, la.store.n_rows) == (lb.n_tracks, lb.store.n_rows)
    queries = np.concatenate([b.vectors[p][:2] for p in sorted(b.vectors)])
    opts = SearchOptions(k=len(b.tracks), rerank="fusion")
    for ha, hb in zip(la.search_vectors(queries, opts), lb.search_vectors(queries, opts), strict=True):
        assert [(h.path, h.segment.start_s, h.segment.end_s) for h in ha] == \
               [(h.path, h.segment.start_s, h.segment.end_s) for h in hb]


@dataclass(frozen=True)
class KillOnce:
    """An EncoderFactory: a FakeEncoder whose actor sends SIGKILL to its own PID at its ``at``-th model
    call, once per ``marker`` file (created atomically; it holds the killed PID). Every actor started
    appends its PID to ``marker``.pids, so a test can see that Ray started a new one."""

    marker: str
    at: int = 2

    def __call__(self, device: str) -> FakeEncoder:
        return _KillingEncoder(self)


class _KillingEncoder(FakeEncoder):
    def __init__(self, spec: KillOnce) -> None:
        super().__init__()
        self.spec, self.calls = spec, 0
        with open(spec.marker + ".pids", "a") as fh:
            fh.write(f"{os.getpid()}\n")

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.spec.at:
            try:
                fd = os.open(self.spec.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().embed_audio(windows)
