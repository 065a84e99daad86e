"""Tables for the filter tests that must be slow to filter (also imported by a child process)."""

from __future__ import annotations

import pyarrow as pa


def big_tables(n: int = 20_000) -> dict[str, pa.Table]:
    return {"tracks": pa.table({"track_id": [f"t{i}" for i in range(n)],
                                "path": [f"/m/{i:08d}.wav" for i in range(n)]})}


# A correlated subquery DuckDB cannot turn into a hash join: n² edit distances (4e8 here: minutes).
SLOW_PREDICATE = "EXISTS (SELECT 1 FROM tracks t2 WHERE levenshtein(t2.path, tracks.path) = 1000)"
