"""`where` predicates: SQL over the library's tables, run by DuckDB, read-only, sandboxed and bounded.

The predicate sees the tracks table LEFT JOINed on track_id with every extra table that has a
track_id column (``tags`` from `songseek tag`, ``mos`` from `songseek mos predict`, ...). When a tags
table is present a macro ``tag('jazz')`` reads the column ``tag_jazz`` (docs/analysis.md), the label slugged
by engine/slug.py.

Defences, in order (docs/robustness.md, "Hostile input"):

1. DuckDB's own parser (``json_serialize_sql``) reads the whole statement: one statement, and apart from
   its WHERE clause exactly the query this module wrote (so a ``)`` cannot smuggle in a UNION, GROUP BY or
   LIMIT); a ``;`` inside a string is just a character.
2. The predicate's syntax tree may only use functions from ALLOWED_FUNCTIONS, read base tables (no table
   functions such as ``range()`` or ``read_csv()``, no joins, no subqueries in FROM, no WITH / recursive
   CTEs). Every allowed function makes values at most as large as the sum of its inputs, so no value can
   outgrow (predicate length) x (largest stored value), and no row set outgrows the tables. A subquery reads
   the library's own tables by name, not DuckDB's catalog views (information_schema, duckdb_tables, pg_catalog ...).
   DuckDB's memory limit does not count the values an expression computes (each node of the tree keeps its
   result for a chunk of 2048 rows: ``path||path||...`` 300 times took 3 GB under a 64 MB limit), nor the
   matrix of damerau_levenshtein(): ``_check_cost`` bounds both from the columns' largest stored values,
   before anything runs, against ``FilterLimits.memory_mb``.
3. A private in-memory database holding only the library's tables, external access off, no spilling to
   disk, the configuration locked, ``FilterLimits.memory_mb`` and ``threads``.
4. The query runs in a worker thread; the caller waits for it and calls DuckDB's ``interrupt()`` after
   ``FilterLimits.timeout_s`` or on Ctrl-C (KeyboardInterrupt, raised again once the query has stopped).
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from songseek.engine.errors import FilterLimitError, QueryError
from songseek.engine.slug import slug_or_empty

TAG_PREFIX = "tag_"  # zero-shot tag columns: tag_<slug>, read by the tag() macro
# What tag() says in a library that was never tagged (DuckDB would say its function does not exist)
NO_TAGS = "tag() needs zero-shot tags: run songseek tag --library LIB --labels ... first (docs/analysis.md)"
# Functions a predicate may call (DuckDB names, lower case, operators included). None of them can make a
# value larger than the sum of its arguments: repeat(), lpad(), printf(), replace(), string_agg(), list(),
# range() ... are left out on purpose (see the module docstring).
ALLOWED_FUNCTIONS = frozenset({
    # operators
    "+", "-", "*", "/", "//", "%", "**", "^", "||", "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~", "^@",
    "&", "|", "<<", ">>", "~", "@", "@>", "<@", "&&", "->", "->>", "[]", "array_extract", "list_extract",
    "list_element", "struct_extract", "array_slice", "list_slice",
    # text
    "lower", "upper", "lcase", "ucase", "trim", "ltrim", "rtrim", "length", "len", "strlen", "char_length",
    "character_length", "octet_length", "contains", "starts_with", "ends_with", "prefix", "suffix",
    "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape", "regexp_matches",
    "regexp_full_match", "regexp_extract", "substring", "substr", "left", "right", "strpos", "instr",
    "position", "concat", "concat_ws", "reverse", "strip_accents", "nfc_normalize", "levenshtein",
    "damerau_levenshtein", "jaro_similarity", "jaro_winkler_similarity", "jaccard", "hamming", "mismatches",
    "md5", "sha256", "hash", "ascii", "unicode", "split_part", "glob", "like", "ilike",
    # numbers
    "abs", "round", "floor", "ceil", "ceiling", "greatest", "least", "sign", "sqrt", "cbrt", "ln", "log",
    "log10", "log2", "exp", "pow", "power", "isnan", "isinf", "isfinite", "mod", "trunc", "even",
    # dates (year, added_at and mtime are numbers; these read timestamps)
    "year", "month", "day", "date_part", "datepart", "epoch", "to_timestamp", "make_date", "current_date",
    "now", "current_timestamp", "today",
    # nulls, types, lists of a row
    "coalesce", "ifnull", "nullif", "typeof", "list_contains", "list_has", "array_contains", "array_has",
    "list_position", "array_length", "cardinality",
    # aggregates and window functions of bounded size (for subqueries)
    "count", "count_star", "min", "max", "sum", "avg", "mean", "median", "any_value", "first", "last",
    "bool_and", "bool_or", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
    "row_number", "rank", "dense_rank", "percent_rank", "quantile_cont", "quantile_disc",
    # the library's own macro and DuckDB's error() it uses
    "tag", "error",
})
_ALLOWED_FROM = frozenset({"BASE_TABLE", "EMPTY", "EXPRESSION_LIST"})
_VECTOR_ROWS = 2048  # DuckDB evaluates a chunk of this many rows at once, every node of the tree kept for it
_CONCAT = frozenset({"||", "concat", "concat_ws"})  # the allowed functions whose value is the sum of their inputs
# Allowed functions whose time (or memory: damerau_levenshtein's matrix) grows with the product of two inputs'
# lengths, within one row, where DuckDB's interrupt() cannot reach
_PAIRWISE = frozenset({"levenshtein", "damerau_levenshtein", "jaro_similarity", "jaro_winkler_similarity",
                       "contains", "strpos", "instr", "position", "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~",
                       "like", "ilike", "glob", "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape"})
_MAX_PAIR_CELLS = 10_000_000  # about 0.2 s of damerau_levenshtein, 80 MB of its matrix
_SCALAR_BYTES = 16  # a number, date or boolean in a vector (HUGEINT, INTERVAL: 16 bytes)
_TEXT_BYTES = 48  # the longest number or date cast to text
# Allowed functions whose value is a number, boolean or date (whatever their inputs); the others are counted as
# large as their largest input
_SCALAR_FUNCTIONS = frozenset({
    "+", "-", "*", "/", "//", "%", "**", "^", "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~", "^@", "@", "length",
    "len", "strlen", "char_length", "character_length", "octet_length", "contains", "starts_with", "ends_with",
    "prefix", "suffix", "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape", "regexp_matches",
    "regexp_full_match", "strpos", "instr", "position", "levenshtein", "damerau_levenshtein", "jaro_similarity",
    "jaro_winkler_similarity", "jaccard", "hamming", "mismatches", "hash", "ascii", "unicode", "glob", "like",
    "ilike", "abs", "round", "floor", "ceil", "ceiling", "sign", "sqrt", "cbrt", "ln", "log", "log10", "log2",
    "exp", "pow", "power", "isnan", "isinf", "isfinite", "mod", "trunc", "even", "year", "month", "day",
    "date_part", "datepart", "epoch", "to_timestamp", "make_date", "current_date", "now", "current_timestamp",
    "today", "list_contains", "list_has", "array_contains", "array_has", "list_position", "array_length",
    "cardinality", "count", "count_star", "sum", "avg", "mean", "bool_and", "bool_or", "stddev", "stddev_pop",
    "stddev_samp", "variance", "var_pop", "var_samp", "row_number", "rank", "dense_rank", "percent_rank",
    "quantile_cont", "tag",
})
_SCALAR_CLASSES = frozenset({"COMPARISON", "CONJUNCTION", "BETWEEN"})
_SCALAR_OPERATORS = frozenset({"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN",
                               "COMPARE_NOT_IN"})
_LOCATION_KEY = re.compile(r"query_location(_length)?")


@dataclass(frozen=True)
class FilterLimits:
    """How much one ``where`` predicate may cost. ``timeout_s``: wall-clock seconds before DuckDB is
    interrupted; ``memory_mb``: DuckDB's buffer memory; ``threads``: DuckDB threads per filter;
    ``max_chars``: the longest predicate accepted (it bounds the largest value a predicate can build)."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    threads: int = 1
    max_chars: int = 10_000

    def validated(self) -> FilterLimits:
        if not (isinstance(self.timeout_s, (int, float)) and math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise QueryError(f"timeout_s must be a positive number of seconds (got {self.timeout_s!r})")
        for name in ("memory_mb", "threads", "max_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise QueryError(f"{name} must be a positive integer (got {value!r})")
        return self


DEFAULT_LIMITS = FilterLimits()


def _connect(tables: dict[str, pa.Table], limits: FilterLimits, tag_lookup: bool = False) -> Any:
    """``tag_lookup``: tag() looks the value up by the row's track_id (for `songseek sql`, whose FROM clause
    need not hold the tags columns) instead of reading the joined column (the ``where`` macro)."""
    import duckdb

    con = duckdb.connect(":memory:")
    for name, table in tables.items():
        con.register(name, table)
    tags = tables.get("tags")
    if tags is None or not _tag_slugs(tags.column_names):
        con.execute(f"CREATE MACRO tag(label) AS error('{NO_TAGS}'), (label, track) AS error('{NO_TAGS}')")
    elif tag_lookup:
        _tag_lookup_macro(con, tags)
    else:
        _tag_macro(con, tags.column_names)
    con.execute("SET temp_directory = ''")  # never spill to a .tmp folder in the working directory
    con.execute("SET enable_external_access = false")
    con.execute(f"SET memory_limit = '{int(limits.memory_mb)}MB'")  # a runaway query fails, not the machine
    con.execute(f"SET threads = {int(limits.threads)}")
    con.execute("SET lock_configuration = true")
    return con


def _source(tables: dict[str, pa.Table]) -> str:
    return " ".join(["tracks", *(f'LEFT JOIN "{name}" USING (track_id)' for name, table in tables.items()
                                 if name != "tracks" and "track_id" in table.column_names)])


def filter_track_ids(tables: dict[str, pa.Table], where: str, limits: FilterLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Track ids (object array, each once) of rows of ``tracks`` (joined with the extra tables) matching
    ``where``.

    Raises QueryError (one line) for a predicate DuckDB rejects, one that is not a single condition, one
    that uses a function or construct outside the bounds above, or one that runs past ``limits.timeout_s``.
    """
    limits = limits.validated()
    where = where.strip()
    if not where:
        raise QueryError("where is empty: give a SQL predicate such as \"artist = 'Miles Davis'\"")
    if len(where) > limits.max_chars:
        raise QueryError(f"the where predicate is {len(where):,} characters long; at most {limits.max_chars:,} "
                         "are accepted (FilterLimits.max_chars)")
    source = _source(tables)
    # The predicate on lines of its own, so that a trailing -- comment cannot swallow the parenthesis.
    statement = f"SELECT track_id FROM {source} WHERE (\n{where}\n)"
    con = _connect(tables, limits)
    try:
        _check_predicate(con, statement, f"SELECT track_id FROM {source} WHERE (TRUE)", tables, where, limits)
        result = _run(con, statement, limits, lambda first: f"bad where predicate: {first}. "
                      f"Columns: {', '.join(_columns(tables))}")
    finally:
        con.close()
    try:
        ids = result.column("track_id").to_pylist()
    except (KeyError, pa.ArrowInvalid) as exc:  # cannot happen after the structure check; kept one line
        raise QueryError(f"bad where predicate: it does not select track ids ({exc})") from None
    # once each: an extra table with several rows for one track repeats it in the join
    return np.asarray(list(dict.fromkeys(str(t) for t in ids if t is not None)), dtype=object)


def conjoin(predicates: list[str]) -> str:
    """The AND of several predicates, for one ``where`` (a caller's own predicate with filters it adds).
    Each must close every parenthesis it opens, outside strings and comments, or it could reach past its
    own: ``true) OR (true`` ANDed with ``artist = 'X'`` would select every track. QueryError otherwise.
    Each stands on lines of its own, so that a trailing -- comment cannot swallow what follows."""
    for where in predicates:
        lowest, depth = _paren_depths(where)
        if lowest < 0:
            raise QueryError("bad where predicate: a ')' closes a parenthesis it did not open")
        if depth:
            raise QueryError("bad where predicate: a '(' is never closed")
    return " AND ".join(f"(\n{w}\n)" for w in predicates)


def _paren_depths(where: str) -> tuple[int, int]:
    """(lowest, final) parenthesis depth of ``where``, outside strings and comments (DuckDB's tokenizer)."""
    import duckdb

    tokens = duckdb.tokenize(where)
    ends = [pos for pos, _ in tokens[1:]] + [len(where)]
    depth = lowest = 0
    for (pos, kind), end in zip(tokens, ends, strict=True):
        if kind == duckdb.token_type.operator:
            for ch in where[pos:end]:
                depth += (ch == "(") - (ch == ")")
                lowest = min(lowest, depth)
    return lowest, depth


def _parse(con: Any, statement: str, where: str | None = None) -> dict[str, Any]:
    """DuckDB's syntax tree of ``statement`` (json_serialize_sql); QueryError when it does not parse.
    ``where``: the user's predicate, which ``statement`` ends with (then "\n)"), for the message."""
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [statement]).fetchall()[0][0]
        tree = json.loads(raw)
    except Exception as exc:  # duckdb raises many error types
        raise QueryError(f"bad where predicate: {_first_line(exc)}") from None
    if tree.get("error"):
        lowest, depth = _paren_depths(where) if where is not None else (-1, 0)
        if where is not None and _int(tree.get("position")) >= len(statement) - 2 and lowest >= 0:
            # the error sits on the ")" this module wrapped around the predicate, which the user's text did not
            # close early: the text ended before its expression did
            shown = json.dumps(where if len(where) <= 80 else where[:77] + "...", ensure_ascii=False)
            why = "a '(' is never closed" if depth else "an operand is missing at its end"
            raise QueryError(f"bad where predicate {shown}: incomplete expression ({why})")
        raise QueryError(f"bad where predicate: {_first_line(tree.get('error_message', 'does not parse'))}")
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise QueryError("where takes one SQL predicate, not statements (a ';' outside a string)")
    node: dict[str, Any] = statements[0]["node"]
    return node


def _check_predicate(con: Any, statement: str, reference: str, tables: dict[str, pa.Table],
                     predicate: str, limits: FilterLimits = DEFAULT_LIMITS) -> None:
    node, ref = _parse(con, statement, predicate), _parse(con, reference)
    where = node.get("where_clause")
    if (_strip({k: v for k, v in node.items() if k != "where_clause"})
            != _strip({k: v for k, v in ref.items() if k != "where_clause"})):
        raise QueryError("the where predicate must be one condition on the tracks' columns: it changed the query "
                         "around it (a ')' followed by UNION, GROUP BY, ORDER BY, LIMIT ...)")
    _check_tree(where, set(tables))
    _check_cost(where, tables, limits)


def _check_tree(node: Any, tables: set[str]) -> None:
    """Refuse what could grow past the limits: see the module docstring."""
    if isinstance(node, list):
        for item in node:
            _check_tree(item, tables)
        return
    if not isinstance(node, dict):
        return
    name = node.get("function_name")
    if isinstance(name, str) and name.lower() not in ALLOWED_FUNCTIONS:
        if node.get("is_operator"):
            raise QueryError(f"bad where predicate: operator {name} is unknown or not allowed in a filter")
        raise QueryError(f"bad where predicate: function {name}() is not allowed in a filter (it can build values "
                         "without bound, or is not needed to select tracks); allowed functions: docs/robustness.md")
    if node.get("type") == "RECURSIVE_CTE_NODE" or (node.get("cte_map") or {}).get("map"):
        raise QueryError("bad where predicate: WITH (common table expressions) is not allowed in a filter")
    if node.get("class") == "LAMBDA":
        raise QueryError("bad where predicate: lambda expressions are not allowed in a filter")
    source = node.get("from_table")
    if isinstance(source, dict):
        kind = source.get("type")
        if kind == "JOIN":
            raise QueryError("bad where predicate: joins are not allowed in a filter (the tables are already "
                             "joined on track_id)")
        if kind == "TABLE_FUNCTION":
            fn = (source.get("function") or {}).get("function_name", "?")
            raise QueryError(f"bad where predicate: table function {fn}() is not allowed in a filter "
                             "(a subquery may read the library's tables only)")
        if kind not in _ALLOWED_FROM:
            raise QueryError(f"bad where predicate: a subquery may read only the library's tables "
                             f"({', '.join(sorted(tables))}), not {str(kind).lower()}")
        # a base table by its bare name: not a catalog view (information_schema.tables, duckdb_tables,
        # pg_catalog.pg_settings, sqlite_master), nor a file name a replacement scan would open
        name = source.get("table_name")
        if kind == "BASE_TABLE" and (source.get("catalog_name") or source.get("schema_name") or name not in tables):
            qualified = ".".join(str(p) for p in (source.get("qualified_name") or {}).get("path") or [name])
            raise QueryError(f"bad where predicate: a subquery may read only the library's tables "
                             f"({', '.join(sorted(tables))}), not {qualified}")
    for value in node.values():
        _check_tree(value, tables)


@dataclass
class _Cost:
    """What ``_check_cost`` adds up: ``per_row``, the bytes of every row-dependent value in the tree."""

    widths: dict[str, int]  # lower-case column name -> its largest stored value in bytes
    pair_cells: int
    per_row: int = 0


def _check_cost(where: Any, tables: dict[str, pa.Table], limits: FilterLimits) -> None:
    """Refuse a predicate whose values could outgrow ``limits.memory_mb`` where DuckDB does not count them: a
    chunk of rows times the bytes of every node of the tree, and the length x length of a pairwise function."""
    budget = limits.memory_mb * 2**20
    widths: dict[str, int] = {}
    for table in tables.values():
        for name, column in zip(table.column_names, table.columns, strict=True):
            widths[name.lower()] = max(widths.get(name.lower(), 0), _max_bytes(column))
    cost = _Cost(widths, min(_MAX_PAIR_CELLS, budget // 8))
    _bounds(where, cost)
    need = cost.per_row * _VECTOR_ROWS
    if need > budget:
        raise FilterLimitError(f"the where predicate could build {need / 2**20:.1f} MB of values per {_VECTOR_ROWS} "
                               f"rows, past its memory limit of {limits.memory_mb} MB (FilterLimits.memory_mb); it "
                               "was refused before running: use fewer or shorter expressions", "memory_mb",
                               limits.memory_mb)


def _expressions(root: Any) -> list[tuple[dict[str, Any], int]]:
    """Every expression node under ``root`` in document order, with the index of the expression it sits in
    (-1 at the top). A loop, not recursion: a predicate may nest up to DuckDB's depth limit of 1000."""
    found: list[tuple[dict[str, Any], int]] = []
    stack: list[tuple[Any, int]] = [(root, -1)]
    while stack:
        node, parent = stack.pop()
        if isinstance(node, list):
            stack.extend((item, parent) for item in reversed(node))
        elif isinstance(node, dict):
            if "class" in node:
                found.append((node, parent))
                parent = len(found) - 1
            stack.extend((value, parent) for value in reversed(list(node.values())))
    return found


def _bounds(root: Any, cost: _Cost) -> None:
    """Add to ``cost.per_row`` the bytes of each row-dependent expression under ``root``, from the columns'
    largest stored values (constants count once: a chunk shares them)."""
    found = _expressions(root)
    inner: list[list[tuple[int, bool]]] = [[] for _ in found]  # (bytes, depends on the row) of each one's children
    for i in reversed(range(len(found))):  # children before their parents
        node, parent = found[i]
        size, row = _bound(node, inner[i][::-1], cost)
        if row and node.get("class") not in ("COLUMN_REF", "STAR"):  # a column is the scan's data, not a copy
            cost.per_row += size
        if parent >= 0:
            inner[parent].append((size, row))


def _bound(node: dict[str, Any], children: list[tuple[int, bool]], cost: _Cost) -> tuple[int, bool]:
    """(bytes, depends on the row) of one expression's value, given its children's (in order)."""
    kind = node.get("class")
    if kind == "CONSTANT":
        return len(json.dumps(node)), False
    if kind == "COLUMN_REF":
        names = node.get("column_names") or [""]
        return cost.widths.get(str(names[-1]).lower(), max(cost.widths.values(), default=0)), True
    if kind == "STAR":  # * or COLUMNS(...): at most every column
        return sum(cost.widths.values()), True
    sizes = sorted((size for size, _ in children), reverse=True)
    name = str(node.get("function_name", "")).lower()
    if name in _CONCAT:  # concat_ws repeats its separator (the first argument) between the others
        size = sum(sizes) + (max(len(children) - 2, 0) * children[0][0] if name == "concat_ws" else 0)
    elif (name in _SCALAR_FUNCTIONS or kind in _SCALAR_CLASSES or node.get("type") in _SCALAR_OPERATORS
          or node.get("subquery_type") in ("EXISTS", "ANY")):
        size = _SCALAR_BYTES
    else:  # the other allowed functions make values no larger than their largest input (a small factor aside)
        size = max([_TEXT_BYTES, *sizes])
    if name in _PAIRWISE and len(sizes) >= 2 and sizes[0] * sizes[1] > cost.pair_cells:
        raise FilterLimitError(f"bad where predicate: {name}() of values up to {sizes[0]:,} and {sizes[1]:,} bytes "
                               f"long could take {sizes[0] * sizes[1]:,} steps on one row, which neither the time "
                               f"limit nor the memory limit of {cost.pair_cells * 8 // 2**20} MB "
                               "(FilterLimits.memory_mb) can stop; compare shorter values", "memory_mb",
                               cost.pair_cells * 8 // 2**20)
    return size, kind == "SUBQUERY" or any(row for _, row in children)


def _max_bytes(column: pa.ChunkedArray | pa.Array) -> int:
    """The largest value of ``column`` in bytes (a bound, for nested types)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _max_bytes(column.cast(kind.value_type))
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)):
        return int(pc.max(pc.binary_length(column)).as_py() or 0)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        longest = int(pc.max(pc.list_value_length(column)).as_py() or 0)
        return longest * _max_bytes(pc.list_flatten(column)) + 16
    if pa.types.is_struct(kind):
        return sum(_max_bytes(pc.struct_field(column, [i])) for i in range(kind.num_fields)) + 16
    try:
        return max(kind.bit_width // 8, 1)
    except ValueError:  # no fixed width (a map, a union, ...): a generous guess
        return 4096


def _strip(node: Any) -> Any:
    """The syntax tree without source positions (they differ between two spellings of one query)."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if not _LOCATION_KEY.fullmatch(k)}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _run(con: Any, statement: str, limits: FilterLimits, bad: Any) -> pa.Table:
    """Run ``statement`` under the time limit. ``bad(first_line)`` words the error for a rejected query.

    The query runs in a worker thread while the calling thread waits for it with a timeout: at the
    timeout, or when the wait is broken by Ctrl-C (Python raises KeyboardInterrupt in the main thread's
    wait), the caller calls DuckDB's ``interrupt()``. DuckDB's own SIGINT handling is not relied on: it
    does not stop a query whose result is fetched as Arrow (measured with duckdb 2.0)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["table"] = con.sql(statement).to_arrow_table()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="songseek-filter", daemon=True).start()
    try:
        finished = done.wait(limits.timeout_s)
    except KeyboardInterrupt:
        _stop(con, done)
        raise
    if not finished:
        _stop(con, done)
        raise FilterLimitError(f"the query ran past its time limit of {limits.timeout_s:g} s "
                               "(FilterLimits.timeout_s) and was stopped; narrow it down",
                               "timeout_s", limits.timeout_s)
    if "error" in box:
        import duckdb

        error = box["error"]
        if isinstance(error, duckdb.OutOfMemoryException):
            raise FilterLimitError(f"the query needed more than its memory limit of {limits.memory_mb} MB "
                                   f"(FilterLimits.memory_mb) and was stopped; narrow it down ({_first_line(error)})",
                                   "memory_mb", limits.memory_mb)
        first = _first_line(error)
        own = _OWN_ERROR.search(first)  # tag()'s own message, without DuckDB's wrapping of it
        raise QueryError(NO_TAGS if NO_TAGS in first else own.group(1) if own else bad(first))
    table: pa.Table = box["table"]
    return table


def _stop(con: Any, done: threading.Event, patience_s: float = 10.0) -> None:
    """Interrupt the running query until its thread ends (an interrupt that lands before the query has
    started executing is lost, so it is repeated)."""
    for _ in range(int(patience_s / 0.05)):
        con.interrupt()
        if done.wait(0.05):
            return


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


# An error tag() raises (the where macro's error(), the sql UDF's ValueError), as DuckDB wraps it:
# "Invalid Input Error: [Python exception occurred while executing the UDF: ValueError: ]unknown tag ..."
_OWN_ERROR = re.compile(r"^Invalid Input Error: (?:Python exception occurred while executing the UDF: \w+: )?"
                        r"(unknown tag '.*'; known tags: [^.]*)")


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _tag_macro(con: Any, columns: list[str]) -> None:
    """``tag('Hip Hop')`` → column ``tag_hip_hop``; an unknown label is an error that lists the known ones,
    not a silent NULL. The label is slugged by the tagger's own function (engine/slug.py), not by
    SQL, so the two cannot disagree; on a constant label DuckDB calls it once per query."""
    slugs = _tag_slugs(columns)
    if not slugs:
        return
    con.create_function("songseek_tag_slug", slug_or_empty, ["VARCHAR"], "VARCHAR", side_effects=False)
    cases = " ".join(f"WHEN '{s}' THEN \"{TAG_PREFIX}{s}\"" for s in slugs)
    known = ", ".join(slugs)[:300].replace("'", "")
    con.execute(f"CREATE MACRO tag(label) AS CASE songseek_tag_slug(label) {cases} "
                f"ELSE error('unknown tag ''' || label || '''; known tags: {known}') END")


def _tag_slugs(columns: list[str]) -> list[str]:
    return [c[len(TAG_PREFIX):] for c in columns if re.fullmatch(TAG_PREFIX + "[a-z0-9_]+", c)]


def _tag_lookup_macro(con: Any, tags: pa.Table) -> None:
    """``tag('jazz')`` for `songseek sql`: the tags table's ``tag_jazz`` of the row's ``track_id``, in any
    FROM clause that has one track_id column (``FROM tracks`` has no tag columns for the ``where`` macro to
    read). NULL for a track without tags, as in ``where``'s LEFT JOIN; an unknown label is an error."""
    slugs = _tag_slugs(tags.column_names)
    if not slugs or "track_id" not in tags.column_names:
        return
    # float32 scores stay float32, so that a value prints as it does through `--where`
    out = pa.float32() if all(tags.schema.field(TAG_PREFIX + s).type == pa.float32() for s in slugs) else pa.float64()
    known = ", ".join(slugs)[:300]
    # DuckDB calls lookup once per chunk (2048 rows): the track_id -> tags row index and each tag column cast
    # to `out` are built once (on the first call, so a query without tag() pays nothing), and a chunk costs
    # O(chunk), not a rehash of the whole tags table (11 s at 400k tracks).
    @functools.cache  # two DuckDB threads may both build it once: the same value, no harm
    def row_index() -> dict[Any, int]:
        index: dict[Any, int] = {}
        for i, k in enumerate(tags.column("track_id").to_pylist()):
            if k is not None:  # a NULL track_id matches nothing (LEFT JOIN)
                index.setdefault(k, i)  # the first tags row of a duplicated track_id wins
        return index

    @functools.cache
    def column(slug: str) -> pa.Array:
        return tags.column(TAG_PREFIX + slug).combine_chunks().cast(out)

    def lookup(labels: Any, track_ids: Any) -> Any:
        rows = None
        result = pa.nulls(len(track_ids), out)
        for label in pc.unique(labels).to_pylist():
            if label is None:  # the macro refuses a NULL label; a NULL track_id row stays NULL
                continue
            slug = slug_or_empty(label)
            if slug not in slugs:
                raise ValueError(f"unknown tag {label!r}; known tags: {known}")
            if rows is None:
                get = row_index().get
                rows = pa.array([get(k) for k in track_ids.to_pylist()], pa.int64())
            values = column(slug).take(rows)
            result = pc.if_else(pc.equal(labels, label), values, result)
        return result

    con.create_function("songseek_tag_lookup", lookup, ["VARCHAR", "VARCHAR"], "FLOAT" if out == pa.float32()
                        else "DOUBLE", type="arrow", null_handling="special", side_effects=False)
    # The error() branch also keeps DuckDB from binding the body at CREATE time, where track_id has no table
    # (the where macro's ELSE error() does the same for its tag_ columns). tag(label, track) names the
    # track_id column where a join brings more than one into scope: tag('jazz', t.track_id).
    no_label = "error('tag() needs a label, e.g. tag(''jazz'')')"
    con.execute(f"CREATE MACRO tag(label) AS CASE WHEN label IS NULL THEN {no_label} "
                "ELSE songseek_tag_lookup(label, track_id) END, "
                f"(label, track) AS CASE WHEN label IS NULL THEN {no_label} ELSE songseek_tag_lookup(label, track) END")


def _ambiguous_track_id(query: str, error: str) -> str | None:
    """How to write tag() when a join brings two track_id columns into scope (DuckDB only says which are
    ambiguous); None for any other error, or a query without tag()."""
    found = re.search(r"""Ambiguous reference to column name "track_id" \(use: ([^)]*)\)""", error)
    if not found or not re.search(r"\btag\s*\(", query, re.IGNORECASE):
        return None
    choices = re.findall(r"'([^']+)'", found.group(1)) or ["t.track_id"]
    return (f"this query has more than one track_id ({' or '.join(choices)}): name the one tag() reads as its "
            f"second argument, e.g. tag('jazz', {choices[0]})")


def _columns(tables: dict[str, pa.Table]) -> list[str]:
    names: list[str] = []
    for table in tables.values():
        names += [n for n in table.column_names if n not in names]
    return names


# Statement types `sql` runs: queries that only read (PIVOT parses as MULTI); anything else would create,
# change or drop something in the throw-away in-memory database and report success for nothing.
_READ_STATEMENTS = ("SELECT", "EXPLAIN", "PRAGMA", "MULTI")


def _check_read_only(query: str) -> None:
    """Refuse, in one line, an empty text, several statements, or one that is not a read-only query."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_first_line(exc)}") from None
    if not statements:
        raise QueryError("SQL error: no SQL statement; give one query, e.g. \"SELECT path FROM tracks\"")
    if len(statements) > 1:
        raise QueryError(f"SQL error: give one statement, not {len(statements)}")
    kind = statements[0].type.name
    if kind not in _READ_STATEMENTS:
        raise QueryError(f"SQL error: a {kind} statement is refused: songseek sql is read-only (nothing would "
                         "be stored; run a SELECT)")


def sql(tables: dict[str, pa.Table], query: str, limits: FilterLimits = DEFAULT_LIMITS) -> pa.Table:
    """Run a read-only SQL query over the library's tables (for `songseek sql` and notebooks), under the
    same sandbox, memory and time limits as a filter (but without the syntax-tree check)."""
    limits = limits.validated()
    _check_read_only(query)
    con = _connect(tables, limits, tag_lookup=True)
    try:
        return _run(con, query, limits, lambda first: f"SQL error: {_ambiguous_track_id(query, first) or first}")
    finally:
        con.close()
