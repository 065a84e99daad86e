"""`songseek sql`: read-only queries over tracks, frames, failures and extra tables, checked against the rows."""

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


@pytest.fixture
def lib(tmp_path: Path) -> tuple[Path, list[dict]]:
    table = vector_table(12, 8, seed=5)
    rows = table.to_pylist()
    rows[0]["artist"] = "evil\x1b]0;pwned\x07"  # a stored value that would drive a terminal
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "v.parquet")
    result = runner.invoke(app, ["ingest", str(tmp_path / "v.parquet"), "--library", str(tmp_path / "lib")])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "lib", rows


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["sql", *args])
    return result.exit_code, result.stdout, result.stderr


def test_counts_match_the_ingested_rows(lib: tuple[Path, list[dict]]) -> None:
    root, rows = lib
    code, out, err = run("SELECT artist, count(*) AS n FROM tracks GROUP BY artist ORDER BY artist", "--library",
                         str(root), "--json")
    assert code == 0, err
    tracks: dict[str, str] = {}
    for r in rows:  # a track's metadata is its first row's
        tracks.setdefault(r["track_id"], r["artist"])
    want: dict[str, int] = {}
    for artist in tracks.values():
        want[artist] = want.get(artist, 0) + 1
    assert {r["artist"]: r["n"] for r in json.loads(out)} == want
    code, out, _ = run("SELECT track_id, count(*) AS n, max(end_s) AS last FROM frames GROUP BY 1", "--library",
                       str(root), "--json")
    frames = {r["track_id"]: (r["n"], r["last"]) for r in json.loads(out)}
    for tid in tracks:
        mine = [r for r in rows if r["track_id"] == tid]
        assert frames[tid] == (len(mine), max(r["end_s"] for r in mine))
    code, out, _ = run("SELECT count(*) AS n FROM failures", "--library", str(root), "--json")
    assert json.loads(out) == [{"n": 0}]


def test_csv_output_and_escaped_table_view(lib: tuple[Path, list[dict]]) -> None:
    root, rows = lib
    code, out, _ = run("SELECT track_id, artist FROM tracks ORDER BY track_id", "--library", str(root), "--csv")
    parsed = list(csv.reader(io.StringIO(out)))
    assert code == 0 and parsed[0] == ["track_id", "artist"] and len(parsed) == 13
    code, out, _ = run("SELECT artist FROM tracks WHERE track_id = 't0000'", "--library", str(root))
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\\x1b" in out


@pytest.mark.parametrize("query, message", [
    ("SELEC 1", "SQL error"),
    ("SELECT * FROM read_csv('/etc/passwd')", "SQL error"),
    ("COPY tracks TO '/tmp/songseek-sql-leak.csv'", "SQL error"),
])
def test_bad_or_file_touching_queries_are_one_line_errors(lib: tuple[Path, list[dict]], query: str,
                                                          message: str) -> None:
    code, out, err = run(query, "--library", str(lib[0]))
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    assert not Path("/tmp/songseek-sql-leak.csv").exists()


def test_csv_lines_end_in_a_bare_newline(lib: tuple[Path, list[dict]]) -> None:
    """csv's default \\r\\n left a \\r after each path when the output became a ratings file."""
    code, out, _ = run("SELECT path FROM tracks ORDER BY path", "--library", str(lib[0]), "--csv")
    assert code == 0 and "\r" not in out and out.count("\n") == 13


def test_tag_macro_reads_the_tags_table_from_any_from_clause(lib: tuple[Path, list[dict]]) -> None:
    """`sql` is the --where sandbox: tag('jazz') must work FROM tracks too, which has no tag_ columns."""
    from songseek.engine.storage.writer import LibraryWriter

    root = lib[0]
    ids = sorted({r["track_id"] for r in lib[1]})
    scores = [round(0.1 * i, 1) for i in range(len(ids) - 1)]  # the last track has no tags row: NULL
    with LibraryWriter(root) as w:
        w.put_table("tags", pa.table({"track_id": ids[:-1], "tag_hip_hop": pa.array(scores, pa.float32())}))
        w.commit()
    code, out, err = run("SELECT max(tag('Hip Hop')) AS m, count(tag('hip hop')) AS n FROM tracks", "--library",
                         str(root), "--json")
    assert code == 0, err
    assert json.loads(out) == [{"m": pytest.approx(max(scores)), "n": len(scores)}]
    code, out, err = run("SELECT t.track_id FROM tracks t WHERE tag('hip_hop') > 0.45 ORDER BY 1", "--library",
                         str(root), "--json")
    assert code == 0, err
    assert [r["track_id"] for r in json.loads(out)] == [t for t, s in zip(ids, scores) if s > 0.45]
    code, out, err = run("SELECT tag('polka') FROM tracks", "--library", str(root))
    # tag()'s own words, without DuckDB's "Python exception occurred while executing the UDF: ValueError:"
    assert code == 2 and err.strip().splitlines() == ["error: unknown tag 'polka'; known tags: hip_hop"]


