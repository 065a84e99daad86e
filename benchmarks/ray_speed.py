"""`songseek bench index-speed --ray`: the same files indexed by the threaded pipeline and on Ray, in the same
run, alternating; the figure is Ray's windows/s over the threaded pipeline's (Ray's overhead bounded).

Both sides build the model they index with inside the timed span (the threaded side in this process, Ray in
its actors), as `songseek index` does. Starting or joining the cluster is timed apart: it happens once per
session, not per job. Nothing here asserts a time.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from songseek.benchmarks.speed import IndexRun
from songseek.engine.encoders import Encoder
from songseek.engine.errors import SongseekError, UsageError
from songseek.engine.query.search import Library
from songseek.indexers.pipeline import IndexConfig, IndexReport, index_paths
from songseek.indexers.ray_runner import EncoderFactory, RayOptions, cluster_resources, connect, disconnect, ray_driver


@dataclass(frozen=True)
class RayIndexSpeedReport(IndexRun):
    ray_address: str
    ray_workers: int             # embedding actors (0: automatic)
    ray_threads: int             # model CPU threads per actor (0: Ray's default, one per reserved CPU)
    cluster_cpus: float
    cluster_gpus: float
    ray_start_s: float           # starting or joining Ray (once per session; not in ray_s)
    threads_s: float             # best threaded run: model load + index
    ray_s: float                 # best Ray run: actors (model load) + index
    threads_windows_per_s: float
    ray_windows_per_s: float
    ratio: float                 # Ray / threaded windows per second (target >= 0.8 on 2 cores)
    same_tracks_and_frames: bool  # both libraries hold the same tracks and frame counts
    repeats: int
    load_avg: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _counts(lib: Path) -> tuple[int, int]:
    library = Library.open(lib)
    return library.n_tracks, library.store.n_rows


def run_ray_index_speed(sources: Sequence[Path], encoder: Encoder, factory: EncoderFactory, options: RayOptions,
                        *, device: str = "cpu", batch_size: int = 16, workers: int = 2, window_s: float = 10.0,
                        hop_s: float | None = None, work: Path | None = None, repeats: int = 1
                        ) -> RayIndexSpeedReport:
    """Index ``sources`` into fresh libraries with threads and on Ray, alternating ``repeats`` times; each
    time is the best of its repeats. ``encoder`` describes the model (the manifest); ``factory(device)``
    builds the one each side indexes with. A Ray this call starts is shut down before it returns."""
    if repeats < 1:
        raise UsageError(f"repeats must be at least 1 (got {repeats})")
    load = os.getloadavg()[0]
    config = IndexConfig(window_s=window_s, hop_s=hop_s or window_s, batch_size=batch_size, workers=workers,
                         index_factory="Flat")
    t0 = time.perf_counter()
    started = connect(options.address)  # timed apart: once per session, not per job
    start_s = time.perf_counter() - t0
    best_threads = best_ray = float("inf")
    same = True
    report: IndexReport | None = None
    try:
        resources = cluster_resources()
        with tempfile.TemporaryDirectory(dir=work, prefix="songseek-ray-speed-") as tmp:
            for k in range(repeats):
                t0 = time.perf_counter()
                report = index_paths(list(sources), Path(tmp) / f"threads{k}", factory(device), config)
                best_threads = min(best_threads, time.perf_counter() - t0)
                t0 = time.perf_counter()
                on_ray = index_paths(list(sources), Path(tmp) / f"ray{k}", encoder, config,
                                     driver=ray_driver(factory, options))
                best_ray = min(best_ray, time.perf_counter() - t0)
                same = same and _counts(Path(tmp) / f"threads{k}") == _counts(Path(tmp) / f"ray{k}") \
                    and on_ray.windows == report.windows
    finally:
        if started:  # a library caller keeps running: the Ray this call started must not outlive it
            disconnect()
    if report is None or not report.windows:
        raise SongseekError(f"no audio windows indexed from {', '.join(map(str, sources))}")
    n = report.windows
    return RayIndexSpeedReport(
        files=report.added, windows=n, audio_s=report.audio_s, encoder=encoder.info.name,
        random_weights=encoder.info.random_weights, batch_size=batch_size, workers=workers,
        ray_address=options.address, ray_workers=options.workers,
        ray_threads=options.threads_per_worker, cluster_cpus=float(resources.get("CPU", 0)),
        cluster_gpus=float(resources.get("GPU", 0)), ray_start_s=start_s, threads_s=best_threads,
        ray_s=best_ray, threads_windows_per_s=n / best_threads, ray_windows_per_s=n / best_ray,
        ratio=best_threads / best_ray, same_tracks_and_frames=same, repeats=repeats, load_avg=load)
