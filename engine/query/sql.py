"""Read-only SQL over a library's tables (`songseek sql`, notebooks), in the same DuckDB sandbox as ``where``.

Tables: ``tracks`` (one row per file), ``frames`` (one row per stored window: track_id, frame, start_s, end_s;
the vectors are left out), ``failures`` (files that could not be indexed) and every extra table the library
holds (``tags`` from tagging, ``mos`` from opinion scores, ...).
"""

from __future__ import annotations

import pyarrow as pa

from songseek.engine.query.filters import sql
from songseek.engine.query.search import Library
from songseek.engine.storage.store import frames_schema, read_failures, read_table_mmap

FRAME_COLUMNS = ("track_id", "frame", "start_s", "end_s")


def library_tables(lib: Library) -> dict[str, pa.Table]:
    """The tables a query sees, memory-mapped (no copy of the shards)."""
    root, m = lib.root, lib.manifest
    shards = [read_table_mmap(root / name).select(list(FRAME_COLUMNS)) for name in m.frame_shards]
    frames = (pa.concat_tables(shards) if shards
              else frames_schema(m.dim).empty_table().select(list(FRAME_COLUMNS)))
    failures = read_failures(root, m)  # identity-checked: a swapped-in table must not answer queries
    return {"tracks": lib.tracks, "frames": frames, "failures": failures, **lib.extra_tables}


def run_sql(lib: Library, query: str) -> pa.Table:
    """Run one read-only SQL query over ``library_tables(lib)``; QueryError with DuckDB's first line on error."""
    return sql(library_tables(lib), query)
