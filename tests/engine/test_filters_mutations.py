"""engine/query/filters.py: behaviour the main filter tests leave open (found by a mutation sweep), each
checked against a plain-Python evaluation of the predicate over the rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from songseek.engine.errors import FilterLimitError
from songseek.engine.query.filters import FilterLimits, filter_track_ids


def _tables() -> dict[str, pa.Table]:
    """Six tracks; a mos table that scores only some of them (t1 twice); a table without track_id."""
    return {"tracks": pa.table({"track_id": [f"t{i}" for i in range(6)], "year": [2000 + i for i in range(6)]}),
            "mos": pa.table({"track_id": ["t0", "t1", "t1", "t3", "gone"], "mos": [4.5, 2.0, 3.5, 1.0, 5.0]}),
            "notes": pa.table({"note": ["not joined"]})}


def naive(tables: dict[str, pa.Table], keep: object) -> list[str]:
    """Track ids, once each in tracks order, whose (track row, mos rows or None) pass ``keep``: a LEFT JOIN."""
    mos = tables["mos"].to_pylist()
    out = []
    for row in tables["tracks"].to_pylist():
        scores = [m["mos"] for m in mos if m["track_id"] == row["track_id"]] or [None]
        if any(keep(row, s) for s in scores) and row["track_id"] not in out:  # type: ignore[operator]
            out.append(row["track_id"])
    return out


def test_tracks_missing_from_an_extra_table_are_kept_by_the_join_as_nulls() -> None:
    """The extra tables with a track_id column are LEFT JOINed (one without, `notes`, is not joined at all): a
    track no extra table row names still reaches the predicate, with NULLs, so `mos IS NULL` finds the unscored
    tracks and `coalesce` can give them a default."""
    t = _tables()
    cases = {
        "mos IS NULL": lambda r, s: s is None,
        "coalesce(mos, 3.0) >= 3.0": lambda r, s: (3.0 if s is None else s) >= 3.0,
        "year >= 2002": lambda r, s: r["year"] >= 2002,
        "year <= 2001": lambda r, s: r["year"] <= 2001,  # t1 has two mos rows
        "mos < 3.0": lambda r, s: s is not None and s < 3.0,
    }
    for where, keep in cases.items():
        got = filter_track_ids(t, where)
        assert sorted(got) == sorted(naive(t, keep)), where
        assert len(got) == len(set(got)), where  # a track with two mos rows comes back once
    assert sorted(filter_track_ids(t, "mos IS NULL")) == ["t2", "t4", "t5"]


def test_concat_ws_counts_its_separator_between_every_pair() -> None:
    """concat_ws(sep, a, b, ...) repeats the separator between the others: with 8 arguments of a 40-byte column
    the value is 7 x 40 + 6 x 40 = 520 bytes a row, 1.04 MB per 2048 rows, past a 1 MB limit (a plain sum of the
    arguments, 320 bytes, would let it run)."""
    tracks = pa.table({"track_id": [f"t{i}" for i in range(4)], "path": ["/" + "p" * 39] * 4})
    width = 40
    for n, refused in ((8, True), (5, False)):
        where = f"concat_ws({', '.join(['path'] * n)}) = 'x'"
        need = ((n - 1) * width + (n - 2) * width + 16) * 2048  # the value, and the comparison's boolean
        assert (need > 2**20) is refused
        if refused:
            with pytest.raises(FilterLimitError, match="memory limit of 1 MB"):
                filter_track_ids({"tracks": tracks}, where, FilterLimits(memory_mb=1))
        else:
            assert list(filter_track_ids({"tracks": tracks}, where, FilterLimits(memory_mb=1))) == []


def _long_paths(width: int) -> dict[str, pa.Table]:
    return {"tracks": pa.table({"track_id": [f"t{i}" for i in range(3)],
                                "path": [f"/{i}" + "p" * (width - 2) for i in range(3)]})}


def test_reading_a_long_column_costs_nothing_only_the_values_built_from_it() -> None:
    """A column is the scan's own data: comparing 1000-byte paths builds only booleans (16 bytes a row), well
    within a 1 MB limit, though the column itself is 1000 x 2048 bytes a chunk."""
    tables = _long_paths(1000)
    assert sorted(filter_track_ids(tables, "path = '/1' || 'x' OR length(path) = 1000",
                                   FilterLimits(memory_mb=1))) == ["t0", "t1", "t2"]


def test_a_pairwise_function_is_bounded_by_the_memory_limit_too() -> None:
    """levenshtein of two 1000-byte values is 10^6 steps: within the default cap (10^7) but past what a 1 MB limit
    allows (2^20 / 8 = 131,072 cells), so it is refused before running under that limit and runs under 64 MB."""
    tables = _long_paths(1000)
    where = "levenshtein(path, path) = 0"
    with pytest.raises(FilterLimitError, match=r"levenshtein\(\) of values up to 1,000 and 1,000 bytes"):
        filter_track_ids(tables, where, FilterLimits(memory_mb=1))
    assert sorted(filter_track_ids(tables, where, FilterLimits(memory_mb=64))) == ["t0", "t1", "t2"]
