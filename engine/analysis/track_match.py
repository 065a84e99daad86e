"""Match rows of a user's CSV (ratings, labels, prompts) to a library's tracks, and read such CSVs.

A row names its track by ``track_id`` or by ``path``. A path matches a stored path when it is the same
string, the same file once resolved (relative paths are taken from the CSV's folder), or — when nothing
else matches — the same file name, if exactly one stored track has that name. A file none of whose rows
matches is an error (``no_match_error``), one where some do not a warning (``some_unmatched_note``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from songseek.engine.errors import UsageError

# How a row finds its track, and how to fix a file whose rows find none: the one wording every reader uses.
MATCH_RULE = ("rows are matched by track_id, else by path: the stored path, the same file (a relative path "
              "is taken from the CSV's folder) or a file name only one track has")
MATCH_FIX = "use the ids or paths the library stores: songseek sql \"SELECT track_id, path FROM tracks\""


def row_name(row: dict[str, str], line: int) -> str:
    """How a row is named in messages: its track_id, else its path, else its line number."""
    return row.get("track_id") or row.get("path") or f"line {line}"


def no_match_error(path: Path, unmatched: Sequence[str]) -> UsageError:
    """The one-line error for a CSV none of whose rows names a track of the library."""
    return UsageError(f"{path}: none of its {len(unmatched)} rows matches a track of the library ({MATCH_RULE}); "
                      f"first unmatched: {', '.join(unmatched[:3])}; {MATCH_FIX}")


def some_unmatched_note(path: Path, unmatched: Sequence[str], rows: int, consequence: str) -> str | None:
    """One line for a CSV some of whose rows matched no track (None when all did); callers warn with it."""
    if not unmatched:
        return None
    return (f"{path}: {len(unmatched)} of {rows} rows matched no track of the library (first: {unmatched[0]}); "
            f"{consequence}; {MATCH_FIX}")


def read_csv_rows(path: Path, required_any: Sequence[str] = ()) -> list[dict[str, str]]:
    """Rows of a CSV file with a header (column names lower-cased and stripped)."""
    return [row for _, row in read_csv_records(path, required_any)]


def read_csv_records(path: Path, required_any: Sequence[str] = ()) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of each row of a CSV file with a header (column names lower-cased and stripped).
    The number is the line the row starts on in the file, for messages (a quoted cell may span lines)."""
    path = Path(path).expanduser()
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
        reader = csv.DictReader(io.StringIO(_without_stray_cr(text), newline=""))
        records, line = [], 2
        for row in reader:
            records.append((line, {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}))
            line = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read the CSV ({exc})") from exc
    if not records:
        raise UsageError(f"{path}: no rows (a header line and one row per track expected)")
    if required_any and not any(c in records[0][1] for c in required_any):
        raise UsageError(f"{path}: needs a column named one of {', '.join(required_any)}; "
                         f"found {', '.join(records[0][1])}")
    return records


def _without_stray_cr(text: str) -> str:
    """``text`` without the carriage returns of Windows line ends (CRLF), also where a line was extended
    after one: `songseek sql --csv` output from an older version, or a Windows tool, run through
    ``sed 's/$/,3.0/'`` gives ``path\r,3.0``, which csv would split into two rows at the ``\r``."""
    return text.replace("\r\n", "\n").replace("\r,", ",")


def pick_column(row: dict[str, str], names: Sequence[str]) -> str | None:
    """The first of ``names`` that is a column of ``row`` (None when none is)."""
    return next((n for n in names if n in row), None)


class TrackMatcher:
    """Resolve track ids from ``track_id`` or ``path`` cells against a library's tracks table."""

    def __init__(self, tracks: pa.Table, base: Path) -> None:
        self.base = Path(base)
        ids = [str(t) for t in tracks.column("track_id").to_pylist()]
        paths = [str(p) for p in tracks.column("path").to_pylist()] if "path" in tracks.column_names else ids
        self._ids = set(ids)
        self._by_path = {p: t for p, t in zip(paths, ids)}
        self._by_resolved = {_resolved(Path(p)): t for p, t in zip(paths, ids)}
        names: dict[str, list[str]] = {}
        for p, t in zip(paths, ids):
            names.setdefault(Path(p).name, []).append(t)
        self._by_name = {n: ts[0] for n, ts in names.items() if len(ts) == 1}

    def match(self, row: dict[str, str]) -> str | None:
        """The track id a row names, or None when no stored track matches."""
        tid = row.get("track_id", "")
        if tid:
            return tid if tid in self._ids else None
        path = row.get("path", "")
        if not path:
            return None
        if path in self._by_path:
            return self._by_path[path]
        p = Path(path).expanduser()
        p = p if p.is_absolute() else self.base / p
        return self._by_resolved.get(_resolved(p)) or self._by_name.get(p.name)


def _resolved(p: Path) -> str:
    try:
        return str(p.resolve())
    except OSError:
        return str(p)
