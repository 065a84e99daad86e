"""The `songseek` command: a thin typer shell over indexers, benchmarks and engine.

Each command group lives in its own module with a ``register(app)`` function.
"""

from __future__ import annotations

import typer

from songseek.cli import (
    analysis_cmds,
    bench_cmds,
    demo_cmd,
    duplicates_cmd,
    library_cmds,
    maintenance_cmds,
    serve_cmd,
    sql_cmd,
    synth_cmd,
)
from songseek.engine.version import __version__

app = typer.Typer(
    name="songseek",
    help="Search music libraries by text or audio, down to the segment inside each track.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each command module adds its commands to `app` (heavy libraries load inside the commands, so that
# `songseek --help` stays fast).
for _module in (library_cmds, sql_cmd, maintenance_cmds, analysis_cmds, duplicates_cmd, demo_cmd, bench_cmds,
                synth_cmd, serve_cmd):
    _module.register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


if __name__ == "__main__":  # pragma: no cover
    app()
