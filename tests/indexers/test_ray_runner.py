"""The Ray runner's edges, on the session's local Ray (2 CPUs): what a user sees when the cluster cannot hold
the pool, an address does not answer, ray is missing, an actor keeps dying, a worker cannot see a file, or
the run is interrupted; and that each actor builds its model once, with the threads --ray-threads asks for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders import Encoder
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import MissingDependencyError, SongseekError, UsageError
from songseek.engine.query.search import Library
from songseek.indexers.pipeline import IndexConfig, IndexReport, index_paths
from songseek.indexers.ray_runner import (
    DecodeSpec,
    EmbedActor,
    EncoderSpec,
    RayOptions,
    absorb_vectors,
    decode_task,
    interrupts_held,
    pool_size,
    probe_address,
    ray_driver,
    wait_for_ray_data_threads,
)
from songseek.indexers.stages import CommitStage
from tests.indexers.ray_helpers import LONG_RUN, assert_same_library, make_music, snapshot

needs_ray = pytest.mark.usefixtures("ray_cluster")
CONFIG = IndexConfig(window_s=4.0, hop_s=2.0, batch_size=3, commit_every_files=1)
CLI = "import sys; sys.modules['torch'] = None; from songseek.cli.main import app; app()"
# A child started from a background job (nohup, `&`) inherits SIGINT ignored and Python then installs no
# handler: restore the one a terminal's Ctrl-C meets, or the interrupt is lost and the run just finishes.
CLI_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); " + CLI


def bounded(fn: Callable[[], IndexReport], seconds: float) -> IndexReport | BaseException:
    """``fn()``'s result or exception; fails the test when it runs past ``seconds`` (the old runner hung)."""
    out: list[IndexReport | BaseException] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"still running after {seconds} s"
    return out[0]


def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    """stderr's lines, less the fake encoder's random-weights warning."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("warning: random weights")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_cpus(ray_cluster: str, want: float = 2.0, seconds: float = 30) -> float:
    """The cluster's free CPUs once they reach ``want`` (the job's workers are gone), or after ``seconds``."""
    import ray

    deadline = time.monotonic() + seconds
    while True:
        free = float(ray.available_resources().get("CPU", 0))
        if free >= want or time.monotonic() > deadline:
            return free
        time.sleep(0.2)


# --- sizing the pool: refused in one line instead of a run that waits forever -----------------------------

def test_pool_size_defaults_and_what_the_cluster_cannot_hold() -> None:
    assert pool_size({"CPU": 2}, RayOptions()) == (1, 0.0)
    assert pool_size({"CPU": 16, "GPU": 2}, RayOptions()) == (2, 1.0)          # one actor per GPU
    assert pool_size({"CPU": 16, "GPU": 1}, RayOptions(gpus_per_worker=0.5)) == (2, 0.5)
    assert pool_size({"CPU": 16, "GPU": 2}, RayOptions(workers=3, gpus_per_worker=0)) == (3, 0.0)
    with pytest.raises(UsageError, match="decoding needs 1 more; the Ray cluster has 2"):
        pool_size({"CPU": 2}, RayOptions(workers=2))
    with pytest.raises(UsageError, match="need 1 GPUs; the Ray cluster has 0"):
        pool_size({"CPU": 8}, RayOptions(gpus_per_worker=1.0))
    with pytest.raises(UsageError, match="the Ray cluster has 1"):
        pool_size({"CPU": 1}, RayOptions())                                   # no CPU left to decode on


@needs_ray
@pytest.mark.parametrize("option", [["--ray-workers", "2"], ["--ray-gpus", "1"]])
def test_a_pool_the_cluster_cannot_hold_fails_in_one_line(tmp_path: Path, ray_cluster: str,
                                                          option: list[str]) -> None:
    make_music(tmp_path / "music", [5.0])
    try:
        r = cli("index", str(tmp_path / "music"), "--library", str(tmp_path / "lib"), "--encoder", "fake",
                "--ray", ray_cluster, *option, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"index --ray {' '.join(option)} on a 2-CPU, GPU-less cluster was still waiting after 60 s")
    lines = error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert "the Ray cluster has" in lines[0]


# --- connecting ---------------------------------------------------------------------------------------------

def test_probe_address_refuses_a_closed_port_and_a_malformed_address() -> None:
    probe_address("local")
    probe_address("auto")
    with pytest.raises(UsageError, match="no Ray cluster answers at 127.0.0.1:"):
        probe_address(f"127.0.0.1:{free_port()}")
    with pytest.raises(UsageError, match="give 'local', 'auto'"):
        probe_address("host:port")


def test_an_address_that_does_not_answer_fails_fast_before_the_archive_is_scanned(tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    make_music(tmp_path / "music", [5.0])
    t0 = time.monotonic()
    try:
        r = cli("index", str(tmp_path / "music"), "--library", str(tmp_path / "lib"), "--encoder", "fake",
                "--ray", f"127.0.0.1:{free_port()}", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("index --ray ADDRESS with nothing listening was still waiting after 60 s")
    lines = error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("error: no Ray cluster answers at 127.0.0.1:")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "lib").exists()  # refused before the library was created or the files hashed


def test_without_ray_the_driver_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'songseek\[ray\]'"):
        ray_driver(EncoderSpec("fake"))


# --- actors: one model each, its threads, and one that keeps dying -----------------------------------------

@dataclass(frozen=True)
class Recording:
    """An EncoderFactory whose every build appends "PID OMP_NUM_THREADS" to ``log``; with ``die_at`` > 0 the
    encoder SIGKILLs its own process at that model call, in every actor (a worker that always crashes)."""

    log: str
    die_at: int = 0

    def __call__(self, device: str) -> Encoder:
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()} {os.environ.get('OMP_NUM_THREADS', '-')}\n")
        return _Dying(self.die_at)


class _Dying(FakeEncoder):
    def __init__(self, die_at: int) -> None:
        super().__init__()
        self.die_at, self.calls = die_at, 0

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().embed_audio(windows)


@pytest.fixture
def by_value() -> None:
    """This module's factories travel to the actors by value (the workers cannot import tests/)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@needs_ray
