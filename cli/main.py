"""The `songseek` command: a thin typer shell over indexers, benchmarks and engine.

Each command group lives in its own module with a ``register(app)`` function.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="songseek",
    help="Search music libraries by text or audio, down to the segment inside each track.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to `app`; each defines register(app).
_COMMAND_MODULES = [
    "songseek.cli.library_cmds",
    "songseek.cli.maintenance_cmds",
    "songseek.cli.analysis_cmds",
    "songseek.cli.duplicates_cmd",
    "songseek.cli.demo_cmd",
    "songseek.cli.bench_cmds",
    "songseek.cli.synth_cmd",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from songseek import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


if __name__ == "__main__":  # pragma: no cover
    app()
