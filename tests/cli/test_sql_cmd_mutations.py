"""`songseek sql` behaviour the other sql tests leave open: --json with --csv, CSV bytes and column order,
the --limit cut and its note, how NULL and stored control characters read in the table view."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from tests.library_helpers import vector_table

runner = CliRunner()


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("sqlmut")
    rows = vector_table(9, 8, seed=11, max_frames=3).to_pylist()
    for r in rows:
        if r["track_id"] == "t0004":
            r["artist"] = None  # a NULL in the table view
    pq.write_table(pa.Table.from_pylist(rows), tmp / "v.parquet")
    result = runner.invoke(app, ["ingest", str(tmp / "v.parquet"), "--library", str(tmp / "lib")])
    assert result.exit_code == 0, result.stderr
    tracks: dict[str, dict] = {}
    for r in rows:  # a track's metadata is its first row's
        tracks.setdefault(r["track_id"], r)
    return tmp / "lib", [tracks[t] for t in sorted(tracks)]


def _table_ids(out: str) -> list[str]:
    """The track ids of a table view's rows, in printed order (a plain scan for t000N tokens)."""
    ids = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("t000") and len(word) == 5:
                ids.append(word)
    return ids


def test_json_and_csv_together_is_a_one_line_usage_error(lib: tuple[Path, list[dict]]) -> None:
    result = runner.invoke(app, ["sql", "SELECT 1", "--library", str(lib[0]), "--json", "--csv"])
    assert result.exit_code == 2 and result.stdout == ""
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "--json" in err[0] and "--csv" in err[0]


def test_csv_bytes_have_no_carriage_return_and_keep_the_query_column_order(lib: tuple[Path, list[dict]]) -> None:
    """CliRunner's .stdout turns \\r\\n into \\n: only the bytes show what a file would hold."""
    root, tracks = lib
    result = runner.invoke(app, ["sql", "SELECT year, track_id, path FROM tracks ORDER BY track_id",
                                 "--library", str(root), "--csv"])
    assert result.exit_code == 0, result.stderr
    raw = result.stdout_bytes
    assert b"\r" not in raw and raw.endswith(b"\n") and raw.count(b"\n") == len(tracks) + 1
    parsed = list(csv.reader(io.StringIO(raw.decode())))
    assert parsed[0] == ["year", "track_id", "path"]
    assert parsed[1:] == [[str(t["year"]), t["track_id"], t["path"]] for t in tracks]


@pytest.mark.parametrize("limit", [1, 4, 8])
def test_limit_shows_that_many_rows_and_counts_the_rest(lib: tuple[Path, list[dict]], limit: int) -> None:
    root, tracks = lib
    result = runner.invoke(app, ["sql", "SELECT track_id FROM tracks ORDER BY track_id", "--library", str(root),
                                 "--limit", str(limit)])
    assert result.exit_code == 0, result.stderr
    want = [t["track_id"] for t in tracks]
    assert _table_ids(result.stdout) == want[:limit]
    hidden = len(want) - limit
    assert result.stderr.strip() == f"{hidden} more rows not shown (--limit 0, --json or --csv)"


@pytest.mark.parametrize("limit", ["0", "9", "50"])
def test_limit_zero_or_at_least_the_rows_shows_all_without_a_note(lib: tuple[Path, list[dict]], limit: str) -> None:
    root, tracks = lib
    result = runner.invoke(app, ["sql", "SELECT track_id FROM tracks ORDER BY track_id", "--library", str(root),
                                 "--limit", limit])
    assert result.exit_code == 0 and result.stderr == ""
    assert _table_ids(result.stdout) == [t["track_id"] for t in tracks]


def test_null_reads_as_an_empty_cell_not_none(lib: tuple[Path, list[dict]]) -> None:
    root, _ = lib
    result = runner.invoke(app, ["sql", "SELECT track_id, artist FROM tracks WHERE track_id = 't0004'",
                                 "--library", str(root)])
    assert result.exit_code == 0, result.stderr
    assert "None" not in result.stdout and "null" not in result.stdout.lower()
    row = [line for line in result.stdout.splitlines() if "t0004" in line]
    assert len(row) == 1 and row[0].replace("│", " ").split() == ["t0004"]
    out = runner.invoke(app, ["sql", "SELECT artist FROM tracks WHERE track_id = 't0004'", "--library", str(root),
                              "--json"]).stdout
    assert json.loads(out) == [{"artist": None}]


def test_a_column_name_with_control_characters_is_escaped(lib: tuple[Path, list[dict]]) -> None:
    root, _ = lib
    result = runner.invoke(app, ["sql", "SELECT 1 AS \"a\x1b[31mb\"", "--library", str(root)])
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "a\\x1b[31mb" in result.stdout