@pytest.mark.usefixtures("by_value")
def test_each_actor_builds_its_model_once_with_the_threads_asked_for(tmp_path: Path) -> None:
    src = tmp_path / "music"
    make_music(src, [9.0, 12.0, 5.0, 16.0, 7.0, 10.0])
    log = tmp_path / "builds"
    r = index_paths([src], tmp_path / "lib", FakeEncoder(), CONFIG,
                    driver=ray_driver(Recording(str(log)), RayOptions(workers=1, threads_per_worker=3)))
    assert (r.added, r.failed) == (6, 0)
    assert log.read_text().split() == [log.read_text().split()[0], "3"]  # one build (of 6 files), 3 threads


@needs_ray
@pytest.mark.usefixtures("by_value")
def test_an_actor_that_keeps_dying_stops_the_run_in_one_line_and_a_rerun_finishes(
        tmp_path: Path, ray_cluster: str) -> None:
    src = tmp_path / "music"
    make_music(src, [9.0, 12.0, 5.0])
    index_paths([src], tmp_path / "want", FakeEncoder(), CONFIG)
    lib, log = tmp_path / "got", tmp_path / "builds"
    got = bounded(lambda: index_paths([src], lib, FakeEncoder(), CONFIG, driver=ray_driver(
        Recording(str(log), die_at=1), RayOptions(workers=1))), 150)
    assert isinstance(got, SongseekError), got
    assert "the Ray job stopped" in str(got) and "\n" not in str(got)
    assert 2 <= len(log.read_text().splitlines()) <= 5       # restarted, but a bounded number of times
    assert Library.open(lib).n_tracks == 0                    # the last commit: the new, empty library
    assert wait_for_cpus(ray_cluster) == 2.0                  # the job's workers are gone
    r = index_paths([src], lib, FakeEncoder(), CONFIG, driver=ray_driver(EncoderSpec("fake")))
    assert (r.added, r.failed) == (3, 0)
    assert_same_library(lib, tmp_path / "want")


# --- a worker that cannot see a file -------------------------------------------------------------------------

def blind_worker(hidden: set[str]) -> Callable[[CommitStage, Encoder, float, float, IndexConfig], None]:
    """A driver that runs the Ray stages in this process, on a "worker" that sees none of ``hidden``
    (the paths are renamed away while it decodes them, then put back), and hands their output to the
    commit stage as the Ray driver does."""

    def run(commit: CommitStage, encoder: Encoder, window_s: float, hop_s: float, config: IndexConfig) -> None:
        spec = DecodeSpec(encoder.info.sample_rate, window_s, hop_s, config.batch_size)
        actor = EmbedActor(lambda device: FakeEncoder(), "cpu", encoder.info)
        for i, job in enumerate(commit.jobs):
            batch = {"job": np.array([i]), "path": np.array([job.path], dtype=object),
                     "size": np.array([job.source.size]), "mtime": np.array([job.source.mtime])}
            away = Path(job.path + ".away")
            if job.path in hidden:
                Path(job.path).rename(away)
            try:
                blocks = list(decode_task(batch, spec))
            finally:
                if away.exists():
                    away.rename(job.path)
            for block in blocks:
                absorb_vectors(commit, actor(block), encoder.info.dim)
            commit.finish_ready()

    return run


def test_a_worker_that_cannot_see_a_file_stops_the_run_and_keeps_what_was_finished(tmp_path: Path) -> None:
    src = tmp_path / "music"
    files = make_music(src, [9.0, 12.0, 5.0])
    lib = tmp_path / "lib"
    with pytest.raises(SongseekError, match=rf"a Ray worker cannot see {files[1]}, which exists on this machine"):
        index_paths([src], lib, FakeEncoder(), CONFIG, driver=blind_worker({str(files[1])}))
    assert Library.open(lib).n_tracks == 1 and snapshot(lib).failures == {}  # t00 committed; no failure kept
    r = index_paths([src], lib, FakeEncoder(), CONFIG, driver=blind_worker(set()))
    assert (r.unchanged, r.added, r.failed, r.skipped_failed) == (1, 2, 0, 0)


