"""engine/query/filters.py: the FilterLimits.max_chars bound (a mutation sweep left it open): a predicate of
exactly ``max_chars`` characters runs and selects what a plain-Python filter selects; one character more is
refused, in one line that names both lengths."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.errors import QueryError
from songseek.engine.query.filters import FilterLimits, filter_track_ids


def _tables(seed: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    years = rng.integers(1990, 2010, 40).tolist()
    return {"tracks": pa.table({"track_id": [f"t{i}" for i in range(40)], "year": years})}


def _padded(length: int, year: int) -> str:
    """``year >= YEAR``, with blanks between its words (inside the predicate, so strip() keeps them) up to
    exactly ``length`` characters."""
    core = f"year >= {year}"
    assert len(core) <= length
    return "year" + " " * (length - len(core) + 1) + f">= {year}"


@pytest.mark.parametrize("max_chars", [13, 64, 777])
def test_a_predicate_of_exactly_max_chars_runs_and_one_more_is_refused(max_chars: int) -> None:
    tables = _tables(max_chars)
    limits = FilterLimits(max_chars=max_chars)
    at_limit, past = _padded(max_chars, 2000), _padded(max_chars + 1, 2000)
    assert (len(at_limit), len(past)) == (max_chars, max_chars + 1)
    want = [r["track_id"] for r in tables["tracks"].to_pylist() if r["year"] >= 2000]
    assert filter_track_ids(tables, at_limit, limits).tolist() == want
    with pytest.raises(QueryError) as err:
        filter_track_ids(tables, past, limits)
    message = str(err.value)
    assert f"{max_chars + 1:,} characters long" in message and f"at most {max_chars:,}" in message
    assert "\n" not in message


def test_the_bound_counts_the_stripped_predicate() -> None:
    """Blanks around the predicate are not part of it: a predicate at the limit with blanks around runs."""
    tables = _tables(1)
    where = _padded(30, 1995)
    want = [r["track_id"] for r in tables["tracks"].to_pylist() if r["year"] >= 1995]
    assert filter_track_ids(tables, f"  \n{where}\t ", FilterLimits(max_chars=30)).tolist() == want
