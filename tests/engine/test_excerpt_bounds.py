"""excerpt_bounds: an excerpt with no end is never refused by floating-point rounding (found on real recordings)."""

from __future__ import annotations

import pytest

from songseek.engine.errors import QueryError
from songseek.engine.query.search import MAX_EXCERPT_S, excerpt_bounds


@pytest.mark.parametrize("start", [61.4, 0.1, 33.3, 1234.56, 7.7])
def test_an_excerpt_with_no_end_is_never_refused_as_too_long(start: float) -> None:
    # `search --audio track.ogg --start 61.4` (no --end) decodes start..start+60 s; 61.4 + 60 - 61.4 is
    # 60.00000000000001 in floating point, and the run stopped with "the excerpt 61.4-121.4 s is 60 s long;
    # at most --max-excerpt=60 s are decoded"
    s, e = excerpt_bounds(start, None)
    assert s == start and e == pytest.approx(start + MAX_EXCERPT_S)
    s, e = excerpt_bounds(start, None, 30.0)
    assert e == pytest.approx(start + 30.0)


def test_an_explicit_excerpt_of_exactly_the_cap_is_accepted_and_one_past_it_refused() -> None:
    assert excerpt_bounds(61.4, 121.4) == (61.4, 121.4)  # 60.00000000000001 s by float subtraction
    with pytest.raises(QueryError, match="at most --max-excerpt=60 s"):
        excerpt_bounds(61.4, 121.5, names=("--start", "--end", "--max-excerpt"))
