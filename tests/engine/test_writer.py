"""LibraryWriter: atomic commits, checksums, full disk, orphans, the lock, index updates, wrong libraries."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.errors import IncompatibleLibraryError, LibraryError, LibraryLockedError
from songseek.engine.hashing import file_sha256
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage import manifest as manifest_mod
from songseek.engine.storage import store as store_mod
from songseek.engine.storage import writer as writer_mod
from songseek.engine.storage.manifest import Manifest, check_compatible, read_manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

DIM = 8
INFO = EncoderInfo(name="fake", checkpoint="fake", dim=DIM, sample_rate=16000)


def manifest(factory: str = "auto") -> Manifest:
    return Manifest(encoder=INFO, window_s=10.0, hop_s=10.0, index_factory=factory)


def frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts = np.arange(n) * 10.0
    return l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32)), starts, starts + 10.0


def add(w: LibraryWriter, rng: np.random.Generator, tid: str, n: int = 3) -> np.ndarray:
    vecs, s, e = frames(rng, n)
    w.add_track(TrackRecord(track_id=tid, path=f"/music/{tid}.wav", duration_s=float(e[-1])), vecs, s, e)
    return vecs


def live_vectors(lib: Library) -> dict[str, np.ndarray]:
    out = {}
    for tid, s, c in zip(lib.tracks.column("track_id").to_pylist(), lib.tracks.column("frame_start").to_pylist(),
                         lib.tracks.column("frame_count").to_pylist(), strict=True):
        out[tid] = np.array(lib.store.vectors(s, c))
    return out


def test_commit_is_atomic_and_records_checksums(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        a = add(w, rng, "a")
        w.commit()
        g1 = w.manifest.generation
        b = add(w, rng, "b", 5)
        w.commit()
        w.update_index()
    m = read_manifest(root)
    assert m.generation > g1
    for name in m.files():
        assert m.checksums[name] == file_sha256(root / name), name
    lib = Library.open(root)
    vecs = live_vectors(lib)
    np.testing.assert_array_equal(vecs["a"], a)
    np.testing.assert_array_equal(vecs["b"], b)
    # the tracks table carries the manifest of its generation (what `repair` rebuilds a lost manifest from)
    meta = store_mod.read_table_mmap(root / m.tracks_file).schema.metadata
    embedded = json.loads(meta[writer_mod.EMBEDDED_MANIFEST_KEY])
    assert embedded["tracks_file"] == m.tracks_file and embedded["frame_shards"] == list(m.frame_shards)


def test_previous_generation_files_kept_one_commit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a")
        w.commit()
        old_tracks = w.manifest.tracks_file
        add(w, rng, "b")
        w.commit()
        assert old_tracks in w.manifest.previous_files and (root / old_tracks).exists()
        add(w, rng, "c")
        w.commit()
        assert not (root / old_tracks).exists()  # two commits later it is gone


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds temporary files via /proc")
@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_full_disk_during_commit_keeps_last_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       fail_at: int) -> None:
    """ENOSPC at the 1st..4th file write of a commit (shard, failures, tracks, manifest): the library
    still opens at the previous generation, and the same writer commits once space is back."""
    rng = np.random.default_rng(2)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        a = add(w, rng, "a")
        w.commit()
        before = w.manifest
        b = add(w, rng, "b")
        calls = {"n": 0}
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith("."):  # a temporary file
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(LibraryError, match="disk is full.*last committed state"):
            w.commit()
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert read_manifest(root) == before
        assert {p.name for p in root.iterdir()} == {".lock", "manifest.json", *before.files(),
                                                   *before.previous_files}  # no new file left behind
        lib = Library.open(root)
        assert lib.tracks.column("track_id").to_pylist() == ["a"]
        w.commit()  # space is back: the queued track lands
        w.update_index()
    vecs = live_vectors(Library.open(root))
    np.testing.assert_array_equal(vecs["a"], a)
    np.testing.assert_array_equal(vecs["b"], b)


def test_full_disk_in_table_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a")
        w.commit()
        gen = w.manifest.generation
        add(w, rng, "b")
        real = store_mod.write_table_atomic
        n = {"calls": 0}

        def write(path: Path, table: object) -> str:
            n["calls"] += 1
            if n["calls"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, table)

        monkeypatch.setattr(writer_mod, "write_table_atomic", write)
        with pytest.raises(LibraryError, match=f"generation {gen}"):
            w.commit()
    assert read_manifest(root).generation == gen
    assert Library.open(root).n_tracks == 1


def test_orphans_removed_but_foreign_files_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a")
        w.commit()
    (root / "frames-000099.arrow").write_bytes(b"left by a crash")
    (root / ".tracks-000099.arrow.tmp-123").write_bytes(b"half written")
    (root / "my-notes.arrow").write_bytes(b"not ours")
    (root / "README.txt").write_text("mine")
    with LibraryWriter(root) as w:
        pass
    names = {p.name for p in root.iterdir()}
    assert "frames-000099.arrow" not in names and ".tracks-000099.arrow.tmp-123" not in names
    assert {"my-notes.arrow", "README.txt"} <= names


def test_second_writer_refused_with_clear_message(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()):
        with pytest.raises(LibraryLockedError, match=rf"is being written by songseek pid {os.getpid()}.*--wait"):
            LibraryWriter(root, manifest())
    LibraryWriter(root, manifest()).close()  # released on close


def test_stale_lock_of_killed_process_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    code = ("import sys, time; from pathlib import Path; from songseek.engine.storage.writer import acquire_lock; "
            "acquire_lock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    root.mkdir()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LibraryLockedError, match=f"pid {proc.pid}"):
            LibraryWriter(root, manifest())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert (root / ".lock").read_text() == f"songseek pid {proc.pid}"  # the stale lock file is still there
    with LibraryWriter(root, manifest()) as w:
        w.commit()
    assert (root / ".lock").read_text() == f"songseek pid {os.getpid()}"


def test_wait_blocks_until_the_lock_is_free(tmp_path: Path) -> None:
    """The holder lets go only when told to (a line on its stdin), not after a sleep a slow or fast machine
    could outrun: a waiting writer that got the lock before the release was sent did not wait."""
    import threading

    root = tmp_path / "lib"
    root.mkdir()
    code = ("import sys, os; from pathlib import Path; from songseek.engine.storage.writer import acquire_lock; "
            "fd = acquire_lock(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.readline(); os.close(fd)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    released = threading.Event()
    got: list[bool] = []
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            with LibraryWriter(root, manifest(), wait=True):
                got.append(released.is_set())
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    t = threading.Thread(target=waiter, daemon=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        t.start()
        t.join(0.5)  # time to reach the lock (a slow machine may get there later: it blocks there all the same)
        assert got == [] and not errors  # the holder still has the lock
        released.set()
        assert proc.stdin is not None
        proc.stdin.write("release\n")
        proc.stdin.flush()
        t.join(60)
        assert not errors, errors
        assert got == [True]  # it got the lock, and only after the holder was told to let go
    finally:
        proc.kill()
        proc.wait(10)


def test_index_updated_incrementally_then_rebuilt_when_due(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest("IVF4,Flat")) as w:
        for i in range(40):
            add(w, rng, f"t{i}", 4)
        w.commit()
        assert w.update_index() == "rebuilt"            # first index
        assert w.update_index() == "unchanged"
        trained = w.manifest.index_trained_on
        add(w, rng, "more", 4)
        w.commit()
        assert w.update_index() == "updated"            # IVF centroids kept, rows added
        assert w.manifest.index_trained_on == trained and w.manifest.index_frames == trained + 4
        # the index file itself holds each committed frame once, under its own row: probing every list
        # (exact for IVF,Flat), a frame's nearest row is itself at cosine 1, as brute force over all frames says
        idx = faiss_index.load_index(root / w.manifest.index_file, use_gpu=False)
        assert idx.ntotal == trained + 4
        lib = Library.open(root)
        every = np.concatenate(list(live_vectors(lib).values()))
        own_rows = np.concatenate([np.arange(s, s + c) for s, c in zip(lib.tracks.column("frame_start").to_pylist(),
                                                                      lib.tracks.column("frame_count").to_pylist())])
        assert len(every) == trained + 4 and sorted(own_rows) == list(range(trained + 4))
        scores, rows = faiss_index.search(idx, every, 2, nprobe=4)
        np.testing.assert_array_equal(rows[:, 0], own_rows)
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
        assert (scores[:, 1] < 1.0 - 1e-4).all()  # no frame is in the index twice
        for i in range(4 * 40):
            add(w, rng, f"u{i}", 4)
        w.commit()
        assert w.update_index() == "rebuilt"            # past 4x its training size: retrained
        assert w.manifest.index_trained_on == w.manifest.n_frame_rows
    lib = Library.open(root)
    q = live_vectors(lib)["u3"][:1]
    hits = lib.search_vectors(q, SearchOptions(k=3, rerank="max"))[0]
    assert hits[0].track_id == "u3" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_missing_or_damaged_index_is_rebuilt_by_the_next_update(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a")
        w.commit()
        w.update_index()
        (root / w.manifest.index_file).write_bytes(b"garbage")
        add(w, rng, "b")
        w.commit()
        assert w.update_index() == "rebuilt"
    assert Library.open(root).index.ntotal == 6


def test_wrong_library_messages(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    with pytest.raises(LibraryError, match="no library at"):
        read_manifest(root)
    root.mkdir()
    with pytest.raises(LibraryError, match="not a songseek library .*songseek index DIR"):
        read_manifest(root)
    with LibraryWriter(root, manifest()) as w:
        add(w, np.random.default_rng(0), "a")
        w.commit()
    data = json.loads((root / "manifest.json").read_text())
    # another encoder
    other = EncoderInfo(name="laion", checkpoint="x.pt", dim=DIM, sample_rate=48000)
    with pytest.raises(IncompatibleLibraryError,
                       match="another encoder: encoder 'fake' .* vs 'laion'.*--encoder fake.*load_encoder\\('fake'"):
        check_compatible(read_manifest(root), other, root)
    # a newer schema
    (root / "manifest.json").write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(IncompatibleLibraryError, match="schema 99, newer .* upgrade songseek"):
        Library.open(root)
    with pytest.raises(IncompatibleLibraryError):
        LibraryWriter(root)
    # a damaged manifest: truncated JSON, wrong types
    for bad in ("{\"schema_version\": 1, \"enc", json.dumps({**data, "encoder": 5}), "[1, 2]",
                json.dumps({**data, "shard_rows": [1, 2, 3]})):
        (root / "manifest.json").write_text(bad)
        with pytest.raises(LibraryError, match="repair --library|is this a songseek library"):
            Library.open(root)
    (root / "manifest.json").write_text(json.dumps(data))
    # a missing shard, a damaged shard, a missing index
    shard = root / data["frame_shards"][0]
    saved = shard.read_bytes()
    shard.unlink()
    with pytest.raises(LibraryError, match=f"{shard.name}: missing or damaged library file.*songseek repair"):
        Library.open(root)
    shard.write_bytes(saved[: len(saved) // 2])  # caught by its identity hash before Arrow reads it
    with pytest.raises(LibraryError, match="not the file this library committed.*songseek repair"):
        Library.open(root)


def test_manifest_roundtrip_keeps_every_field(tmp_path: Path) -> None:
    m = manifest().bumped(frame_shards=("frames-000001.arrow",), shard_rows=(3,), tracks_file="tracks-000002.arrow",
                          checksums={"frames-000001.arrow": "ab" * 32}, previous_files=("tracks-000001.arrow",))
    manifest_mod.write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m


def test_writer_of_an_existing_library_creates_nothing_for_a_wrong_path(tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match="no library at .*songseek index DIR"):
        LibraryWriter(tmp_path / "typo" / "lib")
    assert list(tmp_path.iterdir()) == []


def test_new_library_never_committed_is_removed_with_the_folders_it_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with LibraryWriter(tmp_path / "a" / "b" / "lib", manifest()):
            raise ValueError("the run failed before its first commit")
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "mine"
    kept.mkdir()  # a folder the user made stays; only the lock file goes
    LibraryWriter(kept, manifest()).close()
    assert kept.is_dir() and list(kept.iterdir()) == []


def test_writer_waiting_on_a_new_library_that_gives_up_takes_a_fresh_lock(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    root = tmp_path / "lib"
    first = LibraryWriter(root, manifest())
    done: list[str] = []

    def second() -> None:
        with LibraryWriter(root, manifest(), wait=True) as w:
            add(w, np.random.default_rng(0), "a")
            w.commit()
        done.append("ok")

    waiting = threading.Event()
    real = writer_mod._lock_file

    def lock_file(r: Path, wait: bool) -> int:
        waiting.set()
        return real(r, wait)

    monkeypatch.setattr(writer_mod, "_lock_file", lock_file)
    t = threading.Thread(target=second)
    t.start()
    assert waiting.wait(60)  # the second writer is at its lock (not still starting, however slow the machine)
    time.sleep(0.3)  # most likely blocked in flock by now; either way the first writer's exit must not hurt it
    first.close()  # uncommitted: removes its lock file and the folder while the second writer waits
    t.join(60)
    assert done == ["ok"] and Library.open(root).tracks.num_rows == 1
    assert (root / ".lock").read_text() == f"songseek pid {os.getpid()}"


def test_a_writer_whose_new_folder_vanishes_before_its_lock_opens_retries(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the interleaving a reviewer forced: B has made the folder, A gives up and removes it, B opens .lock
    root = tmp_path / "new" / "lib"
    first = LibraryWriter(root, manifest())
    real = writer_mod._lock_file

    def first_gives_up_in_between(r: Path, wait: bool) -> int:
        monkeypatch.setattr(writer_mod, "_lock_file", real)
        first.close()
        return real(r, wait)

    monkeypatch.setattr(writer_mod, "_lock_file", first_gives_up_in_between)
    with LibraryWriter(root, manifest(), wait=True) as second:
        add(second, np.random.default_rng(0), "a")
        second.commit()
    assert Library.open(root).tracks.num_rows == 1


def test_indexing_into_a_library_whose_manifest_is_gone_keeps_its_files(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, np.random.default_rng(0), "a")
        w.commit()
    (root / "manifest.json").unlink()
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(LibraryError, match="holds library files but no manifest.json; run `songseek repair"):
        LibraryWriter(root, manifest())
    assert sorted(p.name for p in root.iterdir()) == before
