"""`ingest_table` / `read_vectors_table`: bad rows are refused with one line naming the row and the fix,
before anything is written; a library never gets a manifest it cannot read; re-ingesting is idempotent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from songseek.engine.errors import SongseekError, UsageError
from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table, read_vectors_table
from tests.library_helpers import library_rows


def rows(n_tracks: int = 3, n_win: int = 4, dim: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"track_id": f"t{t}", "start_s": w * 10.0, "end_s": w * 10.0 + 10.0, "path": f"/music/t{t}.flac",
             "embedding": rng.standard_normal(dim).astype(np.float32).tolist()}
            for t in range(n_tracks) for w in range(n_win)]


def _set(i: int, **values: Any) -> Callable[[list[dict[str, Any]]], None]:
    def edit(r: list[dict[str, Any]]) -> None:
        r[i].update(values)
    return edit


def _all(**values: Any) -> Callable[[list[dict[str, Any]]], None]:
    def edit(r: list[dict[str, Any]]) -> None:
        for row in r:
            row.update({k: v(row) if callable(v) else v for k, v in values.items()})
    return edit


# Each used to be stored (a NaN start or a 0 s / 10^6 s window even left a manifest no command could read),
# or ended in a traceback (a null track_id, a year that is no number, string embeddings).
BAD = {
    "null track_id": (_set(1, track_id=None), "row 1 (0-based): track_id is empty"),
    "empty track_id": (_set(1, track_id=""), "row 1 (0-based): track_id is empty"),
    "NaN start": (_set(2, start_s=float("nan")), "track t0, row 2 (0-based): start_s and end_s must be"),
    "null start": (_set(2, start_s=None), "start_s and end_s must be"),
    "inf end": (_set(2, end_s=float("inf")), "start_s and end_s must be"),
    "negative start": (_set(0, start_s=-5.0), "start_s -5 is before the track's start"),
    "empty window": (_set(1, end_s=10.0), "end_s 10 is not after start_s 10"),
    "window listed twice": (_set(1, start_s=0.0, end_s=10.0), "track t0 has two windows starting at 0 s"),
    "zero vector": (_set(5, embedding=[0.0] * 8), "track t1 at 10 s: the embedding is all zeros"),
    "NaN vector": (_set(5, embedding=[float("nan")] * 8), "track t1 at 10 s: the embedding holds NaN or inf"),
    "null vector": (_set(5, embedding=None), "row 5 (0-based): no embedding"),
    "start past the end": (_all(duration_s=25.0), "track t0 at 30 s: the window starts at or after"),
    "NaN duration": (_all(duration_s=float("nan")), "duration_s must be a number of seconds above 0"),
    "year no number": (_all(year="nineteen"), "year must hold whole numbers"),
    "year too big": (_all(year=10**12), "year must hold whole numbers"),
    "all windows empty": (_all(end_s=lambda r: r["start_s"]), "end_s 0 is not after start_s 0"),
    "a week-long window": (_all(end_s=lambda r: r["start_s"] + 7 * 86400.0), "windows of 604800 s"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_rows_are_refused_with_one_line_before_anything_is_written(tmp_path: Path, name: str) -> None:
    edit, message = BAD[name]
    r = rows()
    edit(r)
    with pytest.raises(UsageError) as exc:
        ingest_table(pa.Table.from_pylist(r), tmp_path / "lib", source="v.parquet")
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "lib").exists()


def test_string_embeddings_are_refused_by_type(tmp_path: Path) -> None:
    table = pa.table({"track_id": ["a"], "start_s": [0.0], "end_s": [10.0], "embedding": ["0.1 0.2"]})
    with pytest.raises(UsageError, match="embedding must hold a list of numbers per row, not string"):
        ingest_table(table, tmp_path / "lib")


def test_huge_and_tiny_vectors_are_stored_as_unit_vectors(tmp_path: Path) -> None:
    """float32 norms overflowed (1e30 became a zero vector) or underflowed (1e-30 stayed ~1e-18 long)."""
    r = rows(n_tracks=2)
    for row in r[:4]:
        row["embedding"] = [1e30] * 8
    for row in r[4:]:
        row["embedding"] = [1e-30] * 8
    ingest_table(pa.Table.from_pylist(r), tmp_path / "lib")
    for row in library_rows(tmp_path / "lib").values():
        np.testing.assert_allclose(row["vectors"], np.full((4, 8), 8 ** -0.5), rtol=1e-6)


def test_reingesting_the_same_rows_writes_no_frames_and_a_change_rewrites_only_its_track(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    table = pa.Table.from_pylist(rows())
    ingest_table(table, lib)
    shards = json.loads((lib / "manifest.json").read_text())["frame_shards"]
    before = library_rows(lib)
    report = ingest_table(table, lib)
    assert (report.tracks, report.unchanged) == (3, 3)
    assert json.loads((lib / "manifest.json").read_text())["frame_shards"] == shards  # no new shard: no dead frames
    assert {p: r["added_at"] for p, r in library_rows(lib).items()} == {p: r["added_at"] for p, r in before.items()}
    changed = rows()
    changed[0]["embedding"] = [1.0] * 8
    report = ingest_table(pa.Table.from_pylist(changed), lib)
    assert (report.tracks, report.unchanged) == (3, 2)
    after = library_rows(lib)
    np.testing.assert_allclose(after["/music/t0.flac"]["vectors"][0], np.full(8, 8 ** -0.5), rtol=1e-6)
    assert Library.open(lib).n_tracks == 3


def test_windows_or_vectors_unlike_the_librarys_are_refused_and_the_library_kept(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    ingest_table(pa.Table.from_pylist(rows()), lib)
    before = {p.name: p.read_bytes() for p in lib.iterdir() if p.is_file() and p.name != ".lock"}
    wider = rows(dim=16, seed=1)
    with pytest.raises(SongseekError, match=r"v.parquet: vectors are 16-d but .* holds 8-d vectors; ingest them "
                                            r"into a new --library"):
        ingest_table(pa.Table.from_pylist(wider), lib, source="v.parquet")
    shorter = [dict(r, track_id="s" + r["track_id"], start_s=r["start_s"] / 2, end_s=r["start_s"] / 2 + 5)
               for r in rows(seed=2)]
    with pytest.raises(UsageError, match=r"v.parquet: 5 s windows every 5 s, but .* holds 10 s windows every "
                                         r"10 s; ingest them into a new --library"):
        ingest_table(pa.Table.from_pylist(shorter), lib, source="v.parquet")
    assert {p.name: p.read_bytes() for p in lib.iterdir() if p.is_file() and p.name != ".lock"} == before


def test_the_file_is_read_by_its_content_not_its_name(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(rows())
    pq.write_table(table, tmp_path / "named.arrow")  # Parquet under an Arrow name
    feather.write_feather(table, tmp_path / "named.parquet")  # and the other way round
    with pa.OSFile(str(tmp_path / "v.arrows"), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)  # the Arrow IPC stream format
    for name in ("named.arrow", "named.parquet", "v.arrows"):
        assert read_vectors_table(tmp_path / name).num_rows == table.num_rows, name
    np.save(tmp_path / "v.npy", np.zeros((2, 8), np.float32))
    with pytest.raises(UsageError, match=r"v.npy: not a Parquet or Arrow file; write the vectors as Parquet or "
                                         r"Arrow with columns track_id, start_s, end_s, embedding"):
        read_vectors_table(tmp_path / "v.npy")
    with pytest.raises(UsageError, match=r"is a folder, not a file: give a Parquet or Arrow file of vectors"):
        read_vectors_table(tmp_path)


def test_an_ingest_interrupted_before_its_index_keeps_its_tracks_and_says_how_to_catch_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after the commit, during the index update: the tracks are stored and searched exactly; info
    said "next index run adds them", but `index` refuses a library of precomputed vectors."""
    from songseek.engine.query.stats import library_stats
    from songseek.engine.storage.writer import LibraryWriter

    lib = tmp_path / "lib"
    ingest_table(pa.Table.from_pylist(rows()), lib)

    def interrupted(self: LibraryWriter, *args: Any, **kwargs: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(LibraryWriter, "update_index", interrupted)
    more = [dict(r, track_id="n" + r["track_id"], path="/music/n" + r["track_id"]) for r in rows(seed=3)]
    with pytest.raises(KeyboardInterrupt):
        ingest_table(pa.Table.from_pylist(more), lib)
    monkeypatch.undo()
    opened = Library.open(lib)
    assert opened.n_tracks == 6
    assert library_stats(opened).index_status == ("behind by 12 frames (searched exactly); the next ingest or "
                                                  f"`songseek repair --library {lib}` adds them")


def test_a_bad_index_factory_writes_nothing_and_a_rerun_keeps_the_librarys_factory(tmp_path: Path) -> None:
    """A mistyped factory was found only after the commit: exit 2, yet the tracks were stored with the bad
    factory saved. And a rerun without --index-factory replaced the library's own factory by auto."""
    lib = tmp_path / "lib"
    table = pa.Table.from_pylist(rows(n_tracks=20, n_win=10))
    with pytest.raises(UsageError) as exc:
        ingest_table(table, lib, index_factory="Bogus,Flat")
    # FAISS's C++ signature and source line are noise to the user
    assert str(exc.value) == "bad index factory 'Bogus,Flat': could not parse index string Bogus,Flat"
    assert not lib.exists()
    ingest_table(table, lib, index_factory="IVF4,Flat")
    more = [dict(r, track_id="n" + r["track_id"], path="/music/n" + r["track_id"]) for r in rows(seed=3)]
    ingest_table(pa.Table.from_pylist(more), lib)
    m = Library.open(lib).manifest
    assert (m.index_factory, m.index_description) == ("IVF4,Flat", "IVF4,Flat")


def test_prune_removes_the_tracks_the_file_no_longer_lists(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    ingest_table(pa.Table.from_pylist(rows(n_tracks=4)), lib)
    fewer = [r for r in rows(n_tracks=4) if r["track_id"] in ("t0", "t2")]
    report = ingest_table(pa.Table.from_pylist(fewer), lib)  # without prune: an update, nothing removed
    assert (report.tracks, report.unchanged, report.removed) == (2, 2, 0)
    assert len(library_rows(lib)) == 4
    report = ingest_table(pa.Table.from_pylist(fewer), lib, prune=True)
    assert (report.tracks, report.unchanged, report.removed) == (2, 2, 2)
    kept = library_rows(lib)
    assert sorted(kept) == ["/music/t0.flac", "/music/t2.flac"]
    want = {r["track_id"]: r["embedding"] for r in fewer if r["start_s"] == 0.0}
    hits = Library.open(lib).search(vector=np.asarray(want["t2"], np.float32), k=10, rerank="max")
    assert [h.track_id for h in hits] == ["t2", "t0"]  # the removed tracks are never found again
