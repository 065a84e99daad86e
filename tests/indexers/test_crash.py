"""Crash safety for real: `songseek index` in a subprocess, killed with SIGKILL at seeded random moments
(and made to die at exact points of a commit), then resumed; the result must equal a one-run build.
Also: searches while an indexer runs, and a second indexer on the same library.

The subprocess runs the real CLI (`songseek.cli.main:app`) with torch masked out of sys.modules: the fake
encoder needs no torch, and importing it would cost seconds per start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import LibraryError
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.query.stats import library_stats
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.repair import verify_library
from songseek.indexers.pipeline import IndexConfig, index_paths

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")
SR = 16000
CLI = "import sys; sys.modules['torch'] = None; {patch}; from songseek.cli.main import app; app()"


def make_music(folder: Path, n: int = 20, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    files = []
    for i in range(n):
        t = np.arange(int(SR * rng.uniform(3, 35))) / SR
        x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(len(t))
        files.append(folder / f"t{i:02d}.wav")
        sf.write(files[-1], x.astype(np.float32), SR)
    return files


def index_cmd(music: Path, lib: Path, patch: str = "pass") -> list[str]:
    return [sys.executable, "-c", CLI.format(patch=patch), "index", str(music), "--library", str(lib),
            "--encoder", "fake", "--device", "cpu", "--commit-every", "1", "--workers", "2", "--json"]


def snapshot(lib: Path) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """path -> (content hash, frame times (T, 2), vectors (T, dim)) of every live track."""
    library = Library.open(lib)
    out = {}
    for row in library.tracks.to_pylist():
        s, c = row["frame_start"], row["frame_count"]
        times = np.stack([library.store.start_s[s:s + c], library.store.end_s[s:s + c]], axis=1)
        out[row["path"]] = (row["content_hash"], times, np.array(library.store.vectors(s, c)))
    return out


def assert_subset(part: dict, full: dict) -> None:
    assert set(part) <= set(full)
    for p, (h, times, vecs) in part.items():
        assert h == full[p][0]
        np.testing.assert_array_equal(times, full[p][1])
        np.testing.assert_allclose(vecs, full[p][2], atol=1e-6)


def assert_complete(lib: Path, ref: dict) -> None:
    got = snapshot(lib)
    assert got.keys() == ref.keys()
    assert_subset(got, ref)
    library = Library.open(lib)
    stats = library_stats(library)
    assert stats.dead_frames == 0                          # no duplicate frame anywhere
    assert stats.index_frames == stats.frames and stats.failures == 0
    assert verify_library(lib) == []
    q = library.store.vectors(0, 1)
    assert library.search_vectors(q, SearchOptions(k=3, rerank="max"))[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("crash")
    music = root / "music"
    make_music(music)
    ref_lib = root / "ref"
    index_paths([music], ref_lib, FakeEncoder(), IndexConfig(commit_every_files=1))
    return music, snapshot(ref_lib)


# Each file takes its decoder at least 20 ms of wall time (2 decoders): the 20 files need 200 ms or more
# whatever the machine's speed, so a kill a few commits plus at most 30 ms in lands while the run is still
# going. Without it, a fast machine (or a disk whose fsync costs nothing) finished the whole run inside the
# random delay, and no attempt was killed at all. Decoding runs beside embedding and commits (threads), so
# the kill still lands anywhere in the main thread's work.
DECODE_FLOOR = ("import songseek.indexers.pipeline as p, time; real = p._decode_windows\n"
                "def f(*a):\n    time.sleep(0.02)\n    return real(*a)\n"
                "p._decode_windows = f")


def test_kill_9_at_random_moments_then_resume(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    music, ref = corpus
    lib = tmp_path / "lib"
    rng = np.random.default_rng(int(os.environ.get("SONGSEEK_CRASH_SEED", "1234")))  # seeded; override to explore
    kills = []
    for _attempt in range(4):
        proc = subprocess.Popen(index_cmd(music, lib, "exec(" + repr(DECODE_FLOOR) + ")"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        gen0 = read_manifest(lib).generation if (lib / "manifest.json").exists() else 0
        target = gen0 + int(rng.integers(1, 6))
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if read_manifest(lib).generation >= target:
                    break
            except LibraryError:
                pass
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0, 0.03)))           # land anywhere: embedding, mid-commit, index
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        # Right after the kill: the library opens at its last commit, which is a prefix of the full build.
        part = snapshot(lib)
        assert_subset(part, ref)
        assert verify_library(lib) == []
        m = read_manifest(lib)
        left = sorted({p.name for p in lib.iterdir()} - {".lock", "manifest.json", *m.files(), *m.previous_files})
        kills.append((proc.returncode, len(part), left))
    assert any(rc == -signal.SIGKILL for rc, _, _ in kills)
    done = subprocess.run(index_cmd(music, lib), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_complete(lib, ref)
    print("kills (returncode, tracks committed, uncommitted files left):", kills)


# Deterministic deaths at the exact points of a commit (os._exit: no cleanup, like a power cut):
# after a temporary file is complete but before its rename; after the shard, failures and tracks files
# are renamed but before the manifest swap; after the index is saved but before its manifest.
DEATHS = {
    "tmp-file-written": ("import songseek.engine.storage.store as s, os; real = s.file_sha256; n = [0]\n"
                         "def f(p):\n    n[0] += 1\n    os._exit(9) if n[0] == 7 else None\n    return real(p)\n"
                         "s.file_sha256 = f"),
    "before-manifest-swap": ("import songseek.engine.storage.writer as w, os; real = w.write_manifest; n = [0]\n"
                             "def f(r, m):\n    n[0] += 1\n    os._exit(9) if n[0] == 4 else None\n"
                             "    return real(r, m)\nw.write_manifest = f"),
    "index-saved-not-committed": ("import songseek.engine.storage.index as ix, os; real = ix.save_index\n"
                                  "def f(i, p):\n    real(i, p); os._exit(9)\nix.save_index = f"),
}


def test_deaths_at_exact_commit_points(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    """Die at each point in turn on one library (each run resumes the last), then finish."""
    music, ref = corpus
    lib = tmp_path / "lib"
    for where in ("tmp-file-written", "before-manifest-swap", "index-saved-not-committed"):
        patch = "exec(" + repr(DEATHS[where]) + ")"
        died = subprocess.run(index_cmd(music, lib, patch), capture_output=True, text=True, timeout=120)
        assert died.returncode == 9, (where, died.stderr)
        m = read_manifest(lib)
        leftovers = {p.name for p in lib.iterdir()} - {".lock", "manifest.json", *m.files(), *m.previous_files}
        assert leftovers, f"dying at {where} should leave uncommitted files behind"
        assert_subset(snapshot(lib), ref)
        assert verify_library(lib) == []
        if where == "index-saved-not-committed":
            stats = library_stats(Library.open(lib))
            assert stats.index_status.startswith(("none yet", "behind by")), stats.index_status
    done = subprocess.run(index_cmd(music, lib), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    m = read_manifest(lib)  # crash leftovers are gone (their names may be reused by the resumed commits)
    assert {p.name for p in lib.iterdir()} == {".lock", "manifest.json", *m.files(), *m.previous_files}
    assert_complete(lib, ref)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds temporary files via /proc")
def test_full_disk_mid_run_then_rerun(corpus: tuple[Path, dict], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on the 9th temporary-file fsync of a run (inside the 3rd commit): the run stops with the
    disk-full message, the library opens at its last generation, and the rerun completes."""
    import errno

    from songseek.engine.errors import LibraryError as LibErr

    music, ref = corpus
    lib = tmp_path / "lib"
    real_fsync, calls = os.fsync, [0]

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith("."):
            calls[0] += 1
            if calls[0] == 9:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(LibErr, match="the disk is full; the library still holds its last committed state"):
        index_paths([music], lib, FakeEncoder(), IndexConfig(commit_every_files=1))
    monkeypatch.setattr(os, "fsync", real_fsync)
    part = snapshot(lib)
    assert 0 < len(part) < len(ref)
    assert_subset(part, ref)
    assert verify_library(lib) == []
    r = index_paths([music], lib, FakeEncoder(), IndexConfig(commit_every_files=1))
    assert r.added == len(ref) - len(part)
    assert_complete(lib, ref)


