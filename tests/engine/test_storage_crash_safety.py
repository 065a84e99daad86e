"""Storage under failure: a damaged index with nothing new to add, a full disk while the index is saved,
a commit whose manifest landed before an error, write errors named by their cause, orphans that cannot be
deleted, repair on a full disk, `repair --check` while a writer commits, and a new library killed in its
first commit (docs/robustness.md, "Crash model")."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.errors import LibraryError
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage import index as index_mod
from songseek.engine.storage import manifest as manifest_mod
from songseek.engine.storage import repair as repair_mod
from songseek.engine.storage import writer as writer_mod
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.repair import repair_library, verify_library
from songseek.engine.storage.store import FAILURES_SCHEMA, TrackRecord, write_table_atomic
from songseek.engine.storage.writer import LibraryWriter

DIM = 8
INFO = EncoderInfo(name="fake", checkpoint="fake", dim=DIM, sample_rate=16000)


def manifest() -> Manifest:
    return Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)


def add(w: LibraryWriter, rng: np.random.Generator, tid: str, n: int = 3) -> None:
    vecs = l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32))
    starts = np.arange(n) * 10.0
    w.add_track(TrackRecord(track_id=tid, path=f"/music/{tid}.wav", duration_s=n * 10.0), vecs, starts,
                starts + 10.0)


def build(root: Path, tracks: int = 3, frames: int = 3, index: bool = True) -> None:
    rng = np.random.default_rng(0)
    with LibraryWriter(root, manifest()) as w:
        for i in range(tracks):
            add(w, rng, f"t{i}", frames)
        w.commit()
        if index:
            w.update_index()


def searchable(root: Path) -> None:
    lib = Library.open(root)
    assert lib.index is not None
    hits = lib.search_vectors(lib.store.vectors(0, 1), SearchOptions(k=2, rerank="max"))[0]
    assert hits and hits[0].track_id == "t0"


def leftovers(root: Path) -> set[str]:
    m = read_manifest(root)
    return {p.name for p in root.iterdir()} - {".lock", "manifest.json", *m.files(), *m.previous_files}


@pytest.mark.parametrize("damage", ["deleted", "emptied", "garbage"])
def test_an_index_run_with_nothing_new_rebuilds_a_missing_or_damaged_index(tmp_path: Path, damage: str) -> None:
    """Before: `songseek index` with no new file said "index unchanged" and every search kept failing with
    `missing or damaged index; run songseek repair`."""
    root = tmp_path / "lib"
    build(root)
    index_file = root / read_manifest(root).index_file
    if damage == "deleted":
        index_file.unlink()
    elif damage == "emptied":
        index_file.write_bytes(b"")
    else:
        index_file.write_bytes(bytes(index_file.stat().st_size))
    with pytest.raises(LibraryError, match="missing or damaged index"):
        _ = Library.open(root).index
    with LibraryWriter(root) as w:
        assert w.update_index() == "rebuilt"
        assert w.update_index() == "unchanged"  # and an intact one is left alone
    searchable(root)
    assert verify_library(root) == []


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG in this process (what a full disk does to a large file)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_while_the_index_is_saved_is_one_line_and_commits_no_truncated_index(tmp_path: Path) -> None:
    """Before: faiss's own file writer raised RuntimeError (a traceback from `songseek index`) or, when only
    its final flush failed, committed a truncated index that every search then refused."""
    root = tmp_path / "lib"
    build(root, tracks=40, frames=100, index=False)  # 4000 8-d frames: a 128 KB index
    gen = read_manifest(root).generation
    with LibraryWriter(root) as w:
        with file_size_limit(64 * 1024), pytest.raises(LibraryError) as caught:
            w.update_index()
    message = str(caught.value)
    assert message.startswith(f"could not write the index of {root}: a file grew past the file-size limit; "
                              "searches still work")
    assert message.endswith("raise the limit (ulimit -f) or use another disk and run the command again")
    assert "\n" not in message
    m = read_manifest(root)
    assert m.generation == gen and not m.index_file       # nothing half-written was committed
    assert not leftovers(root)                              # and the temporary file is gone
    assert verify_library(root) == []
    with LibraryWriter(root) as w:                          # space is back: the same call finishes
        assert w.update_index() == "rebuilt"
    searchable(root)


def test_an_error_after_the_manifest_rename_keeps_the_writer_in_step_with_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder fsync after the manifest's rename fails (EIO): the commit stands, and the writer goes on
    from the manifest on disk. Before: it went on from a copy without that commit's checksums, so the
    next commit's manifest named a shard with no checksum and `repair` dropped its tracks."""
    root = tmp_path / "lib"
    rng = np.random.default_rng(1)
    real = manifest_mod.fsync_dir
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a")
        w.commit()
        add(w, rng, "b")

        def failing(path: Path) -> None:
            monkeypatch.setattr(manifest_mod, "fsync_dir", real)
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(manifest_mod, "fsync_dir", failing)
        w.commit()                                          # the rename landed: no error
        assert w.manifest == read_manifest(root)
        add(w, rng, "c")
        w.commit()
        w.update_index()
    assert verify_library(root) == []
    report = repair_library(root)
    assert report.dropped_tracks == 0 and report.tracks == 3 and not report.problems