def test_tag_in_a_join_takes_the_track_id_to_read(lib: tuple[Path, list[dict]]) -> None:
    """A join brings two track_id columns into scope: tag('x') says in one line how to name one, and the
    two-argument form tag('x', t.track_id) reads that one."""
    from songseek.engine.storage.writer import LibraryWriter

    root = lib[0]
    ids = sorted({r["track_id"] for r in lib[1]})
    scores = [round(0.1 * i, 1) for i in range(len(ids))]
    with LibraryWriter(root) as w:
        w.put_table("tags", pa.table({"track_id": ids, "tag_hip_hop": pa.array(scores, pa.float32())}))
        w.commit()
    join = "FROM tracks t JOIN tags g ON t.track_id = g.track_id"
    code, _, err = run(f"SELECT tag('hip hop') AS s {join}", "--library", str(root))
    assert code == 2 and err.strip().splitlines() == [err.strip()], err
    assert "tag('jazz', t.track_id)" in err and "more than one track_id" in err, err
    code, out, err = run(f"SELECT t.track_id, tag('hip hop', t.track_id) AS s {join} ORDER BY 1", "--library",
                         str(root), "--json")
    assert code == 0, err
    assert [r["s"] for r in json.loads(out)] == pytest.approx(scores)
    code, _, err = run("SELECT t.track_id FROM tracks t JOIN tags g ON t.track_id = g.track_id WHERE track_id = 'x'",
                       "--library", str(root))
    assert code == 2 and "Ambiguous reference" in err and "tag(" not in err  # no tag(): DuckDB's own words


@pytest.fixture
def long_paths(tmp_path: Path) -> tuple[Path, list[str]]:
    rows = vector_table(3, 8, seed=6).to_pylist()
    for r in rows:
        r["path"] = f"/mnt/{'archive/' * 20}{r['track_id']}.flac"  # 170 characters: wider than any table
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "v.parquet")
    lib = tmp_path / "long"
    assert runner.invoke(app, ["ingest", str(tmp_path / "v.parquet"), "--library", str(lib)]).exit_code == 0
    return lib, sorted({r["path"] for r in rows})


@pytest.mark.parametrize("columns", [{}, {"COLUMNS": "80"}])
def test_into_a_pipe_or_file_every_value_is_whole(long_paths: tuple[Path, list[str]],
                                                  columns: dict[str, str]) -> None:
    """CliRunner's stdout is not a terminal, as `songseek sql ... > file` is not: nothing may be cut there."""
    lib, paths = long_paths
    query = "SELECT path, artist FROM tracks ORDER BY path"
    result = runner.invoke(app, ["sql", query, "--library", str(lib)], env=columns)
    assert result.exit_code == 0 and "…" not in result.stdout
    rows = [line for line in result.stdout.splitlines() if "/mnt/" in line]
    assert [line.split()[0] for line in rows] == paths  # each row on one line, its path whole
    code, out, _ = run(query, "--library", str(lib), "--csv")
    assert code == 0 and [r[0] for r in csv.reader(io.StringIO(out))][1:] == paths
    code, out, _ = run(query, "--library", str(lib), "--json")
    assert code == 0 and [r["path"] for r in json.loads(out)] == paths


def test_at_a_terminal_the_table_fits_its_width(long_paths: tuple[Path, list[str]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.cli import tables

    monkeypatch.setattr(tables, "stdout_is_terminal", lambda: True)
    result = runner.invoke(app, ["sql", "SELECT path, artist FROM tracks", "--library", str(long_paths[0])],
                           env={"COLUMNS": "80"})
    assert result.exit_code == 0 and max(len(line) for line in result.stdout.splitlines()) <= 80
