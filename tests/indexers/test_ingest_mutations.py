"""`ingest_table` details the main ingest tests leave open (found by a mutation sweep): the window and hop a
table implies, what is stored per track, what a re-ingest compares, and the exact refusals. Every expected
value is computed here with plain loops from the rows themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table, read_vectors_table


def vec(rng: np.random.Generator, dim: int = 8) -> list[float]:
    return rng.standard_normal(dim).astype(np.float32).tolist()


def table(spec: dict[str, list[tuple[float, float]]], seed: int = 0, **extra: dict[str, Any]) -> pa.Table:
    """Rows for ``spec`` (track id -> its (start, end) windows), random vectors; ``extra``: column ->
    track id -> value."""
    rng = np.random.default_rng(seed)
    rows = []
    for tid, windows in spec.items():
        for s, e in windows:
            row: dict[str, Any] = {"track_id": tid, "start_s": s, "end_s": e, "embedding": vec(rng)}
            for col, values in extra.items():
                row[col] = values.get(tid)
            rows.append(row)
    return pa.Table.from_pylist(rows)


def manifest(lib: Path) -> dict[str, Any]:
    return json.loads((lib / "manifest.json").read_text())


def stored(lib: Path) -> dict[str, dict[str, Any]]:
    """track id -> its tracks-table row plus its frames' start_s / end_s / vectors, read from the library."""
    library = Library.open(lib)
    out = {}
    for row in library.tracks.to_pylist():
        a, n = row["frame_start"], row["frame_count"]
        row["starts"] = library.store.start_s[a:a + n].tolist()
        row["ends"] = library.store.end_s[a:a + n].tolist()
        row["vectors"] = np.array(library.store.vectors(a, n))
        out[row["track_id"]] = row
    return out


def median(values: list[float]) -> float:
    s = sorted(values)
    k = len(s)
    return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2


# --- the window and hop a table implies --------------------------------------------------------------------

def test_window_is_the_median_length_and_hop_the_median_step_within_each_track(tmp_path: Path) -> None:
    # lengths 10, 10, 10, 4 (a short last window): median 10, mean 8.5; steps within tracks 4, 4, 2, 4:
    # median 4, mean 3.5, min 2; the steps across tracks (t1 after t0's last window: -10) are no steps
    spec = {"t0": [(0.0, 10.0), (4.0, 14.0), (8.0, 18.0), (10.0, 14.0)], "t1": [(0.0, 10.0), (4.0, 14.0)]}
    lengths = [e - s for w in spec.values() for s, e in w]
    steps = [b[0] - a[0] for w in spec.values() for a, b in zip(w, w[1:])]
    lib = tmp_path / "lib"
    ingest_table(table(spec), lib)
    m = manifest(lib)
    assert (m["window_s"], m["hop_s"]) == (median(lengths), median(steps)) == (10.0, 4.0)


def test_single_window_tracks_do_not_make_a_hop_out_of_the_steps_between_tracks(tmp_path: Path) -> None:
    # within t0 the step is 2; between tracks the start goes 2 -> 7 -> 7 -> 7 (steps 5, 0, 0: no steps)
    spec = {"t0": [(0.0, 4.0), (2.0, 6.0)], "t1": [(7.0, 11.0)], "t2": [(7.0, 11.0)], "t3": [(7.0, 11.0)]}
    lib = tmp_path / "lib"
    ingest_table(table(spec), lib)
    assert (manifest(lib)["window_s"], manifest(lib)["hop_s"]) == (4.0, 2.0)


def test_window_and_hop_given_win_over_the_tables(tmp_path: Path) -> None:
    spec = {"t0": [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)]}
    ingest_table(table(spec), tmp_path / "a")
    assert (manifest(tmp_path / "a")["window_s"], manifest(tmp_path / "a")["hop_s"]) == (10.0, 5.0)
    ingest_table(table(spec), tmp_path / "b", window_s=8.0, hop_s=4.0)
    assert (manifest(tmp_path / "b")["window_s"], manifest(tmp_path / "b")["hop_s"]) == (8.0, 4.0)
    one = {"t0": [(0.0, 10.0)]}  # one window per track: no hop in the table, so the window's length
    ingest_table(table(one), tmp_path / "c")
    assert (manifest(tmp_path / "c")["window_s"], manifest(tmp_path / "c")["hop_s"]) == (10.0, 10.0)


