"""`songseek sql`: read-only SQL over a library's tables (tracks, frames, failures, tags, mos, ...)."""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path

import typer

from .common import LIBRARY_OPT, handles_errors, print_json, safe_text


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)


@handles_errors
def sql(
    query: str = typer.Argument(..., help="One SQL query, e.g. \"SELECT artist, count(*) FROM tracks GROUP BY 1\"."),
    library: Path = LIBRARY_OPT,
    json_out: bool = typer.Option(False, "--json", help="One JSON array of row objects."),
    csv_out: bool = typer.Option(False, "--csv", help="CSV with a header row."),
    limit: int = typer.Option(1000, "--limit", min=0, help="Rows printed at most in the table view (0: all)."),
) -> None:
    """Query the library's tables with DuckDB, read-only and without file access (the --where sandbox).

    Tables: tracks, frames (track_id, frame, start_s, end_s), failures, and tags / mos once
    `songseek tag` / `songseek mos predict` have run. The table view fits a terminal; into a pipe or a file it
    keeps every value whole, one row per line."""
    from songseek.engine.errors import UsageError
    from songseek.engine.query.search import Library
    from songseek.engine.query.sql import run_sql

    if json_out and csv_out:
        raise UsageError("give --json or --csv, not both")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weights warnings do not concern a table query
        table = run_sql(Library.open(library), query)
    if json_out:
        print_json(table.to_pylist())
        return
    if csv_out:
        writer = csv.writer(sys.stdout, lineterminator="\n")  # not csv's \r\n: output is piped into other files
        writer.writerow(table.column_names)
        for row in table.to_pylist():
            writer.writerow([row[c] for c in table.column_names])
        return
    from rich.table import Table
    from rich.text import Text

    from . import tables

    # At a terminal the table fits its width (long values cut with …); into a pipe or a file every value is
    # written whole, each row on one line, since what is saved there is what a user goes on to use.
    whole = not tables.stdout_is_terminal()
    view = Table(show_edge=False)
    for name in table.column_names:
        view.add_column(Text(safe_text(name)), no_wrap=whole)
    shown = table if limit <= 0 else table.slice(0, limit)
    for row in shown.to_pylist():
        view.add_row(*[Text(safe_text("" if row[c] is None else str(row[c]))) for c in table.column_names])
    (tables.unlimited_console() if whole else tables.console()).print(view)
    if shown.num_rows < table.num_rows:
        typer.echo(f"{table.num_rows - shown.num_rows} more rows not shown (--limit 0, --json or --csv)", err=True)
