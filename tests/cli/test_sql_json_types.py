"""`songseek sql --json` writes every DuckDB value a query can give as JSON: sums (HUGEINT, read back as
Decimal), DECIMAL, dates, timestamps, times and BLOBs, not a traceback; NaN and inf as null."""

from __future__ import annotations

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
def lib(tmp_path: Path) -> tuple[Path, pa.Table]:
    table = vector_table(5, 8, seed=11, max_frames=4)
    pq.write_table(table, tmp_path / "v.parquet")
    result = runner.invoke(app, ["ingest", str(tmp_path / "v.parquet"), "--library", str(tmp_path / "lib")])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "lib", table


def test_a_sum_over_tracks_is_a_json_integer(lib: tuple[Path, pa.Table]) -> None:
    root, table = lib
    result = runner.invoke(app, ["sql", "SELECT sum(year) AS years, sum(frame_count) AS frames FROM tracks",
                                 "--library", str(root), "--json"])
    assert result.exit_code == 0, result.output
    years = {r["track_id"]: r["year"] for r in table.to_pylist()}  # one year per track
    assert json.loads(result.stdout) == [{"years": sum(years.values()), "frames": table.num_rows}]


def refuse_constant(token: str) -> None:
    raise ValueError(f"not strict JSON: {token}")


@pytest.mark.parametrize(("query", "want"), [
    ("SELECT 1.25::DECIMAL(5, 2) AS d, DATE '2020-02-29' AS day, TIMESTAMP '2020-02-29 12:30:05' AS ts, "
     "TIME '10:00:01' AS t, 'ab'::BLOB AS b",
     {"d": 1.25, "day": "2020-02-29", "ts": "2020-02-29T12:30:05", "t": "10:00:01", "b": "6162"}),
    # NaN and inf are null: strict JSON, which jq and other readers accept
    ("SELECT 'nan'::DOUBLE AS n, 'inf'::DOUBLE AS i, '-inf'::DOUBLE AS m, 1.5::DOUBLE AS x, "
     "[0.5, 'nan'::DOUBLE] AS l",
     {"n": None, "i": None, "m": None, "x": 1.5, "l": [0.5, None]}),
])
def test_decimals_dates_times_blobs_and_non_finite_numbers(lib: tuple[Path, pa.Table], query: str,
                                                           want: dict[str, object]) -> None:
    root, _ = lib
    result = runner.invoke(app, ["sql", query, "--library", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout, parse_constant=refuse_constant) == [want]
