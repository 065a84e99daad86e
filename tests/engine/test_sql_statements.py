"""`engine.query.filters.sql` (behind `songseek sql`) runs one read-only query: statements that would write,
define objects or change settings are refused in one line, as are an empty text and several statements."""

from __future__ import annotations

import pyarrow as pa
import pytest

from songseek.engine.errors import QueryError
from songseek.engine.query.filters import sql


def tables() -> dict[str, pa.Table]:
    tracks = pa.table({"track_id": ["a", "b", "c"], "path": ["/m/a.flac", "/m/b.flac", "/m/c.flac"],
                       "size": pa.array([10, 20, 30], pa.int64())})
    return {"tracks": tracks}


@pytest.mark.parametrize("statement", [
    "CREATE TABLE favourites AS SELECT * FROM tracks",
    "CREATE MACRO f(x) AS x",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CHECKPOINT",
    "BEGIN",
    "SET threads = 1",
    "DETACH memory",
])
def test_writes_and_definitions_are_refused_in_one_line(statement: str) -> None:
    with pytest.raises(QueryError) as info:
        sql(tables(), statement)
    message = str(info.value)
    assert "\n" not in message
    assert "read-only" in message


@pytest.mark.parametrize("statement", ["", "   ", "-- only a comment"])
def test_an_empty_query_is_refused_with_its_reason(statement: str) -> None:
    with pytest.raises(QueryError, match="no SQL statement"):
        sql(tables(), statement)


def test_several_statements_are_refused() -> None:
    with pytest.raises(QueryError, match="give one statement"):
        sql(tables(), "SELECT 1; SELECT 2")


@pytest.mark.parametrize("statement, rows", [
    ("SELECT sum(size) AS s FROM tracks", [{"s": 60}]),
    ("SELECT sum(size) AS s FROM tracks;", [{"s": 60}]),
    ("FROM tracks SELECT count(*) AS n", [{"n": 3}]),
    ("WITH big AS (SELECT * FROM tracks WHERE size > 15) SELECT track_id FROM big ORDER BY 1",
     [{"track_id": "b"}, {"track_id": "c"}]),
])
def test_read_only_queries_still_run(statement: str, rows: list[dict]) -> None:
    assert [{k: int(v) if k in ("s", "n") else v for k, v in r.items()} for r in sql(tables(), statement).to_pylist()
            ] == rows


def test_describe_and_explain_still_run() -> None:
    described = sql(tables(), "DESCRIBE tracks").to_pylist()
    assert [r["column_name"] for r in described] == ["track_id", "path", "size"]
    assert sql(tables(), "EXPLAIN SELECT * FROM tracks").num_rows >= 1
