"""engine/storage/store.py: reader checks and the on-disk layout that a mutation sweep found unpinned,
against plain pyarrow / numpy reads of the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.errors import LibraryError
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.store import (
    FrameStore,
    TrackRecord,
    VectorReader,
    frames_schema,
    vectors_view,
    write_table_atomic,
)
from songseek.engine.storage.writer import LibraryWriter

DIM = 8
INFO = EncoderInfo(name="fake", checkpoint="fake", dim=DIM, sample_rate=16000)


def shard_table(dim: int, n: int, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    vecs = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    table = pa.Table.from_arrays(
        [pa.array(["t"] * n), pa.array(np.arange(n, dtype=np.int32)), pa.array(np.arange(n) * 10.0),
         pa.array(np.arange(n) * 10.0 + 10.0), pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim)],
        schema=frames_schema(dim))
    return table, vecs


def test_vectors_view_refuses_vectors_of_another_dimension() -> None:
    """16-d vectors read as 8-d would be twice the rows of garbage, not an error."""
    table, vecs = shard_table(16, 4)
    np.testing.assert_array_equal(vectors_view(table, 16), vecs)
    with pytest.raises(ValueError, match=r"vector column is fixed_size_list<item: float>\[16\], expected "):
        vectors_view(table, 8)


def test_a_committed_shard_is_one_record_batch(tmp_path: Path) -> None:
    """write_table_atomic writes one batch (VectorReader reads the vector column as one contiguous run)."""
    table, vecs = shard_table(DIM, 1000)
    write_table_atomic(tmp_path / "frames-000001.arrow", pa.concat_tables([table.slice(0, 300), table.slice(300)]))
    with open(tmp_path / "frames-000001.arrow", "rb") as fh:
        reader = ipc.open_file(fh)
        assert reader.num_record_batches == 1
        np.testing.assert_array_equal(
            np.asarray(reader.get_batch(0).column("vector").values.to_numpy()).reshape(-1, DIM), vecs)


def _library(root: Path, sizes: list[int], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    every = []
    with LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)) as w:
        for i, n in enumerate(sizes):
            vecs = l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32))
            every.append(vecs)
            w.add_track(TrackRecord(track_id=f"t{i}", path=f"/m/{i}.wav"), vecs, np.arange(n) * 10.0,
                        np.arange(n) * 10.0 + 10.0)
            w.commit()  # one shard per track
    return np.concatenate(every)


def test_vector_reader_batches_and_gather_against_plain_numpy(tmp_path: Path) -> None:
    """Every (start, stop, batch) cut over 3 shards of 3, 1 and 4 rows, and a gather of rows in every shard."""
    root = tmp_path / "lib"
    every = _library(root, [3, 1, 4])
    reader = VectorReader(root, read_manifest(root))
    assert reader.n_rows == 8
    for start in range(9):
        for stop in range(start, 10):
            for batch in (1, 2, 3, 5):
                got = [b.copy() for b in reader.batches(start, stop, batch)]
                assert all(len(b) <= batch for b in got)
                joined = np.concatenate(got) if got else np.zeros((0, DIM), np.float32)
                np.testing.assert_array_equal(joined, every[start:min(stop, 8)])
    for rows in ([0], [3], [4], [7], [0, 2, 3, 4, 6, 7], list(range(8))):
        np.testing.assert_array_equal(reader.gather(np.array(rows)), every[rows])


def test_frame_store_reads_rows_across_shards_like_plain_numpy(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    every = _library(root, [3, 1, 4])
    store = FrameStore(root, read_manifest(root))
    for start in range(9):
        for stop in range(start, 9):
            np.testing.assert_array_equal(store.rows(start, stop), every[start:stop])
    for start, count in ((0, 3), (3, 1), (4, 4), (5, 2), (7, 1), (4, 0)):
        np.testing.assert_array_equal(store.vectors(start, count), every[start:start + count])
    for start, count in ((2, 2), (3, 2), (0, 8), (7, 2), (5, -1)):
        with pytest.raises(ValueError, match="not inside one shard"):
            store.vectors(start, count)


def test_a_shard_with_other_rows_than_the_manifest_says_is_refused(tmp_path: Path) -> None:
    """A manifest whose shard_rows disagree with the shard (hand-edited, or a shard swapped with quick
    hashes gone) is refused by every reader, naming the file."""
    import json

    root = tmp_path / "lib"
    _library(root, [3, 2])
    data = json.loads((root / "manifest.json").read_text())
    data["shard_rows"] = [3, 1]
    data["index_file"], data["index_frames"] = "", 0
    (root / "manifest.json").write_text(json.dumps(data))
    m = read_manifest(root)
    name = m.frame_shards[1]
    with pytest.raises(LibraryError, match=rf"{name}: has 2 rows, manifest says 1"):
        FrameStore(root, m)
    with pytest.raises(LibraryError, match=rf"{name}: has 2 rows, manifest says 1"):
        VectorReader(root, m)


def test_an_atomic_write_fsyncs_the_data_before_the_rename_and_the_folder_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash-safety order: data on disk (fsync of the temporary file), then the rename, then the
    folder's entry on disk (fsync of the directory). Recorded by wrapping the three calls."""
    import os

    from songseek.engine.storage import store as store_mod

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(store_mod.os, "fsync", fsync)
    monkeypatch.setattr(store_mod.os, "replace", replace)
    monkeypatch.setattr(store_mod, "fsync_dir", lambda d: events.append(("fsync_dir", str(d))))
    table, _ = shard_table(DIM, 3)
    target = tmp_path / "frames-000001.arrow"
    write_table_atomic(target, table)
    tmp = str(tmp_path / f".{target.name}.tmp-{os.getpid()}")
    assert events == [("fsync", tmp), ("replace", str(target)), ("fsync_dir", str(tmp_path))]
    with open(target, "rb") as fh:
        assert ipc.open_file(fh).read_all().equals(table)
