"""Run the indexing job's decode and embed stages on a Ray cluster (Ray Data); this process stays the one
writer.

The driver (this process) scans, classifies and prunes exactly as the threaded indexer does (pipeline.
plan_jobs), then streams the job list through Ray Data:

- decode + windowing: CPU tasks, one file per call, windows streamed out in blocks of ``batch_size``;
- embedding: an actor pool (one model per actor; one GPU per actor when the cluster has GPUs);
- vectors stream back to the driver as Arrow tables, and the driver's CommitStage adds finished files in
  job order and commits in batches. Workers never touch the library folder, so on several nodes the
  library needs no shared storage: only the driver's disk holds it.

Ray retries a killed decode task or embedding actor (at most MAX_RETRIES times: a worker that keeps dying
stops the run instead of hanging it); a window delivered twice is keyed by (job, window number) and kept
once, so nothing is duplicated. A run that stops (a Ray error, a worker that cannot see a file, a stream that
ends with a file incomplete) first commits the files finished before it, then raises one line.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from songseek.engine.device import resolve_device
from songseek.engine.encoders import Encoder, EncoderInfo, load_encoder
from songseek.engine.errors import IncompatibleLibraryError, MissingDependencyError, SongseekError, UsageError

from .pipeline import IndexConfig
from .sources import SourceFile
from .stages import CommitStage, WindowStream, checked_windows, decode_windows, embed_windows, failure_message

# A decode task or embedding actor whose process dies (OOM, segfault, lost node) is retried this many times;
# Ray Data's default is forever, which turns one file that crashes the decoder into a run that never ends.
MAX_RETRIES = 3
# Seconds to wait for a TCP answer from an explicit cluster address (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 5.0

# Builds one encoder inside an actor from a device string ("auto", "cpu", "cuda"...); pickled to each actor.
EncoderFactory = Callable[[str], Encoder]


@dataclass(frozen=True)
class EncoderSpec:
    """An :data:`EncoderFactory` for a registered encoder: name, checkpoint, random weights."""

    name: str
    checkpoint: str | None = None
    random_weights: bool = False

    def __call__(self, device: str) -> Encoder:
        return load_encoder(self.name, self.checkpoint, resolve_device(device), self.random_weights)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``address`` "local" starts Ray on this machine (or uses the one this process
    already initialised), "auto" joins the running cluster, anything else is a cluster address.
    ``workers``: embedding actors (0: one per GPU in the cluster, else 1). ``gpus_per_worker``: None = 1
    when the cluster has GPUs, else 0. ``cpus_per_worker``: CPUs each actor reserves. ``threads_per_worker``:
    the model's CPU threads in each actor (0: Ray's default, one per reserved CPU; more lets the model use
    cores that decode tasks leave idle, as the threaded indexer's model does). ``device``: where each actor's
    model runs (auto, cpu, cuda, cuda:N, mps; resolved on the actor's node)."""

    address: str = "local"
    workers: int = 0
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    threads_per_worker: int = 0
    device: str = "auto"


def connect(address: str) -> bool:
    """Initialise Ray for ``address`` unless this process already did; returns True when it started it."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    check_address(address)
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        ray.init(address=address, **kwargs)  # "local" always starts a new one, whatever else runs
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot reach a Ray cluster at address={address!r} ({exc}); give 'local', "
                         "'auto' (a running cluster) or its address (host:port or ray://host:port)") from exc
    return True


def disconnect() -> None:
    """Leave (or stop, when this process started it) the Ray that :func:`connect` joined."""
    with interrupts_held():
        _import_ray().shutdown()


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends, then deliver it to the handler it was meant for. A
    KeyboardInterrupt inside ray.shutdown() leaves Ray's core worker half shut, and a Ray thread then ends
    the process with exit 1 and a C++ log line instead of the CLI's "interrupted: N of M committed" and exit
    130. Only the main thread gets signals; an ignored SIGINT (a background job) stays ignored."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)


def probe_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds when nothing listens at an explicit ``host:port`` (or ``ray://host:port``): ray.init
    would retry for minutes and print a log line per try. "local" and "auto" need no probe."""
    if address in ("local", "auto"):
        return
    client = address.startswith("ray://")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep:  # no port: Ray's defaults
        host, port = address.removeprefix("ray://"), "10001" if client else "6379"
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address!r}: give 'local', 'auto' (a running cluster) or host:port "
                         "(or ray://host:port)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one there "
                         "(ray start --head) or give 'local' or 'auto'") from None


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """:func:`probe_address`, with "auto" first resolved to the cluster ``ray.init("auto")`` would join
    (:func:`auto_address`): without a running cluster, ray.init("auto") failed only after the archive was
    scanned and hashed, and with RAY_ADDRESS where nothing answers it retried for minutes."""
    if address != "auto":
        probe_address(address, timeout_s)
        return
    found = auto_address()
    try:
        probe_address(found, timeout_s)
    except UsageError as exc:
        via = " (RAY_ADDRESS)" if os.environ.get("RAY_ADDRESS", "auto") != "auto" else ""
        raise UsageError(f"--ray auto joins {found}{via}: {exc}") from None