def test_a_hop_past_a_day_is_refused_like_a_window_past_a_day(tmp_path: Path) -> None:
    spec = {"t0": [(0.0, 10.0), (100_000.0, 100_010.0)]}
    with pytest.raises(UsageError, match=r"windows of 10 s every 100000 s; at most 86400 s each"):
        ingest_table(table(spec), tmp_path / "lib", source="v.parquet")
    assert not (tmp_path / "lib").exists()


def test_single_window_tracks_fit_a_library_of_any_hop_but_a_stated_hop_must_match(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    ingest_table(table({"t0": [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)]}), lib)  # 10 s windows every 5 s
    r = ingest_table(table({"s1": [(0.0, 10.0)], "s2": [(0.0, 10.0)]}, seed=1), lib)
    assert (r.tracks, r.unchanged) == (2, 0) and Library.open(lib).n_tracks == 3
    with pytest.raises(UsageError, match=r"10 s windows every 7 s, but .* holds 10 s windows every 5 s"):
        ingest_table(table({"s3": [(0.0, 10.0)]}, seed=2), lib, hop_s=7.0)
    with pytest.raises(UsageError, match=r"11 s windows every 5 s, but .* holds 10 s windows every 5 s"):
        ingest_table(table({"s4": [(0.0, 11.0), (5.0, 16.0)]}, seed=3), lib)
    assert Library.open(lib).n_tracks == 3


# --- what is stored per track ------------------------------------------------------------------------------

