"""The `where` sandbox past DuckDB's own settings: a subquery reads the library's tables, not DuckDB's catalog
views; values that DuckDB's memory limit does not count (each node of the expression tree keeps its result for a
chunk of 2048 rows; damerau_levenshtein()'s matrix) are bounded from the columns' largest stored values before
anything runs. Every case stays small enough to finish quickly on the code before these checks."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from songseek.engine.errors import FilterLimitError, QueryError
from songseek.engine.query.filters import FilterLimits, filter_track_ids


def _tables(n: int = 2048, path_chars: int = 100) -> dict[str, pa.Table]:
    return {"tracks": pa.table({"track_id": [f"t{i}" for i in range(n)],
                                "path": [f"/m/{i:08d}/" + "x" * (path_chars - 12) for i in range(n)],
                                "artist": [f"a{i % 7}" for i in range(n)]}),
            "tags": pa.table({"track_id": [f"t{i}" for i in range(n)], "tag_jazz": [i / n for i in range(n)]})}


@pytest.mark.parametrize("view", ["information_schema.tables", "information_schema.columns", "duckdb_tables",
                                  "duckdb_columns", "pg_catalog.pg_settings", "sqlite_master",
                                  "system.main.duckdb_views", "memory.main.tracks", '"tracks.csv"'])
def test_a_subquery_reads_the_library_tables_not_the_catalog(view: str) -> None:
    only = r"a subquery may read only the library's tables \(tags, tracks\), not "
    with pytest.raises(QueryError, match=only) as err:
        filter_track_ids(_tables(), f"EXISTS (SELECT 1 FROM {view})")
    assert "\n" not in str(err.value)


def test_the_library_tables_still_read_by_name_and_alias() -> None:
    t = _tables(20)
    assert list(filter_track_ids(t, "track_id IN (SELECT track_id FROM tags WHERE tag_jazz >= 0.9)")) == ["t18", "t19"]
    assert len(filter_track_ids(t, "EXISTS (SELECT 1 FROM tracks t2 WHERE t2.path = tracks.path)")) == 20


@pytest.mark.parametrize("where", [
    # 40 nested concatenations: each keeps 2048 rows of its (ever longer) value, 160 MB in all, which DuckDB's
    # memory limit does not see (300 of them took 3 GB under a 64 MB limit, unbounded they need 28 GB)
    "length(" + "||".join(["path"] * 40) + ") < 0",
    "length(concat(" + ", ".join(["path"] * 400) + ")) < 0",
    "length(path" + "||'.'" * 150 + ") < 0",
])
def test_values_past_the_memory_limit_are_refused_before_running(where: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(FilterLimitError, match=r"could build [\d.]+ MB of values per 2048 rows, past its memory "
                                               r"limit of 64 MB \(FilterLimits.memory_mb\)") as err:
        filter_track_ids(_tables(), where, FilterLimits(memory_mb=64))
    assert (err.value.limit, err.value.value) == ("memory_mb", 64) and "\n" not in str(err.value)
    assert time.perf_counter() - t0 < 20  # refused at once (generous: a cold first call on a slow machine)
    filter_track_ids(_tables(), "length(path||path||artist) > 0", FilterLimits(memory_mb=64))  # a few are fine


def test_a_pairwise_function_of_long_values_is_refused_before_running() -> None:
    """damerau_levenshtein() allocates a len x len matrix of 8-byte cells, within one row where interrupt()
    cannot reach it: 600 characters of predicate on 315-byte paths asked for 8 GB."""
    t = _tables(1, path_chars=1000)
    long = "||".join(["path"] * 4)  # 4,000 bytes: 16 million cells, 128 MB
    for name in ("damerau_levenshtein", "levenshtein", "jaro_similarity"):
        with pytest.raises(FilterLimitError, match=rf"{name}\(\) of values up to 4,000 and 4,000 bytes long"):
            filter_track_ids(t, f"{name}({long}, {long}) < 0", FilterLimits(memory_mb=64))
    assert len(filter_track_ids(t, "damerau_levenshtein(path, path) = 0", FilterLimits(memory_mb=64))) == 1


def test_ordinary_predicates_fit_tight_limits() -> None:
    t, tight = _tables(), FilterLimits(memory_mb=16)
    assert len(filter_track_ids(t, "artist = 'a3' AND path LIKE '/m/%' AND tag('jazz') > 0.5", tight)) == \
        sum(i % 7 == 3 and i / 2048 > 0.5 for i in range(2048))
    assert len(filter_track_ids(t, "levenshtein(artist, 'a4') <= 1 AND lower(upper(path)) <> ''", tight)) == 2048
    many = " OR ".join(f"track_id = 't{i}'" for i in range(300))  # constants count once, not per row
    assert len(filter_track_ids(t, many, tight)) == 300
