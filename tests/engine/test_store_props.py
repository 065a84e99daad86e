"""Property-based tests of the store: any sequence of writer operations (add, replace, remove, rename,
record failures, commit, reopen, update the index) leaves a library whose reader agrees with a plain
dict model, whose checksums verify, and whose every track points at its own frames."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.repair import verify_library
from songseek.engine.storage.store import Failure, TrackRecord, read_table_mmap, write_table_atomic
from songseek.engine.storage.writer import LibraryWriter

DIM = 4
INFO = EncoderInfo(name="fake", checkpoint="fake", dim=DIM, sample_rate=16000)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # any valid Unicode, newlines too

op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2), st.integers(1, 5), TEXT),
    st.tuples(st.just("remove"), st.integers(0, 2)),
    st.tuples(st.just("rename"), st.integers(0, 2), TEXT),
    st.tuples(st.just("fail"), TEXT),
    st.tuples(st.just("commit"),),
    st.tuples(st.just("reopen"),),
    st.tuples(st.just("index"),),
)


def check_library(root: Path, model: dict[str, tuple[str, np.ndarray]], failures: set[str]) -> None:
    lib = Library.open(root)
    rows = lib.tracks.to_pylist()
    assert {r["track_id"] for r in rows} == set(model)
    spans = []
    for r in rows:
        path, vecs = model[r["track_id"]]
        assert r["path"] == path
        got = lib.store.vectors(r["frame_start"], r["frame_count"])
        np.testing.assert_array_equal(got, vecs)
        np.testing.assert_array_equal(lib.store.start_s[r["frame_start"]:r["frame_start"] + r["frame_count"]],
                                      np.arange(len(vecs)) * 10.0)
        spans.append((r["frame_start"], r["frame_start"] + r["frame_count"]))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # no frame shared by two tracks
    m = lib.manifest
    got_failures = set(read_table_mmap(root / m.failures_file).column("path").to_pylist())
    assert got_failures == failures
    assert verify_library(root) == []
    if model:  # a track's own first frame finds it first; every score is its best window's cosine (naive)
        tid = sorted(model)[0]
        q = model[tid][1][0]
        hits = lib.search_vectors(q[None], SearchOptions(k=len(model), rerank="max"))[0]
        assert len(hits) == len(model) and hits[0].track_id == tid
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        for h in hits:
            want = max(float(v.astype(np.float64) @ q.astype(np.float64)) for v in model[h.track_id][1])
            assert h.score == pytest.approx(want, abs=1e-5), h.track_id
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=14), seed=st.integers(0, 2**16))
def test_any_sequence_of_operations_reads_back_as_the_model(ops: list[tuple], seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lib"
        w = LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0))
        committed: dict[str, tuple[str, np.ndarray]] = {}
        model: dict[str, tuple[str, np.ndarray]] = {}
        failures: set[str] = set()
        committed_failures: set[str] = set()
        try:
            for o in ops:
                kind = o[0]
                if kind == "add":
                    tid, n, path = f"t{o[1]}", o[2], "/m/" + o[3]
                    vecs = l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32) + 1e-3)
                    starts = np.arange(n) * 10.0
                    w.add_track(TrackRecord(track_id=tid, path=path), vecs, starts, starts + 10.0)
                    model[tid] = (path, vecs)
                    failures.discard(path)
                elif kind == "remove":
                    w.remove_track(f"t{o[1]}")
                    model.pop(f"t{o[1]}", None)
                elif kind == "rename" and f"t{o[1]}" in model:
                    path = "/moved/" + o[2]
                    w.update_path(f"t{o[1]}", path, 1.0)
                    model[f"t{o[1]}"] = (path, model[f"t{o[1]}"][1])
                elif kind == "fail":
                    w.record_failure(Failure("/bad/" + o[1], "DecodeError", "bad\nfile", 1.0))
                    failures.add("/bad/" + o[1])
                elif kind == "commit":
                    w.commit()
                    committed, committed_failures = dict(model), set(failures)
                    check_library(root, committed, committed_failures)
                elif kind == "reopen":  # uncommitted changes are lost, like a crash
                    w.close()
                    w = LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0))
                    model, failures = dict(committed), set(committed_failures)
                elif kind == "index":
                    w.commit()
                    committed, committed_failures = dict(model), set(failures)
                    w.update_index()
                    m = read_manifest(root)
                    assert m.index_frames == m.n_frame_rows
                    check_library(root, committed, committed_failures)
            w.commit()
            check_library(root, model, failures)
        finally:
            w.close()


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(TEXT, st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**40, 2**40)),
                     max_size=30))
def test_table_roundtrip_is_exact(rows: list[tuple[str, float, int]]) -> None:
    table = pa.table({"s": [r[0] for r in rows], "f": pa.array([r[1] for r in rows], pa.float64()),
                      "i": pa.array([r[2] for r in rows], pa.int64())})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.arrow"
        digest = write_table_atomic(path, table)
        back = read_table_mmap(path)
        assert back.schema.equals(table.schema)
        assert back.column("s").to_pylist() == [r[0] for r in rows]
        assert back.column("i").to_pylist() == [r[2] for r in rows]
        np.testing.assert_array_equal(back.column("f").to_numpy(), np.array([r[1] for r in rows], np.float64))
        import hashlib

        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
        assert [p.name for p in Path(tmp).iterdir()] == ["t.arrow"]   # no temporary file left


@settings(max_examples=25, deadline=None)
@given(text=st.text(max_size=20))
def test_any_file_name_is_stored_or_escaped(text: str) -> None:
    """Names with lone surrogates (bytes that are not UTF-8) are stored escaped as failures, refused as
    tracks with a clear error; every other name round-trips exactly."""
    from songseek.engine.errors import UsageError

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lib"
        with LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)) as w:
            vec = l2_normalize(np.ones((1, DIM), np.float32))
            rec = TrackRecord(track_id="x", path="/m/" + text)
            valid = not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
            if valid:
                w.add_track(rec, vec, np.zeros(1), np.ones(1))
            else:
                with pytest.raises(UsageError, match="not valid Unicode"):
                    w.add_track(rec, vec, np.zeros(1), np.ones(1))
            w.record_failure(Failure("/bad/" + text, "DecodeError", text, 0.0))
            w.commit()
        lib = Library.open(root)
        assert lib.tracks.column("path").to_pylist() == (["/m/" + text] if valid else [])
        stored = read_table_mmap(root / lib.manifest.failures_file).column("path").to_pylist()
        assert stored == ["/bad/" + text] if valid else stored[0].startswith("/bad/")


def test_vectors_refuses_a_range_that_leaves_its_shard(tmp_path: Path) -> None:
    """``FrameStore.vectors`` used to hand back a short array for a range spanning shards; ``rows`` reads
    across them. Two ingests make two shards."""
    from songseek.indexers.ingest import ingest_table
    from tests.library_helpers import vector_table

    lib_dir = tmp_path / "lib"
    ingest_table(vector_table(4, 8, seed=1), lib_dir)
    more = vector_table(3, 8, seed=2)
    for name in ("track_id", "path"):
        more = more.set_column(more.schema.get_field_index(name), name,
                               pa.array([v.replace("t0", "u0") for v in more.column(name).to_pylist()]))
    ingest_table(more, lib_dir)
    store = Library.open(lib_dir).store
    assert len(store.offsets) == 3
    cut = int(store.offsets[1])
    np.testing.assert_array_equal(store.vectors(0, cut), store.rows(0, cut))
    np.testing.assert_array_equal(store.vectors(cut, store.n_rows - cut), store.rows(cut, store.n_rows))
    assert store.vectors(store.n_rows, 0).shape == (0, 8)
    for start, count in ((0, store.n_rows), (cut - 1, 2), (-1, 1), (store.n_rows, 1)):
        with pytest.raises(ValueError, match="not inside one shard"):
            store.vectors(start, count)