def test_rows_in_any_order_are_grouped_by_track_and_sorted_by_start(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = [{"track_id": f"t{t}", "start_s": 5.0 * w, "end_s": 5.0 * w + 10.0, "embedding": vec(rng)}
            for t in range(3) for w in range(4)]
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    lib = tmp_path / "lib"
    ingest_table(pa.Table.from_pylist(shuffled), lib)
    got = stored(lib)
    assert sorted(got) == ["t0", "t1", "t2"]
    for tid, row in got.items():
        mine = sorted((r for r in rows if r["track_id"] == tid), key=lambda r: r["start_s"])  # type: ignore[arg-type, return-value]
        assert row["starts"] == [r["start_s"] for r in mine]
        assert row["ends"] == [r["end_s"] for r in mine]
        want = np.array([r["embedding"] for r in mine], np.float64)
        want /= np.sqrt((want ** 2).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(row["vectors"], want, rtol=1e-5, atol=1e-6)


def test_path_duration_and_tags_per_track(tmp_path: Path) -> None:
    spec = {"a": [(0.0, 10.0), (5.0, 15.0)], "b": [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)],
            "c": [(0.0, 10.0), (5.0, 12.0)]}
    lib = tmp_path / "lib"
    ingest_table(table(spec, path={"a": "/music/a.flac", "b": None, "c": ""},
                       duration_s={"a": 13.5, "b": None, "c": None}, year={"a": 1977, "b": None, "c": 2001},
                       title={"a": "Song A", "b": None, "c": "Song C"}), lib)
    got = stored(lib)
    # a path given is kept; a missing or empty one is the track id (never the text "None")
    assert {t: r["path"] for t, r in got.items()} == {"a": "/music/a.flac", "b": "b", "c": "c"}
    # a duration given is kept; otherwise the latest window end
    assert got["a"]["duration_s"] == 13.5
    for t in ("b", "c"):
        assert got[t]["duration_s"] == max(e for _, e in spec[t])
    assert {t: r["year"] for t, r in got.items()} == {"a": 1977, "b": None, "c": 2001}
    assert {t: r["title"] for t, r in got.items()} == {"a": "Song A", "b": None, "c": "Song C"}


def test_the_duration_is_the_largest_end_not_the_last_windows(tmp_path: Path) -> None:
    spec = {"t0": [(0.0, 10.0), (5.0, 15.0), (10.0, 12.0)]}  # the last window (by start) ends first
    lib = tmp_path / "lib"
    ingest_table(table(spec), lib)
    assert stored(lib)["t0"]["duration_s"] == max(e for _, e in spec["t0"]) == 15.0


def test_a_window_may_start_just_before_the_stated_duration_not_at_it(tmp_path: Path) -> None:
    spec = {"t0": [(0.0, 10.0), (5.0, 15.0)], "t1": [(0.0, 10.0), (5.0, 15.0)]}
    ingest_table(table(spec, duration_s={"t0": 5.5, "t1": None}), tmp_path / "ok")  # None: no stated end
    assert stored(tmp_path / "ok")["t1"]["duration_s"] == 15.0
    with pytest.raises(UsageError, match=r"track t0 at 5 s: the window starts at or after the track's end "
                                         r"\(duration_s 5\)"):
        ingest_table(table(spec, duration_s={"t0": 5.0, "t1": 20.0}), tmp_path / "bad")
    with pytest.raises(UsageError, match=r"duration_s must be a number of seconds above 0 \(got 0.0\)"):
        ingest_table(table(spec, duration_s={"t0": 0.0, "t1": 20.0}), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("scales", [[1e150, 1e-150, 1e150, 1e-150], [1e300, 1e-170, 1e-300, 1e-310]])
def test_vectors_beyond_float32_range_are_normalised_in_float64(tmp_path: Path, scales: list[float]) -> None:
    """1e150 overflows float32 (inf) and 1e-150 underflows it (0); the squares of 1e300 overflow float64 and
    those of 1e-170 underflow it (1e-310 is subnormal): the direction must survive all of them."""
    rng = np.random.default_rng(3)
    directions = rng.standard_normal((4, 8))
    rows = [{"track_id": "t0", "start_s": 5.0 * w, "end_s": 5.0 * w + 10.0,
             "embedding": (directions[w] * scales[w]).tolist()} for w in range(4)]
    lib = tmp_path / "lib"
    ingest_table(pa.Table.from_pylist(rows), lib)
    want = [[x / sum(y * y for y in d) ** 0.5 for x in d] for d in directions.tolist()]
    np.testing.assert_allclose(stored(lib)["t0"]["vectors"], np.array(want), rtol=1e-5, atol=1e-6)


# --- re-ingesting ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", ["end of one window", "start of one window", "title", "path", "duration"])
def test_a_reingest_that_changes_anything_of_a_track_rewrites_it(tmp_path: Path, change: str) -> None:
    spec = {"t0": [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)], "t1": [(0.0, 10.0), (5.0, 15.0)]}
    extra: dict[str, dict[str, Any]] = {"path": {"t0": "/m/t0.flac", "t1": "/m/t1.flac"},
                                        "title": {"t0": "T0", "t1": "T1"}, "duration_s": {"t0": 20.0, "t1": 15.0}}
    lib = tmp_path / "lib"
    ingest_table(table(spec, **extra), lib)  # type: ignore[arg-type]
    if change == "end of one window":
        spec["t0"][1] = (5.0, 14.0)  # the same largest end, the same vectors: only a time differs
    elif change == "start of one window":
        spec["t0"][1] = (6.0, 15.0)
    elif change == "title":
        extra["title"]["t0"] = "T0 (remastered)"
    elif change == "path":
        extra["path"]["t0"] = "/m/moved/t0.flac"
    else:
        extra["duration_s"]["t0"] = 19.0
    r = ingest_table(table(spec, **extra), lib)  # type: ignore[arg-type]
    assert (r.tracks, r.unchanged) == (2, 1)
    got = stored(lib)["t0"]
    assert list(zip(got["starts"], got["ends"], strict=True)) == spec["t0"]
    assert (got["path"], got["title"], got["duration_s"]) == (extra["path"]["t0"], extra["title"]["t0"],
                                                              extra["duration_s"]["t0"])
    assert Library.open(lib).n_tracks == 2


# --- nprobe ------------------------------------------------------------------------------------------------

def test_nprobe_zero_is_saved_and_a_negative_one_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spec = {f"t{i}": [(0.0, 10.0), (5.0, 15.0)] for i in range(4)}
    with pytest.raises(UsageError, match=r"--nprobe must be 0 \(automatic\) or more \(got -1\)"):
        ingest_table(table(spec), tmp_path / "lib", nprobe=-1)
    assert not (tmp_path / "lib").exists()
    lib = tmp_path / "lib"
    ingest_table(table(spec), lib, nprobe=5)
    assert manifest(lib)["index_nprobe"] == 5
    ingest_table(table(spec), lib)  # None: keep
    assert manifest(lib)["index_nprobe"] == 5
    ingest_table(table(spec), lib, nprobe=0)  # 0: back to the automatic rule
    assert manifest(lib)["index_nprobe"] == 0


# --- refusals: one line naming the rows ----------------------------------------------------------------------

def test_refusals_count_the_other_bad_rows(tmp_path: Path) -> None:
    spec = {"t0": [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]}

    def refusal(bad_rows: list[int]) -> str:
        t = table(spec).to_pylist()
        for i in bad_rows:
            t[i]["embedding"] = [0.0] * 8
        with pytest.raises(UsageError) as exc:
            ingest_table(pa.Table.from_pylist(t), tmp_path / "lib")
        return str(exc.value)

    assert refusal([1]).endswith("the embedding is all zeros, so it matches nothing; drop the row or give "
                                 "its real vector")
    assert "matches nothing (and 1 more row);" in refusal([1, 3])
    assert "matches nothing (and 2 more rows);" in refusal([1, 2, 3])
    assert "track t0 at 5 s" in refusal([3, 1])  # the first bad row is named


def test_a_window_listed_twice_names_both_rows_in_order(tmp_path: Path) -> None:
    rows = table({"t0": [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]}).to_pylist()
    rows[3].update(start_s=5.0, end_s=15.0)  # rows 1 and 3 (0-based)
    for order in (rows, rows[::-1]):  # reversed: rows 0 and 2
        first, second = sorted(i for i, r in enumerate(order) if r["start_s"] == 5.0)
        with pytest.raises(UsageError, match=rf"track t0 has two windows starting at 5 s \(rows {first} and "
                                             rf"{second}, 0-based\); list each window once"):
            ingest_table(pa.Table.from_pylist(order), tmp_path / "lib")


def test_an_empty_table_is_refused(tmp_path: Path) -> None:
    empty = table({"t0": [(0.0, 10.0)]}).slice(0, 0)
    with pytest.raises(UsageError, match=r"^v.parquet: no rows$"):
        ingest_table(empty, tmp_path / "lib", source="v.parquet")
    assert not (tmp_path / "lib").exists()


def test_vectors_for_a_library_of_another_encoder_name_the_encoder_not_only_the_dimension(tmp_path: Path) -> None:
    from songseek.engine.encoders.fake import FakeEncoder
    from songseek.engine.errors import IncompatibleLibraryError

    info = FakeEncoder().info
    lib = tmp_path / "lib"
    rng = np.random.default_rng(4)
    ingest_table(pa.Table.from_pylist([{"track_id": "a", "start_s": 0.0, "end_s": 10.0,
                                        "embedding": vec(rng, info.dim)}]), lib, encoder=info)
    with pytest.raises(IncompatibleLibraryError, match=r"was built with another encoder: encoder 'fake' \(library\) "
                                                       r"vs 'precomputed' \(now\)"):
        ingest_table(table({"b": [(0.0, 10.0)]}), lib)
    assert Library.open(lib).n_tracks == 1


# --- reading the file ----------------------------------------------------------------------------------------

def test_feather_v1_and_a_damaged_parquet_file(tmp_path: Path) -> None:
    flat = pa.table({"track_id": ["a", "b"], "start_s": [0.0, 0.0], "end_s": [10.0, 10.0]})
    feather.write_feather(flat, tmp_path / "v1.feather", version=1)
    assert (tmp_path / "v1.feather").read_bytes()[:4] == b"FEA1"
    assert read_vectors_table(tmp_path / "v1.feather").to_pylist() == flat.to_pylist()
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    with pytest.raises(UsageError, match=r"broken.parquet: not a readable Parquet/Arrow file \("):
        read_vectors_table(broken)
