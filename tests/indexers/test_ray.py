"""`index_paths` with decode and embedding on Ray (one local Ray with 2 CPUs for the session): the library
equals the threaded indexer's, re-runs classify the same way, and killed actors, decode workers and drivers
lose nothing and duplicate nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import MissingDependencyError
from songseek.engine.query.search import Library
from songseek.indexers.pipeline import IndexConfig, IndexReport, index_paths
from songseek.indexers.ray_runner import EncoderSpec, RayOptions, connect, ray_driver

from . import ray_helpers
from .ray_helpers import LONG_RUN, KillOnce, assert_same_library, make_music, wait_for_first_commit

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")
needs_ray = pytest.mark.usefixtures("ray_cluster")
CONFIG = IndexConfig(window_s=4.0, hop_s=2.0, batch_size=3, commit_every_files=2)
CLI = "import sys; sys.modules['torch'] = None; from songseek.cli.main import app; app()"


def counts(r: IndexReport) -> tuple[int, ...]:
    return r.added, r.changed, r.moved, r.removed, r.unchanged, r.failed, r.windows


def both(src: Path, tmp: Path, **ray_kw: Any) -> tuple[IndexReport, IndexReport]:
    """Index ``src`` into tmp/threads and (on Ray) tmp/ray, new or existing."""
    single = index_paths([src], tmp / "threads", FakeEncoder(), CONFIG)
    on_ray = index_paths([src], tmp / "ray", FakeEncoder(), CONFIG, driver=ray_driver(EncoderSpec("fake"),
                                                                                     RayOptions(**ray_kw)))
    return single, on_ray


@needs_ray
def test_ray_library_equals_the_threaded_one_and_reruns_classify_the_same(tmp_path: Path) -> None:
    src = tmp_path / "music"
    files = make_music(src, [3.0, 9.5, 14.0, 6.0, 1.5])
    shutil.copy(files[1], src / "same content.wav")     # the track-id rule: same content at two paths
    (src / "broken.wav").write_bytes(b"RIFF not really audio")
    single, on_ray = both(src, tmp_path)
    assert counts(on_ray) == counts(single) and on_ray.added == 6 and on_ray.failed == 1
    assert_same_library(tmp_path / "ray", tmp_path / "threads")
    ids = {Path(p).name: r["track_id"] for p, r in ray_helpers.snapshot(tmp_path / "ray").tracks.items()}
    assert ids["t01.wav"].startswith(ids["same content.wav"] + "-")  # the second in scan order: a suffix

    # Move one, change one, delete one, add one: both indexers classify and embed the same way.
    (src / "t00.wav").rename(src / "moved.wav")
    make_music(tmp_path / "other", [11.0], seed=5)[0].replace(src / "t02.wav")
    (src / "t03.wav").unlink()
    make_music(tmp_path / "new", [7.0], seed=9)[0].replace(src / "new.wav")
    single, on_ray = both(src, tmp_path)
    assert counts(single) == (1, 1, 1, 1, 3, 0, counts(single)[-1])  # broken.wav: a known failure, skipped
    assert counts(on_ray) == counts(single)
    assert_same_library(tmp_path / "ray", tmp_path / "threads")


@needs_ray
def test_a_killed_embedding_actor_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    src = tmp_path / "music"
    make_music(src, [9.0, 12.0, 5.0, 16.0, 7.0, 10.0])
    index_paths([src], tmp_path / "want", FakeEncoder(), CONFIG)
    marker = tmp_path / "killed"
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(ray_helpers)  # the test's encoder travels by value to the actor
    r = index_paths([src], tmp_path / "got", FakeEncoder(), CONFIG,
                    driver=ray_driver(KillOnce(str(marker), at=3), RayOptions(workers=1)))
    killed = int(marker.read_text())
    pids = [int(p) for p in Path(str(marker) + ".pids").read_text().split()]
    assert killed in pids and len(set(pids)) >= 2      # the actor died by SIGKILL; Ray started another
    assert (r.added, r.failed) == (6, 0)
    assert_same_library(tmp_path / "got", tmp_path / "want")


def _kill_decode_workers(stop: threading.Event, killed: list[int]) -> None:
    """Send SIGKILL to the first process seen running a decode task (Ray titles it after the task)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"ray::" in cmd and b"decode_task" in cmd:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.002)


@needs_ray
def test_a_killed_decode_worker_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    src = tmp_path / "music"
    make_music(src, [60.0] * 10, sample_rate=48000)  # resampled to 16 kHz: each decode task takes a while
    index_paths([src], tmp_path / "want", FakeEncoder(), CONFIG)
    stop, killed = threading.Event(), list[int]()
    killer = threading.Thread(target=_kill_decode_workers, args=(stop, killed))
    killer.start()
    try:
        r = index_paths([src], tmp_path / "got", FakeEncoder(), CONFIG, driver=ray_driver(EncoderSpec("fake")))
    finally:
        stop.set()
        killer.join()
    assert killed, "no decode task was seen running: the kill was not exercised"
    assert (r.added, r.failed) == (10, 0)
    assert_same_library(tmp_path / "got", tmp_path / "want")


@needs_ray
def test_a_killed_driver_leaves_its_last_commit_and_the_rerun_embeds_only_the_rest(
        tmp_path: Path, ray_cluster: str) -> None:
    src = tmp_path / "music"
    lengths, rate = LONG_RUN
    make_music(src, lengths, sample_rate=rate)
    index_paths([src], tmp_path / "want", FakeEncoder(), CONFIG)
    lib = tmp_path / "got"
    cmd = [sys.executable, "-c", CLI, "index", str(src), "--library", str(lib), "--encoder", "fake",
           "--window", "4", "--hop", "2", "--batch-size", "3", "--commit-every", "1", "--ray", ray_cluster]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_first_commit(proc, lib)  # kill -9 once a commit holds at least one track
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    # 24 long files committed one by one: a run that ends before the kill after its first commit (or whose
    # first commit holds every file) did not commit as it went; before, it was skipped and passed
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    committed = Library.open(lib).n_tracks
    assert 1 <= committed < len(lengths)
    r = index_paths([src], lib, FakeEncoder(), CONFIG, driver=ray_driver(EncoderSpec("fake")))
    # committed files are not re-embedded
    assert (r.unchanged, r.added, r.failed) == (committed, len(lengths) - committed, 0)
    assert_same_library(lib, tmp_path / "want")


def test_without_ray_installed_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'songseek\[ray\]'"):
        connect("local")
