"""track_match.py: how a CSV row finds its track (the rule its docstring states, written out case by case)
and how the CSV is read (header names, cells, line numbers, byte-order mark, stray carriage returns)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from songseek.engine.analysis.track_match import (
    TrackMatcher,
    no_match_error,
    pick_column,
    read_csv_records,
    read_csv_rows,
    row_name,
    some_unmatched_note,
)
from songseek.engine.errors import UsageError


def test_rows_are_named_by_id_then_path_then_line() -> None:
    assert row_name({"track_id": "t1", "path": "/a.wav"}, 5) == "t1"
    assert row_name({"track_id": "", "path": "/a.wav"}, 5) == "/a.wav"
    assert row_name({"impression": "3"}, 5) == "line 5"


def test_messages_name_three_unmatched_rows_and_nothing_when_all_matched(tmp_path: Path) -> None:
    msg = str(no_match_error(tmp_path / "r.csv", ["a", "b", "c", "d"]))
    assert "none of its 4 rows" in msg and "first unmatched: a, b, c; " in msg
    assert some_unmatched_note(tmp_path / "r.csv", [], 10, "skipped") is None
    note = some_unmatched_note(tmp_path / "r.csv", ["x", "y"], 10, "they are skipped")
    assert note is not None and "2 of 10 rows" in note and "(first: x)" in note and "they are skipped" in note


def test_pick_column_takes_the_first_name_in_order() -> None:
    row = {"mos": "1", "impression": "2"}
    assert pick_column(row, ["impression", "mos"]) == "impression"
    assert pick_column(row, ["rating", "mos"]) == "mos"
    assert pick_column(row, ["rating"]) is None


def test_a_csv_is_read_with_its_bom_crlf_padding_and_real_line_numbers(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_bytes("\ufeff Track_ID , Impression \r\n t0 , 3.5 \r\nt1,\"two\r\nlines\"\r\n/m/a.wav\r,4\r\n"
                    .encode("utf-8"))
    records = read_csv_records(csv, ("track_id", "path"))
    assert records == [(2, {"track_id": "t0", "impression": "3.5"}),
                       (3, {"track_id": "t1", "impression": "two\nlines"}),
                       (5, {"track_id": "/m/a.wav", "impression": "4"})]
    assert read_csv_rows(csv) == [r for _, r in records]


def test_a_csv_without_rows_or_the_needed_column_or_at_all_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("track_id,impression\n")
    with pytest.raises(UsageError, match="no rows"):
        read_csv_records(empty)
    other = tmp_path / "other.csv"
    other.write_text("name,impression\na,3\n")
    with pytest.raises(UsageError, match="needs a column named one of track_id, path; found name, impression"):
        read_csv_records(other, ("track_id", "path"))
    assert read_csv_records(other) == [(2, {"name": "a", "impression": "3"})]
    with pytest.raises(UsageError, match="cannot read the CSV"):
        read_csv_records(tmp_path / "missing.csv")


def test_a_csv_path_with_a_tilde_is_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "r.csv").write_text("path\n/a.wav\n")
    assert read_csv_rows(Path("~/r.csv")) == [{"path": "/a.wav"}]


def _library(tmp_path: Path) -> tuple[pa.Table, Path]:
    music = tmp_path / "music"
    (music / "a").mkdir(parents=True)
    (music / "b").mkdir()
    files = [music / "a" / "one.wav", music / "a" / "same.wav", music / "b" / "same.wav", music / "b" / "two.wav"]
    for f in files:
        f.write_bytes(b"")
    (tmp_path / "link").symlink_to(music / "b")
    paths = [str(f) for f in files] + ["rel/three.wav", "rel/x.wav", "other/x.wav"]
    tracks = pa.table({"track_id": [f"t{i}" for i in range(len(paths))], "path": paths})
    csv_dir = tmp_path / "ratings"
    csv_dir.mkdir()
    return tracks, csv_dir


def test_a_row_finds_its_track_by_the_documented_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracks, base = _library(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    m = TrackMatcher(tracks, base)
    music = tmp_path / "music"
    cases = [
        ({"track_id": "t3"}, "t3"),
        ({"track_id": "t99"}, None),                                  # an unknown id is no match ...
        ({"track_id": "t99", "path": str(music / "a/one.wav")}, None),  # ... even with a good path
        ({"track_id": "", "path": str(music / "a/one.wav")}, "t0"),   # an empty id: the path decides
        ({}, None),
        ({"path": ""}, None),
        ({"path": str(music / "a/../b/two.wav")}, "t3"),              # the same file once resolved
        ({"path": str(tmp_path / "link/two.wav")}, "t3"),             # through a symbolic link
        ({"path": "../music/a/one.wav"}, "t0"),                       # relative: from the CSV's folder
        ({"path": "~/music/b/two.wav"}, "t3"),                        # the user's home
        ({"path": "/elsewhere/one.wav"}, "t0"),                       # a file name only one track has
        ({"path": "/elsewhere/same.wav"}, None),                      # a file name two tracks have
        ({"path": "rel/x.wav"}, "t5"),                                # the stored string itself
        ({"path": "other/x.wav"}, "t6"),
        ({"path": "/elsewhere/three.wav"}, "t4"),
    ]
    for row, want in cases:
        assert m.match(row) == want, row
    monkeypatch.chdir(tmp_path / "music" / "a")  # the working folder is not where relative paths start
    assert m.match({"path": "one.wav"}) == "t0"  # by its name, which one track has
    assert m.match({"path": "same.wav"}) is None


def test_without_a_path_column_ids_are_the_paths(tmp_path: Path) -> None:
    m = TrackMatcher(pa.table({"track_id": ["t0", "t1"]}), tmp_path)
    assert m.match({"track_id": "t1"}) == "t1" and m.match({"path": "t0"}) == "t0"
    assert os.fspath(m.base) == os.fspath(tmp_path)
