"""Extra tables (tags, mos, ...): committed atomically, listed in the manifest, joined by --where."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.errors import QueryError, UsageError
from songseek.engine.hashing import file_sha256
from songseek.engine.query.filters import filter_track_ids
from songseek.engine.query.search import Library
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.writer import LibraryWriter
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ingest_table(vector_table(12, 8, seed=1, max_frames=4), tmp_path / "lib")
    return tmp_path / "lib"


def _scores(ids: list[str], seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"track_id": pa.array(ids, pa.string()), "tag_jazz": rng.random(len(ids)).astype(np.float32)})


def test_put_table_commits_and_where_filters_on_it(root: Path) -> None:
    ids = [f"t{i:04d}" for i in range(12)]
    table = _scores(ids, 0)
    with LibraryWriter(root) as w:
        w.put_table("tags", table)
        w.commit()
    m = read_manifest(root)
    assert set(m.extra_tables) == {"tags"}
    assert m.checksums[m.extra_tables["tags"]] == file_sha256(root / m.extra_tables["tags"])
    lib = Library.open(root)
    assert lib.tables()["tags"].equals(table)
    want = sorted(t for t, s in zip(ids, table.column("tag_jazz").to_pylist()) if s > 0.5)
    assert sorted(filter_track_ids(lib.tables(), "tag_jazz > 0.5")) == want
    assert sorted(filter_track_ids(lib.tables(), "tag('Jazz') > 0.5")) == want
    with pytest.raises(QueryError) as caught:  # tag()'s own words, not DuckDB's wrapping or the column list
        filter_track_ids(lib.tables(), "tag('polka') > 0.5")
    assert str(caught.value) == "unknown tag 'polka'; known tags: jazz"


def test_a_table_with_several_rows_per_track_gives_each_track_once(root: Path) -> None:
    ids = [f"t{i:04d}" for i in range(12)]
    labels = pa.table({"track_id": pa.array(ids + ids, pa.string()), "label": ["a"] * 12 + ["b"] * 12})
    with LibraryWriter(root) as w:
        w.put_table("labels", labels)
        w.commit()
    lib = Library.open(root)
    assert sorted(filter_track_ids(lib.tables(), "label IN ('a', 'b')")) == ids
    q = np.random.default_rng(3).normal(size=8).astype(np.float32)
    for exact in (False, True):  # the small-subset path scores the allowed rows one by one
        hits = lib.search(vector=q, k=12, where="label IN ('a', 'b')", exact=exact)
        assert sorted(h.track_id for h in hits) == ids


def test_replaced_table_supersedes_the_old_file_and_survives_other_commits(root: Path) -> None:
    ids = [f"t{i:04d}" for i in range(12)]
    with LibraryWriter(root) as w:
        w.put_table("tags", _scores(ids, 0))
        w.commit()
    first = read_manifest(root).extra_tables["tags"]
    with LibraryWriter(root) as w:
        w.put_table("tags", _scores(ids, 1))
        w.put_table("mos", pa.table({"track_id": pa.array(ids[:3]), "mos_impression": [4.0, 2.0, 3.0]}))
        w.commit()
    m = read_manifest(root)
    assert m.extra_tables["tags"] != first and first in m.previous_files  # kept for readers of the last one
    ingest_table(vector_table(3, 8, seed=9, max_frames=2).filter(pa.compute.equal(
        pa.compute.field("track_id"), "t0001")), root)  # another commit + index update
    m2 = read_manifest(root)
    assert m2.extra_tables == m.extra_tables and (root / m2.extra_tables["mos"]).exists()
    lib = Library.open(root)
    # every extra table is joined: tracks without a mos row get NULL
    assert sorted(filter_track_ids(lib.tables(), "mos_impression >= 3 AND tag_jazz >= 0")) == ["t0000", "t0002"]
    # the tracks table's embedded manifest (repair's fallback) names the extra tables too
    embedded = json.loads(lib.tracks.schema.metadata[b"songseek.manifest"])
    assert embedded["extra_tables"] == m2.extra_tables


@pytest.mark.parametrize("name", ["tracks", "Tags", "1x", "a-b", "x" * 41, ""])
def test_bad_table_names_are_refused(root: Path, name: str) -> None:
    with LibraryWriter(root) as w, pytest.raises(UsageError):
        w.put_table(name, _scores(["t0000"], 0))


def test_table_without_string_track_id_is_refused(root: Path) -> None:
    with LibraryWriter(root) as w, pytest.raises(UsageError, match="track_id"):
        w.put_table("tags", pa.table({"track_id": [1, 2]}))


def test_get_table_sees_pending_then_committed(root: Path) -> None:
    with LibraryWriter(root) as w:
        assert w.get_table("tags") is None
        t = _scores(["t0000"], 0)
        w.put_table("tags", t)
        assert w.get_table("tags") is t
        w.commit()
    with LibraryWriter(root) as w:
        got = w.get_table("tags")
        assert got is not None and got.equals(t)
