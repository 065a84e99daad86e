"""A cap on hits per artist: the best tracks in rank order, at most ``per_artist`` of any one artist."""

from __future__ import annotations

import dataclasses

from songseek.engine.errors import QueryError
from songseek.engine.query.search import Hit


def cap_per_artist(hits: list[Hit], per_artist: int, k: int) -> list[Hit]:
    """The first ``k`` of ``hits`` (ranked best first) keeping at most ``per_artist`` per artist, renumbered
    1..n. Tracks with no artist are never capped (nothing says two of them are by the same artist).
    Pass ranked hits for more than ``k`` tracks (e.g. every reranked candidate) so the cap can fill k."""
    if per_artist < 1 or k < 1:
        raise QueryError(f"per_artist and k must be at least 1 (got {per_artist}, {k})")
    seen: dict[str, int] = {}
    out: list[Hit] = []
    for h in hits:
        if h.artist is not None:
            if seen.get(h.artist, 0) >= per_artist:
                continue
            seen[h.artist] = seen.get(h.artist, 0) + 1
        out.append(dataclasses.replace(h, rank=len(out) + 1))
        if len(out) == k:
            break
    return out