def test_ctrl_c_commits_the_finished_files(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) after the 5th finished file: exit 130, and those 5 files are committed even though
    the commit interval (100 files) was not reached."""
    music, ref = corpus
    lib = tmp_path / "lib"
    # A child started from a background job inherits SIGINT ignored (Python then installs no handler):
    # restore the handler a terminal's Ctrl-C meets, so the test does not depend on how it was launched.
    patch = ("import songseek.engine.storage.writer as w, os, signal; real = w.LibraryWriter.add_track; n = [0]\n"
             "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
             "def f(self, *a):\n"
             "    real(self, *a); n[0] += 1\n"
             "    os.kill(os.getpid(), signal.SIGINT) if n[0] == 5 else None\n"
             "w.LibraryWriter.add_track = f")
    cmd = index_cmd(music, lib, "exec(" + repr(patch) + ")")
    cmd[cmd.index("--commit-every") + 1] = "100"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 130 and "interrupted" in out.stderr, out.stderr
    part = snapshot(lib)
    assert len(part) == 5
    assert_subset(part, ref)
    assert index_paths([music], lib, FakeEncoder(), IndexConfig()).added == len(ref) - len(part)
    assert_complete(lib, ref)


# The indexer holds each of its first commits (the empty one and those of its first 3 tracks) until the test
# has opened that generation (a file named after the generation in ACKS), for at most 60 s; from the 4th
# track on it runs free. Without it a fast machine indexed all 20 files before the test's second search.
SEEN_BY_TEST = ("import songseek.engine.storage.writer as w, os, time; real = w.LibraryWriter.commit\n"
                "def seen(g):\n"
                "    return any(int(n) >= g for n in os.listdir(ACKS))\n"
                "def f(self):\n"
                "    real(self)\n"
                "    g, end = self.manifest.generation, time.monotonic() + 60\n"
                "    while len(self.tracks) <= 3 and not seen(g) and time.monotonic() < end:\n"
                "        time.sleep(0.005)\n"
                "w.LibraryWriter.commit = f")


def test_searches_during_indexing_and_a_second_indexer(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    music, ref = corpus
    lib = tmp_path / "lib"
    acks = tmp_path / "acks"
    acks.mkdir()
    patch = f"ACKS = {str(acks)!r}; exec({SEEN_BY_TEST!r})"
    proc = subprocess.Popen(index_cmd(music, lib, patch), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not (lib / "manifest.json").exists():
            assert proc.poll() is None
            time.sleep(0.005)
        second_proc = subprocess.Popen(index_cmd(music, lib), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
        seen: list[int] = []
        searches = 0
        while proc.poll() is None:
            library = Library.open(lib)
            n = library.n_tracks
            assert not seen or n >= seen[-1]
            seen.append(n)
            if n:
                q = library.store.vectors(int(library.tracks.column("frame_start")[0].as_py()), 1)
                hits = library.search_vectors(q, SearchOptions(k=3, rerank="max"))[0]
                assert hits and all(h.path in ref for h in hits)
                searches += 1
            assert_subset(snapshot(lib), ref)
            (acks / str(library.manifest.generation)).touch()  # seen: the indexer may go on
    finally:
        proc.wait(300)
    assert proc.returncode == 0
    _, second_err = second_proc.communicate(timeout=120)
    print("second indexer:", second_proc.returncode, second_err.strip().splitlines()[-1:])
    if second_proc.returncode != 0:  # it raced the first indexer (it may also start after the first finished)
        assert second_proc.returncode == 2
        assert (f"is being written by songseek pid {proc.pid}; wait for it to finish and try again (index, "
                "ingest, repair") in second_err
    print(f"searches during indexing: {searches}, track counts seen: {sorted(set(seen))}")
    assert searches >= 2 and len(set(seen)) >= 3, seen
    assert_complete(lib, ref)


def flock_waiters() -> set[int] | None:
    """The pids waiting for an flock ("->" lines of /proc/locks); None where /proc/locks does not list this
    process's own flocks (not Linux, or a kernel that does not say)."""
    try:
        rows = [ln.split() for ln in Path("/proc/locks").read_text().splitlines()]
    except OSError:
        return None
    if not any(r[1:2] == ["FLOCK"] and r[4:5] == [str(os.getpid())] for r in rows):
        return None
    return {int(r[5]) for r in rows if r[1:3] == ["->", "FLOCK"] and len(r) > 5}


def test_kill_9_of_a_waiting_indexer_leaves_no_trace(corpus: tuple[Path, dict], tmp_path: Path) -> None:
    """A second indexer killed while it waits (--wait) for the lock changes nothing."""
    music, ref = corpus
    lib = tmp_path / "lib"
    index_paths([music], lib, FakeEncoder(), IndexConfig())
    before = read_manifest(lib)
    from songseek.engine.storage.writer import acquire_lock

    fd = acquire_lock(lib)
    try:
        waiter = subprocess.Popen(index_cmd(music, lib) + ["--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if flock_waiters() is None:
            time.sleep(1.0)  # nothing to watch: give it a second to reach the lock
        else:  # until it waits on the lock (after a fixed second, a slow machine was still starting it)
            deadline = time.monotonic() + 120
            while waiter.poll() is None and time.monotonic() < deadline \
                    and waiter.pid not in (flock_waiters() or set()):
                time.sleep(0.01)
            assert waiter.pid in (flock_waiters() or set()), "the second indexer never waited on the lock"
        assert waiter.poll() is None                       # still waiting
        waiter.send_signal(signal.SIGKILL)
        waiter.wait(10)
    finally:
        os.close(fd)
    assert read_manifest(lib) == before
    assert_complete(lib, ref)
