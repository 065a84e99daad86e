"""server/config.py Limits.filter_limits (a mutation sweep left its max_chars open): the predicate the server
builds from a request at every per-field limit (``where`` at where_chars, artist/album/genre/tag at
max_query_chars, years) fits the engine's max_chars and selects what a plain-Python filter does, also when
every value is made of quotes (each doubled in its SQL literal); and max_chars still bounds it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.errors import QueryError
from songseek.engine.query.filters import filter_track_ids
from songseek.server import Limits
from songseek.server.query import SearchParams


def _where(length: int, year: int) -> str:
    """``year >= YEAR`` padded with inner blanks to exactly ``length`` characters."""
    core = f"year >= {year}"
    return "year" + " " * (length - len(core) + 1) + f">= {year}"


def _tables(value: str, seed: int) -> dict[str, pa.Table]:
    """30 tracks; about half carry ``value`` as artist, album and genre (the others one character less)."""
    rng = np.random.default_rng(seed)
    match = rng.random(30) < 0.5
    names = [value if m else value[:-1] for m in match]
    years = rng.integers(1980, 2020, 30).tolist()
    return {"tracks": pa.table({"track_id": [f"t{i}" for i in range(30)], "artist": names, "album": names,
                                "genre": names, "year": years})}


@pytest.mark.parametrize("char", ["a", "'"])
@pytest.mark.parametrize(("where_chars", "query_chars"), [(2_000, 2_000), (50, 700), (900, 3)])
def test_a_request_at_every_field_limit_fits_the_engine_bound(char: str, where_chars: int, query_chars: int) -> None:
    limits = Limits(where_chars=where_chars, max_query_chars=query_chars)
    value = char * query_chars
    params = SearchParams.model_validate({"where": _where(where_chars, 1990), "artist": value, "album": value,
                                          "genre": value, "year_min": -(2**63), "year_max": 2**63 - 1})
    params = params.checked(limits)
    predicate = params.predicate(has_tags=False)
    assert predicate is not None
    tables = _tables(value, where_chars + query_chars)
    want = [r["track_id"] for r in tables["tracks"].to_pylist()
            if r["year"] >= 1990 and r["artist"] == r["album"] == r["genre"] == value]
    assert want  # the seed leaves some
    assert filter_track_ids(tables, predicate, limits.filter_limits()).tolist() == want


def test_with_a_tag_filter_every_field_at_its_limit_still_fits() -> None:
    """The tag literal counts too (tag('...') >= the threshold): the predicate's length is within max_chars."""
    limits = Limits()
    for char in ("a", "'"):
        value = char * limits.max_query_chars
        params = SearchParams.model_validate({"where": _where(limits.where_chars, 1), "artist": value,
                                              "album": value, "genre": value, "tag": value,
                                              "tag_min": -1.2345678901234567e-300, "year_min": -(2**63),
                                              "year_max": 2**63 - 1}).checked(limits)
        predicate = params.predicate(has_tags=True)
        assert predicate is not None and len(predicate) <= limits.filter_limits().max_chars, char


def test_max_chars_still_bounds_a_predicate_past_every_field_limit() -> None:
    """The bound is not lifted: a where predicate longer than max_chars itself is refused by the engine."""
    limits = Limits(where_chars=10, max_query_chars=5)
    bound = limits.filter_limits().max_chars
    tables = _tables("x", 0)
    assert len(filter_track_ids(tables, _where(bound, 1990), limits.filter_limits())) > 0
    with pytest.raises(QueryError, match="max_chars"):
        filter_track_ids(tables, _where(bound + 1, 1990), limits.filter_limits())