def auto_address() -> str:
    """The address ``ray.init("auto")`` joins: RAY_ADDRESS when set, else the cluster ``ray start`` started on
    this machine (else any running here); "auto" when Ray's internals cannot tell. UsageError when there is
    none."""
    _import_ray()
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:  # Ray moved its internals: leave the check to ray.init
        return "auto"
    try:
        return str(get_ray_address_from_environment("auto", None))
    except ConnectionError:
        raise UsageError("--ray auto: no Ray cluster is running on this machine; start one (ray start --head), "
                         "set RAY_ADDRESS, or give 'local' or the cluster's address (host:port)") from None


def _import_ray() -> ModuleType:  # ray is an optional extra, imported when asked for
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("indexing on Ray needs ray[data]: pip install 'songseek[ray]'") from exc
    return ray


@dataclass(frozen=True)
class DecodeSpec:
    sample_rate: int
    window_s: float
    hop_s: float
    rows: int  # windows per output block


# Columns of a decoded block (and of the vectors coming back, with "vector" instead of "samples").
# "missing": the file failed and its path does not exist on the worker that read it (see absorb_vectors).
_KEYS = ("job", "n", "start_s", "end_s", "total", "length_s", "error_class", "error", "missing")


def _rows(job: int, ns: list[int], times: list[tuple[float, float]], samples: np.ndarray, total: int,
          error_class: str = "", error: str = "", missing: bool = False,
          length_s: float = 0.0) -> dict[str, np.ndarray]:
    k = len(ns)
    return {"job": np.full(k, job, np.int64), "n": np.asarray(ns, np.int64),
            "start_s": np.asarray([s for s, _ in times], np.float64),
            "end_s": np.asarray([e for _, e in times], np.float64),
            "total": np.full(k, total, np.int64), "length_s": np.full(k, length_s, np.float64),
            "error_class": np.asarray([error_class] * k, dtype=object),
            "error": np.asarray([error] * k, dtype=object), "missing": np.full(k, missing),
            "samples": samples}


def _decode_memory(spec: DecodeSpec) -> int:
    """Bytes a decode task holds: a block of windows being filled and one going out, plus the worker itself
    (a Python process with PyAV, numpy and pyarrow loaded: ~116 MB measured by Ray's memory check).
    Declaring it also keeps decoding in CPU tasks of their own: Ray fuses a task stage into the next actor
    stage only when their resource requests are equal (which would run decode and model on one worker)."""
    return 2 * spec.rows * round(spec.window_s * spec.sample_rate) * 4 + (192 << 20)


def decode_task(batch: dict[str, np.ndarray], spec: DecodeSpec) -> Iterator[dict[str, np.ndarray]]:
    """Ray task body: the windows of each file in ``batch`` (columns job, path, size, mtime), in blocks of
    ``spec.rows``; the last block of a file carries its window count in ``total`` (0 elsewhere) and its
    length in seconds in ``length_s`` (a tail too short to index ends past its last window). A file
    that fails gives one row with its error (and zero samples, which the actor skips)."""
    window_n = round(spec.window_s * spec.sample_rate)
    for job, path, size, mtime in zip(batch["job"], batch["path"], batch["size"], batch["mtime"]):
        f = SourceFile(Path(str(path)), int(size), float(mtime))
        ns: list[int] = []
        times: list[tuple[float, float]] = []
        wins: list[np.ndarray] = []
        n = 0
        try:
            windows = WindowStream(checked_windows(f, decode_windows(f, spec.sample_rate, spec.window_s,
                                                                     spec.hop_s)))
            for win, s, e in windows:
                if len(wins) == spec.rows:  # a full block goes out once a next window exists
                    yield _rows(int(job), ns, times, np.stack(wins), 0)
                    ns, times, wins = [], [], []
                ns.append(n)
                times.append((s, e))
                wins.append(win)
                n += 1
        except Exception as exc:  # one file's failure is recorded by the driver, never fatal for the run
            yield _rows(int(job), [-1], [(0.0, 0.0)], np.zeros((1, window_n), np.float32), 0,
                        type(exc).__name__, failure_message(str(f.path), exc), not os.path.lexists(f.path))
            continue
        yield _rows(int(job), ns, times, np.stack(wins), n, length_s=windows.length_s or 0.0)