@pytest.mark.parametrize(("code", "why", "fix"), [
    (errno.EACCES, "permission denied", "make the library folder and its files writable by you"),
    (errno.EROFS, "the file system is read-only", "remount it read-write"),
    (errno.ENOSPC, "the disk is full", "free space"),
])
def test_a_failed_commit_names_its_cause_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     code: int, why: str, fix: str) -> None:
    """Before: every cause but a full disk printed Python's `[Errno 13] Permission denied: '/…/.tracks-…
    .tmp-123'` followed by "free space and run the same command again"."""
    root = tmp_path / "lib"
    build(root, index=False)
    gen = read_manifest(root).generation

    def refuse(path: Path, table: object) -> str:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(writer_mod, "write_table_atomic", refuse)
    with LibraryWriter(root) as w:
        add(w, np.random.default_rng(2), "new")
        with pytest.raises(LibraryError) as caught:
            w.commit()
    message = str(caught.value)
    assert f"could not commit to {root}: {why}; the library still holds its last committed state " \
           f"(generation {gen}); {fix}" in message
    assert "free space" not in message or code == errno.ENOSPC
    assert "Errno" not in message


def test_an_orphan_that_cannot_be_deleted_does_not_fail_a_durable_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a leftover the writer could not unlink (a file of another user in a shared folder, say)
    raised PermissionError out of a commit that had already landed: a traceback, and the run stopped."""
    root = tmp_path / "lib"
    build(root, index=False)
    stray = root / ".frames-000099.arrow.tmp-1"
    stray.write_bytes(b"left by a crash")
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == stray.name:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with LibraryWriter(root) as w:
        add(w, np.random.default_rng(3), "new")
        w.commit()
        w.update_index()
    assert stray.exists() and "new" in Library.open(root).tracks.column("track_id").to_pylist()
    monkeypatch.setattr(Path, "unlink", real_unlink)
    with LibraryWriter(root):                               # removable again: the next writer removes it
        pass
    assert not stray.exists()


def test_repair_on_a_full_disk_is_one_line_and_leaves_the_library_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: an OSError from repair's own writes was a traceback; a failed index write inside repair was
    wrapped as "repair could not fix this library (…); move the named file out of the folder"."""
    root = tmp_path / "lib"
    build(root)
    before = read_manifest(root)

    def full(path: Path, table: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(repair_mod, "write_table_atomic", full)
    with pytest.raises(LibraryError) as caught:
        repair_library(root, compact=True)
    message = str(caught.value)
    assert message.startswith(f"could not repair {root}: the disk is full (")
    assert message.endswith(f"the library is as it was; free space and run `songseek repair --library {root}` "
                            "again")
    assert read_manifest(root) == before and not leftovers(root)
    monkeypatch.undo()

    def index_full(index: object, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(index_mod, "save_index", index_full)
    with pytest.raises(LibraryError) as caught:
        repair_library(root)
    message = str(caught.value)
    assert message.startswith(f"could not write the index of {root}: the disk is full;")
    assert "move the named file" not in message
    monkeypatch.undo()
    assert repair_library(root).index == "Flat"
    searchable(root)


def test_check_while_a_writer_commits_reports_no_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`repair --check` takes no lock; a slow checksum run can span two commits of an indexer, which remove
    the tracks table the check started from. Before: reported as `tracks-…: missing`."""
    root = tmp_path / "lib"
    build(root)
    real, calls = repair_mod.check_file, [0]

    def check_file(r: Path, name: str, m: Manifest) -> str | None:
        calls[0] += 1
        if calls[0] == 1:
            with LibraryWriter(root) as w:
                for tid in ("x", "y"):
                    add(w, np.random.default_rng(calls[0]), tid)
                    w.commit()
        return real(r, name, m)

    monkeypatch.setattr(repair_mod, "check_file", check_file)
    assert verify_library(root) == []


DIE_IN_FIRST_COMMIT = """
import os, sys
from pathlib import Path
import songseek.engine.storage.store as store
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.storage.manifest import Manifest
from songseek.engine.storage.writer import LibraryWriter
real, n = store.file_sha256, [0]
def dying(path):
    n[0] += 1
    if n[0] == {at}:
        os._exit(9)  # no cleanup: a power cut
    return real(path)
store.file_sha256 = dying
info = EncoderInfo(name="fake", checkpoint="fake", dim=8, sample_rate=16000)
LibraryWriter(Path(sys.argv[1]), Manifest(encoder=info, window_s=10.0, hop_s=10.0)).commit()
"""


@pytest.mark.parametrize("at", [1, 2])
def test_a_new_library_killed_in_its_first_commit_is_started_again(tmp_path: Path, at: int) -> None:
    """Killed while the first (empty) commit wrote its failures table (1) or its tracks table (2): no
    tracks table exists, so repair has nothing to rebuild from. Before: `index` refused (`holds library
    files but no manifest.json; run songseek repair`) and `repair` answered `nothing to repair`."""
    root = tmp_path / "new lib ü"
    died = subprocess.run([sys.executable, "-c", DIE_IN_FIRST_COMMIT.replace("{at}", str(at)), str(root)],
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == 9, died.stderr
    assert {p.name for p in root.iterdir()} - {".lock"}, "the death should leave files behind"
    build(root)
    searchable(root)
    assert not leftovers(root) and verify_library(root) == []


def test_a_library_whose_manifest_is_gone_but_tracks_table_is_there_is_still_refused(tmp_path: Path) -> None:
    """The other side of the rule above: where repair can rebuild the manifest, nothing is deleted."""
    root = tmp_path / "lib"
    build(root)
    (root / "manifest.json").unlink()
    write_table_atomic(root / "failures-000042.arrow", FAILURES_SCHEMA.empty_table())
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(LibraryError, match="holds library files but no manifest.json; run `songseek repair"):
        LibraryWriter(root, manifest())
    assert sorted(p.name for p in root.iterdir()) == before
    assert repair_library(root).tracks == 3


def test_a_null_manifest_names_the_repair(tmp_path: Path) -> None:
    """Before: `manifest has no schema_version; is this a songseek library?` and no way forward."""
    root = tmp_path / "lib"
    build(root)
    (root / "manifest.json").write_text("null")
    with pytest.raises(LibraryError, match=r"manifest has no schema_version; if this is a songseek library, "
                                           r"run `songseek repair --library .*lib`"):
        Library.open(root)
    assert repair_library(root).tracks == 3


def test_an_index_is_never_built_from_a_damaged_shard(tmp_path: Path) -> None:
    """Before: `songseek index` after a byte of a shard flipped on disk said "index unchanged" (or added
    the damaged vectors to the index) and exited 0, while every search refused the library."""
    root = tmp_path / "lib"
    build(root)
    shard = root / read_manifest(root).frame_shards[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with LibraryWriter(root) as w:
        add(w, np.random.default_rng(4), "new")
        w.commit()                                          # the new track is kept ...
        with pytest.raises(LibraryError, match=r"frames-\d+\.arrow: missing or damaged library file .*; "
                                               r"run `songseek repair --library"):
            w.update_index()                                # ... but no index is built over damage
    report = repair_library(root)
    assert report.dropped_tracks == 3 and report.tracks == 1
    assert verify_library(root) == []
