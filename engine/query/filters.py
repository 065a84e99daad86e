"""`--where` predicates: SQL over the library's tables, run by DuckDB, read-only and sandboxed.

The predicate sees the tracks table LEFT JOINed on track_id with every extra table that has a
track_id column (``tags`` from `songseek tag`, ``mos`` from `songseek mos predict`, ...). When a tags
table is present a macro ``tag('jazz')`` reads the column ``tag_jazz`` (docs/analysis.md).
DuckDB gets the Arrow tables as views in a private in-memory database with external access switched
off and its configuration locked, so a predicate cannot read files or change settings.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.errors import QueryError

_FORBIDDEN = (";",)
TAG_PREFIX = "tag_"  # zero-shot tag columns: tag_<slug>, read by the tag() macro


def _connect(tables: dict[str, pa.Table]) -> Any:
    import duckdb

    con = duckdb.connect(":memory:")
    for name, table in tables.items():
        con.register(name, table)
    if "tags" in tables:
        _tag_macro(con, tables["tags"].column_names)
    con.execute("SET enable_external_access = false")
    con.execute("SET memory_limit = '1GB'")  # a runaway predicate fails instead of eating the machine
    con.execute("SET lock_configuration = true")
    return con


def filter_track_ids(tables: dict[str, pa.Table], where: str) -> np.ndarray:
    """Track ids (object array) of rows of ``tracks`` (joined with ``tags`` if present) matching ``where``."""
    where = where.strip()
    if not where:
        raise QueryError("where is empty: give a SQL predicate such as \"artist = 'Miles Davis'\"")
    if any(tok in where for tok in _FORBIDDEN):
        raise QueryError("where takes one SQL predicate, not statements (no ';')")
    source = " ".join(["tracks", *(f'LEFT JOIN "{name}" USING (track_id)' for name, table in tables.items()
                                   if name != "tracks" and "track_id" in table.column_names)])
    con = _connect(tables)
    try:
        result = con.sql(f"SELECT track_id FROM {source} WHERE ({where})").to_arrow_table()
    except Exception as exc:  # duckdb raises many error types; all mean "bad predicate"
        cols = ", ".join(_columns(tables))
        first = str(exc).strip().splitlines()[0]
        raise QueryError(f"bad where predicate: {first}. Columns: {cols}") from None
    finally:
        con.close()
    return np.asarray(result.column("track_id").to_pylist(), dtype=object)


def _tag_macro(con: Any, columns: list[str]) -> None:
    """``tag('Hip Hop')`` → column ``tag_hip_hop`` (labels slugged as engine/analysis/tagging.py does); an
    unknown label is an error that lists the known ones, not a silent NULL."""
    slugs = [c[len(TAG_PREFIX):] for c in columns if re.fullmatch(TAG_PREFIX + "[a-z0-9_]+", c)]
    if not slugs:
        return
    cases = " ".join(f"WHEN '{s}' THEN \"{TAG_PREFIX}{s}\"" for s in slugs)
    known = ", ".join(slugs)[:300].replace("'", "")
    con.execute("CREATE MACRO tag(label) AS CASE trim(regexp_replace(lower(label), '[^a-z0-9]+', '_', 'g'), "
                f"'_') {cases} ELSE error('unknown tag ' || label || '; known tags: {known}') END")


def _columns(tables: dict[str, pa.Table]) -> list[str]:
    names: list[str] = []
    for table in tables.values():
        names += [n for n in table.column_names if n not in names]
    return names


def sql(tables: dict[str, pa.Table], query: str) -> pa.Table:
    """Run a read-only SQL query over the library's tables (for `songseek sql` and notebooks)."""
    con = _connect(tables)
    try:
        return con.sql(query).to_arrow_table()
    except Exception as exc:
        raise QueryError(f"SQL error: {str(exc).strip().splitlines()[0]}") from None
    finally:
        con.close()