class EmbedActor:
    """Ray actor body: one model, loaded once; turns decoded blocks into vector tables."""

    def __init__(self, factory: EncoderFactory, device: str, expected: EncoderInfo) -> None:
        self.encoder = factory(device)
        if self.encoder.info != expected:
            raise IncompatibleLibraryError(f"the encoder built on a Ray worker ({self.encoder.info}) differs "
                                           f"from the driver's ({expected})")

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ok = batch["error"] == ""
        dim = self.encoder.info.dim
        vectors = np.zeros((len(ok), dim), np.float32)
        seconds = 0.0
        if ok.any():
            vectors[ok], seconds = embed_windows(self.encoder, np.asarray(batch["samples"])[ok])
        cols = {k: pa.array(batch[k].tolist() if batch[k].dtype == object else batch[k]) for k in _KEYS}
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
        cols["model_s"] = pa.array(np.full(len(ok), seconds / max(1, len(ok))))
        return pa.table(cols)


def ray_driver(factory: EncoderFactory, options: RayOptions = RayOptions()
               ) -> Callable[[CommitStage, Encoder, float, float, IndexConfig], None]:
    """A pipeline.EmbedDriver that runs decode and embedding on Ray (see the module docstring). Checks now
    that ray is installed and that an explicit address answers: before the archive is scanned and hashed."""
    if not _import_ray().is_initialized():
        check_address(options.address)

    def run(commit: CommitStage, encoder: Encoder, window_s: float, hop_s: float, config: IndexConfig) -> None:
        started = connect(options.address)
        ray = _import_ray()
        try:
            _run(ray, commit, factory, encoder.info, window_s, hop_s, config, options)
        finally:
            if started:
                disconnect()

    return run


def _threads_env(threads: int) -> dict[str, dict[str, str]] | None:
    """A runtime env that gives the actor's model ``threads`` CPU threads (torch and BLAS read these at import)."""
    if threads <= 0:
        return None
    n = str(threads)
    return {"env_vars": {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}}


def pool_size(resources: Mapping[str, float], options: RayOptions) -> tuple[int, float]:
    """(embedding actors, GPUs per actor) for a cluster with ``resources``. Refuses a pool the cluster cannot
    hold: Ray Data would wait forever for actors it cannot place, or for a CPU left to decode on."""
    cpus, cluster_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if cluster_gpus else 0.0)
    workers = options.workers or (max(1, int(cluster_gpus / gpus)) if gpus else 1)
    if workers * gpus > cluster_gpus:
        raise UsageError(f"{workers} embedding actor(s) with {gpus:g} GPU(s) each need {workers * gpus:g} GPUs; "
                         f"the Ray cluster has {cluster_gpus:g} (lower --ray-gpus or --ray-workers)")
    reserved = workers * options.cpus_per_worker
    if reserved + 1 > cpus:
        raise UsageError(f"{workers} embedding actor(s) reserve {reserved:g} CPU(s) and decoding needs 1 more; "
                         f"the Ray cluster has {cpus:g} (lower --ray-workers or add CPUs)")
    return workers, gpus


