"""Behaviour of engine/storage/writer.py that a mutation sweep found unpinned, each checked against a
direct computation (counts kept by the test, numpy on the vectors it wrote), not the writer's own helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.errors import UsageError
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

DIM = 8
INFO = EncoderInfo(name="fake", checkpoint="fake", dim=DIM, sample_rate=16000)


def manifest(factory: str = "auto") -> Manifest:
    return Manifest(encoder=INFO, window_s=10.0, hop_s=10.0, index_factory=factory)


def add(w: LibraryWriter, rng: np.random.Generator, tid: str, n: int) -> np.ndarray:
    vecs = l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32))
    starts = np.arange(n) * 10.0
    w.add_track(TrackRecord(track_id=tid, path=f"/music/{tid}.wav", duration_s=n * 10.0), vecs, starts, starts + 10.0)
    return vecs


def test_an_ivf_index_is_updated_up_to_exactly_4x_its_training_frames_and_rebuilt_past_them(tmp_path: Path) -> None:
    """docs/robustness.md: an IVF index is retrained once the library has grown *past* 4x the frames it was
    trained on. 40 frames trained: 160 frames is still an update, 161 a rebuild."""
    rng = np.random.default_rng(11)
    root = tmp_path / "lib"
    total = 0
    with LibraryWriter(root, manifest("IVF2,Flat")) as w:
        for i in range(10):
            add(w, rng, f"a{i}", 4)
            total += 4
        w.commit()
        assert w.update_index() == "rebuilt"
        assert w.manifest.index_trained_on == total == 40
        for i in range(30):  # up to 4 * 40 = 160 frames: at the limit, not past it
            add(w, rng, f"b{i}", 4)
            total += 4
        w.commit()
        assert total == 160
        assert w.update_index() == "updated"
        assert (w.manifest.index_trained_on, w.manifest.index_frames) == (40, 160)
        assert read_manifest(root).index_last_action == "updated"  # what `songseek info` shows
        add(w, rng, "c", 1)
        total += 1
        w.commit()
        assert w.update_index() == "rebuilt"
        assert (w.manifest.index_trained_on, w.manifest.index_frames) == (161, 161)
    m = read_manifest(root)
    assert m.index_last_action == "rebuilt" and m.index_frames == total


def test_another_index_factory_rebuilds_the_index_with_that_factory(tmp_path: Path) -> None:
    """A new factory string is a rebuild, also below 4x the training size: adding rows to the old Flat index
    and calling it IVF would leave the manifest describing an index that is not on disk."""
    import faiss

    rng = np.random.default_rng(12)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        vecs = np.concatenate([add(w, rng, f"a{i}", 5) for i in range(8)])
        w.commit()
        assert w.update_index() == "rebuilt"
        assert w.manifest.index_description == "Flat"
        assert w.update_index("IVF2,Flat") == "rebuilt"
        m = w.manifest
    assert (m.index_description, m.index_factory, m.index_frames, m.index_trained_on) == ("IVF2,Flat", "IVF2,Flat",
                                                                                          40, 40)
    idx = faiss.read_index(str(root / m.index_file))
    ivf = faiss.extract_index_ivf(idx)  # raises for a Flat index
    assert ivf.nlist == 2 and idx.ntotal == 40
    ivf.nprobe = 2  # every list: exact
    _, rows = idx.search(vecs, 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(40))


def test_a_track_without_frames_is_refused_and_nothing_is_queued(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        with pytest.raises(UsageError, match=r"expected \(frames, 8\) vectors, got \(0, 8\)"):
            w.add_track(TrackRecord(track_id="e", path="/music/e.wav"), np.zeros((0, DIM), np.float32),
                        np.zeros(0), np.zeros(0))
        assert w.tracks == {}
        w.commit()
    m = read_manifest(root)
    assert m.frame_shards == () and m.n_frame_rows == 0


def test_a_caller_given_added_at_is_kept_and_a_missing_one_is_now(tmp_path: Path) -> None:
    import time

    rng = np.random.default_rng(13)
    root = tmp_path / "lib"
    before = time.time()
    with LibraryWriter(root, manifest()) as w:
        vecs = l2_normalize(rng.standard_normal((2, DIM)).astype(np.float32))
        w.add_track(TrackRecord(track_id="old", path="/music/old.wav", added_at=1_234_567.5), vecs,
                    np.array([0.0, 10.0]), np.array([10.0, 20.0]))
        add(w, rng, "new", 2)
        w.commit()
    after = time.time()
    from songseek.engine.query.search import Library

    rows = {r["track_id"]: r for r in Library.open(root).tracks.to_pylist()}
    assert rows["old"]["added_at"] == 1_234_567.5
    assert before <= rows["new"]["added_at"] <= after


@pytest.mark.parametrize("n_starts,n_ends", [(2, 3), (3, 2)])
def test_frame_times_of_another_length_than_the_vectors_are_refused_when_queued(tmp_path: Path, n_starts: int,
                                                                               n_ends: int) -> None:
    """Refused by add_track with the counts named, not found later as an Arrow error inside a commit."""
    root = tmp_path / "lib"
    vecs = l2_normalize(np.random.default_rng(14).standard_normal((3, DIM)).astype(np.float32))
    with LibraryWriter(root, manifest()) as w:
        with pytest.raises(UsageError, match=f"3 vectors but {n_starts} starts, {n_ends} ends"):
            w.add_track(TrackRecord(track_id="x", path="/music/x.wav"), vecs, np.arange(n_starts) * 10.0,
                        np.arange(n_ends) * 10.0 + 10.0)
        assert w.tracks == {}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_vector_with_nan_or_inf_is_refused_when_queued(tmp_path: Path, bad: float) -> None:
    vecs = l2_normalize(np.random.default_rng(15).standard_normal((3, DIM)).astype(np.float32))
    vecs[1, 4] = bad
    with LibraryWriter(tmp_path / "lib", manifest()) as w:
        with pytest.raises(UsageError, match="vectors contain NaN or inf"):
            w.add_track(TrackRecord(track_id="x", path="/music/x.wav"), vecs, np.arange(3) * 10.0,
                        np.arange(3) * 10.0 + 10.0)
        assert w.tracks == {}


def _arrow(path: Path) -> list[dict]:
    """A committed Arrow file read plainly with pyarrow (not through the library's readers)."""
    import pyarrow.ipc as ipc

    with open(path, "rb") as fh:
        return ipc.open_file(fh).read_all().to_pylist()


def test_indexing_a_file_clears_its_failure_record(tmp_path: Path) -> None:
    from songseek.engine.storage.store import Failure

    rng = np.random.default_rng(16)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        w.record_failure(Failure("/music/a.wav", "DecodeError", "bad", 1.0))
        w.record_failure(Failure("/music/other.wav", "DecodeError", "bad", 1.0))
        w.commit()
        assert sorted(r["path"] for r in _arrow(root / w.manifest.failures_file)) == ["/music/a.wav",
                                                                                       "/music/other.wav"]
        add(w, rng, "a", 2)  # path /music/a.wav: indexed now
        w.commit()
        assert [r["path"] for r in _arrow(root / w.manifest.failures_file)] == ["/music/other.wav"]
        w.clear_failure("/music/other.wav")  # the only change: still committed
        w.commit()
        assert _arrow(root / w.manifest.failures_file) == []


def test_a_track_removed_before_its_commit_leaves_no_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "gone", 3)
        kept = add(w, rng, "kept", 2)
        w.remove_track("gone")
        w.commit()
        m = w.manifest
    assert m.shard_rows == (2,)
    rows = _arrow(root / m.frame_shards[0])
    assert [r["track_id"] for r in rows] == ["kept", "kept"]
    np.testing.assert_array_equal(np.array([r["vector"] for r in rows], np.float32), kept)