def test_a_file_gone_everywhere_is_a_failure_as_without_ray(tmp_path: Path) -> None:
    src = tmp_path / "music"
    files = make_music(src, [9.0, 12.0])

    def vanishing(commit: CommitStage, encoder: Encoder, window_s: float, hop_s: float,
                  config: IndexConfig) -> None:
        files[0].unlink()  # deleted after the scan, before a worker reads it
        blind_worker(set())(commit, encoder, window_s, hop_s, config)

    r = index_paths([src], tmp_path / "lib", FakeEncoder(), CONFIG, driver=vanishing)
    assert (r.added, r.failed) == (1, 1) and r.failures[0].path == str(files[0])


# --- Ctrl-C ------------------------------------------------------------------------------------------------

def test_a_ctrl_c_while_interrupts_are_held_is_raised_when_the_block_ends() -> None:
    before = signal.getsignal(signal.SIGINT)
    finished = []
    seen: list[int] = []
    try:
        # the handler a terminal's Ctrl-C meets (pytest started from a background job has SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the middle of ray.shutdown()
                time.sleep(0.05)
                finished.append(True)
        assert finished == [True] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with interrupts_held():  # no Ctrl-C: nothing raised
            pass
        # a handler of the caller's own gets the held signal once, after the block
        signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert seen == []
        assert seen == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job: ignored before, ignored after
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, before)
    out: list[BaseException] = []

    def in_a_thread() -> None:  # signals reach the main thread only: a thread's block runs as is
        try:
            with interrupts_held():
                finished.append(True)
        except BaseException as exc:
            out.append(exc)
    t = threading.Thread(target=in_a_thread)
    t.start()
    t.join()
    assert out == [] and finished == [True, True]


def test_ray_data_threads_started_by_the_run_are_waited_for_and_others_are_not() -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    quick = threading.Thread(target=time.sleep, args=(0.3,), name="iter_threaded", daemon=True)
    stuck = threading.Thread(target=release.wait, name="StreamingExecutor-x", daemon=True)
    other = threading.Thread(target=release.wait, name="someone-else", daemon=True)
    for t in (quick, stuck, other):
        t.start()
    t0 = time.monotonic()
    left = wait_for_ray_data_threads(before, timeout_s=1.0)
    waited = time.monotonic() - t0
    release.set()
    assert not quick.is_alive() and left == ["StreamingExecutor-x"]  # joined; bounded by the timeout
    assert 0.3 <= waited < 5.0  # not waited on someone-else's thread past the one timeout


# Ctrl-C from inside the driver once its first file is finished (the main thread, mid-iteration: Ray Data's
# threads are busy), not from the test after a poll: a fast machine had finished the whole job by then, and
# the interrupt landed in the job's last moments.
_CTRL_C_AFTER_FIRST_FILE = (
    "import os, signal; import songseek.indexers.stages as st; real = st.CommitStage.finish_ready; sent = []\n"
    "def f(self):\n"
    "    real(self)\n"
    "    if self.next_job >= 1 and not sent:\n"
    "        sent.append(1); os.kill(os.getpid(), signal.SIGINT)\n"
    "st.CommitStage.finish_ready = f\n")


@needs_ray
def test_ctrl_c_stops_the_workers_and_leaves_a_library_the_rerun_finishes(tmp_path: Path, ray_cluster: str) -> None:
    src = tmp_path / "music"
    lengths, rate = LONG_RUN
    make_music(src, lengths, sample_rate=rate)
    index_paths([src], tmp_path / "want", FakeEncoder(), CONFIG)
    lib = tmp_path / "got"
    cli = f"exec({_CTRL_C_AFTER_FIRST_FILE!r}); " + CLI_CTRL_C
    proc = subprocess.run([sys.executable, "-c", cli, "index", str(src), "--library", str(lib), "--encoder",
                           "fake", "--window", "4", "--hop", "2", "--batch-size", "3", "--commit-every", "1",
                           "--ray", ray_cluster], capture_output=True, text=True, timeout=180)
    err = proc.stderr
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("interrupted"), err[-2000:]
    committed = Library.open(lib).n_tracks
    assert 1 <= committed < len(lengths)  # stopped after its first file: the rest is left to the rerun
    assert wait_for_cpus(ray_cluster) == 2.0  # the interrupted job's decode tasks and actors are gone
    r = index_paths([src], lib, FakeEncoder(), CONFIG, driver=ray_driver(EncoderSpec("fake")))
    assert (r.unchanged, r.added, r.failed) == (committed, len(lengths) - committed, 0)
    assert_same_library(lib, tmp_path / "want")