def _run(ray: ModuleType, commit: CommitStage, factory: EncoderFactory, info: EncoderInfo,
         window_s: float, hop_s: float, config: IndexConfig, options: RayOptions) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    workers, gpus = pool_size(ray.cluster_resources(), options)
    jobs = commit.jobs
    items = [{"job": i, "path": j.path, "size": j.source.size, "mtime": j.source.mtime}
             for i, j in enumerate(jobs)]
    spec = DecodeSpec(info.sample_rate, window_s, hop_s, config.batch_size)
    # The retry bounds go through map_batches' **ray_remote_args, the only way Ray Data (2.40-2.63) takes
    # them; Ray 2.60 marks that deprecated (removal announced for 2.64).
    ds = (ray.data.from_items(items, override_num_blocks=min(len(items), 10_000))
          .map_batches(decode_task, fn_kwargs={"spec": spec}, batch_size=1, num_cpus=1,
                       memory=_decode_memory(spec), max_retries=MAX_RETRIES)
          .map_batches(EmbedActor, fn_constructor_args=(factory, options.device, info), batch_size=config.batch_size,
                       compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus,
                       num_cpus=options.cpus_per_worker, runtime_env=_threads_env(options.threads_per_worker),
                       max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES))
    before = set(threading.enumerate())
    batches = iter(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    finished = False
    try:
        for table in batches:
            absorb_vectors(commit, table, info.dim)
            commit.finish_ready()
        commit.finish_ready()
        if not commit.all_done:
            left = [jobs[i].path for i in range(commit.next_job, len(jobs)) if not commit.is_failed(i)]
            raise SongseekError(f"the Ray job ended with {len(left)} file(s) incomplete (first: {left[:1]}); "
                                "the files before them are committed: run the same index again to finish")
        finished = True
    except ray.exceptions.RayError as exc:  # first: a RayTaskError is also an instance of the error it wraps
        commit.maybe_commit(force=True)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, SongseekError):  # e.g. weights not found on a worker: the loader's own line
            raise cause from None
        raise SongseekError(f"the Ray job stopped ({ray_error_line(exc)}); the files finished before it are "
                            "committed: run the same index again to resume") from None
    except SongseekError:
        commit.maybe_commit(force=True)
        raise
    finally:
        with interrupts_held():  # a second Ctrl-C waits for this (bounded) clean-up
            if isinstance(batches, Generator):  # stop the streaming executor now, not when garbage collected
                batches.close()
            if not finished:
                wait_for_ray_data_threads(before)


# Ray Data's threads of one iteration (iter_batches' workers and prefetcher, the executor, its metadata
# fetcher). After a stop mid-iteration they wind down on their own, a few 0.1 s polls later.
RAY_DATA_THREADS = ("iter_threaded", "Prefetcher", "ray-data-metadata-prefetch", "StreamingExecutor-")


def wait_for_ray_data_threads(before: set[threading.Thread], timeout_s: float = 10.0) -> list[str]:
    """Join Ray Data's threads started since ``before`` (at most ``timeout_s`` in all); returns the names of
    those still alive. Why: one still inside ray.get() when the driver calls ray.shutdown() makes Ray end
    the process with exit 1 ("The core worker has already been shutdown"), so a Ctrl-C or an error near the
    end of a run lost its "interrupted: N of M committed" line (seen on a fast CI machine)."""
    deadline = time.monotonic() + timeout_s
    for t in set(threading.enumerate()) - before:
        if t.name.startswith(RAY_DATA_THREADS) and t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))
    return sorted(t.name for t in set(threading.enumerate()) - before
                  if t.name.startswith(RAY_DATA_THREADS) and t.is_alive())


def ray_error_line(exc: BaseException) -> str:
    """A Ray error in one line: its class and the first line of its message (Ray's carry tracebacks)."""
    cause = getattr(exc, "cause", None)
    shown = cause if isinstance(cause, BaseException) else exc
    first = next((line.strip() for line in str(shown).splitlines() if line.strip()), "")
    return f"{type(shown).__name__}: {first}" if first else type(shown).__name__


def absorb_vectors(commit: CommitStage, table: pa.Table, dim: int) -> None:
    """Hand one table of vectors from the actors to the commit stage."""
    commit.report.model_seconds += float(pc.sum(table.column("model_s")).as_py() or 0.0)
    vectors = table.column("vector").combine_chunks().values.to_numpy().reshape(len(table), dim)
    rows = table.select(list(_KEYS)).to_pylist()
    for r, vec in zip(rows, vectors, strict=True):
        i = r["job"]
        if r["error"]:
            path = commit.jobs[i].path
            if r["missing"] and os.path.lexists(path):
                # Not a bad file: a node without the archive mounted. Recording it as a failure would make
                # every later run skip it as a known failure, so the run stops here instead.
                raise SongseekError(f"a Ray worker cannot see {path}, which exists on this machine: every node "
                                    "must see the archive at the same path (a shared mount; docs/ray.md)")
            commit.fail(i, r["error_class"], r["error"])
            continue
        commit.window(i, r["n"], r["start_s"], r["end_s"])
        commit.vector(i, r["n"], vec)
        if r["total"]:
            commit.decoded(i, r["total"], r["length_s"] or None)


def cluster_resources() -> dict[str, float]:
    """The connected cluster's total resources (CPU, GPU, memory...)."""
    return {k: float(v) for k, v in _import_ray().cluster_resources().items()}