def test_each_shard_row_holds_its_track_frame_number_times_and_vector(tmp_path: Path) -> None:
    """The frame shard as written, read with plain pyarrow: per track, frame = 0..n-1 in order, the given
    start/end times, the given vectors; tracks in the order they were queued; frame_start points at them."""
    rng = np.random.default_rng(18)
    root = tmp_path / "lib"
    want = []
    with LibraryWriter(root, manifest()) as w:
        for tid, n in (("a", 3), ("b", 1), ("c", 4)):
            vecs = add(w, rng, tid, n)
            want += [(tid, i, i * 10.0, i * 10.0 + 10.0, vecs[i]) for i in range(n)]
        w.commit()
        m = w.manifest
    rows = _arrow(root / m.frame_shards[0])
    assert [(r["track_id"], r["frame"], r["start_s"], r["end_s"]) for r in rows] == [t[:4] for t in want]
    np.testing.assert_array_equal(np.array([r["vector"] for r in rows], np.float32), np.array([t[4] for t in want]))
    tracks = {r["track_id"]: (r["frame_start"], r["frame_count"]) for r in _arrow(root / m.tracks_file)}
    assert tracks == {"a": (0, 3), "b": (3, 1), "c": (4, 4)}


def test_update_path_stores_the_new_path_and_mtime(tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a", 2)
        w.commit()
        w.update_path("a", "/moved/a.wav", 1_700_000_123.25)
        w.commit()
        m = w.manifest
    (row,) = _arrow(root / m.tracks_file)
    assert (row["path"], row["mtime"]) == ("/moved/a.wav", 1_700_000_123.25)


def test_nprobe_alone_is_committed_and_zero_means_automatic(tmp_path: Path) -> None:
    rng = np.random.default_rng(20)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a", 2)
        w.commit()
        gen = w.manifest.generation
        w.set_nprobe(7)
        w.commit()
        assert read_manifest(root).index_nprobe == 7 and read_manifest(root).generation == gen + 1
        w.set_nprobe(0)  # back to the automatic rule: allowed
        w.commit()
        assert read_manifest(root).index_nprobe == 0
        with pytest.raises(UsageError, match=r"nprobe must be 0 \(automatic\) or more \(got -1\)"):
            w.set_nprobe(-1)
        w.set_rerank({"rerank": "max"})
        w.commit()
        assert read_manifest(root).rerank == {"rerank": "max"}


def test_get_table_returns_the_table_the_next_commit_writes(tmp_path: Path) -> None:
    import pyarrow as pa

    rng = np.random.default_rng(21)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a", 1)
        w.put_table("tags", pa.table({"track_id": ["a"], "jazz": [0.1]}))
        w.commit()
        w.put_table("tags", pa.table({"track_id": ["a"], "jazz": [0.9]}))
        assert w.get_table("tags").column("jazz").to_pylist() == [0.9]  # type: ignore[union-attr]  # pending, not the committed 0.1
        assert w.get_table("mos") is None
        w.commit()
        assert _arrow(root / w.manifest.extra_tables["tags"]) == [{"track_id": "a", "jazz": 0.9}]


def test_an_explicit_factory_that_builds_the_same_index_is_remembered(tmp_path: Path) -> None:
    """`auto` builds Flat here; asking for Flat explicitly changes no index rows but is saved, so the library
    stays Flat once `auto` would move to IVF (an existing library keeps its own index factory)."""
    rng = np.random.default_rng(22)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a", 3)
        w.commit()
        assert w.update_index() == "rebuilt"
        assert (w.manifest.index_factory, w.manifest.index_description) == ("auto", "Flat")
        assert w.update_index() == "unchanged"
        assert w.update_index("Flat") == "updated"
    m = read_manifest(root)
    assert (m.index_factory, m.index_description, m.index_frames) == ("Flat", "Flat", 3)


def test_the_manifest_holds_checksums_of_exactly_the_files_it_names_or_keeps(tmp_path: Path) -> None:
    """After commits and index updates, no checksum of a file the library no longer has stays behind."""
    rng = np.random.default_rng(23)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        for i in range(4):
            add(w, rng, f"a{i}", 2)
            w.commit()
            w.update_index()
            m = read_manifest(root)
            assert set(m.checksums) == set(m.files()) | set(m.previous_files), i
            assert set(m.quick_hashes) == set(m.files()) | set(m.previous_files), i
            on_disk = {p.name for p in root.iterdir()} - {"manifest.json", ".lock"}
            assert on_disk == set(m.checksums)


def test_an_index_holding_other_rows_than_the_manifest_says_is_rebuilt_not_extended(tmp_path: Path) -> None:
    """The manifest says the index holds 2 frames, the file holds 4 (a hand-edited or mismatched manifest):
    the next update rebuilds it from the shards instead of adding rows 2.. after the 4 it has (which would
    give every later frame the id of another)."""
    import json

    import faiss

    rng = np.random.default_rng(24)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a", 2)
        add(w, rng, "b", 2)
        w.commit()
        w.update_index()
    data = json.loads((root / "manifest.json").read_text())
    data["index_frames"] = 2
    (root / "manifest.json").write_text(json.dumps(data))
    every = []
    with LibraryWriter(root) as w:
        add(w, rng, "c", 3)
        w.commit()
        assert w.update_index() == "rebuilt"
        m = w.manifest
    from songseek.engine.query.search import Library

    lib = Library.open(root)
    for r in lib.tracks.to_pylist():
        every.append(np.array(lib.store.vectors(r["frame_start"], r["frame_count"])))
    idx = faiss.read_index(str(root / m.index_file))
    assert idx.ntotal == m.index_frames == 7
    _, rows = idx.search(np.concatenate(every), 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(7))


def test_an_index_whose_manifest_cannot_be_written_is_not_left_on_disk(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The index file is saved, then the manifest naming it fails (a full disk): IndexWriteError, and the
    saved index goes too; the library on disk is the last committed one, files and all."""
    import errno

    from songseek.engine.storage import writer as writer_mod

    rng = np.random.default_rng(25)
    root = tmp_path / "lib"
    with LibraryWriter(root, manifest()) as w:
        add(w, rng, "a", 2)
        w.commit()
        before = {p.name for p in root.iterdir()}

        def full(*_: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(writer_mod, "write_manifest", full)
        with pytest.raises(writer_mod.IndexWriteError, match="could not write the index of .*the disk is full"):
            w.update_index()
        assert {p.name for p in root.iterdir()} == before
        assert read_manifest(root).index_file == ""
