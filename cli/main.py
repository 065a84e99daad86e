"""The `songseek` command: a thin typer shell over indexers, benchmarks and engine.

Each command group lives in its own module with a ``register(app)`` function.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperGroup

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
from songseek.cli.common import safe_text
from songseek.cli.help_format import SongseekTyper
from songseek.engine.version import __version__

# Click's UsageError, found through typer's public BadParameter (its subclass): recent typer ships its own
# copy of click, so `click.UsageError` would not catch what typer raises.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def usage_error_line(exc: Any) -> str:
    """``error: <what> (see <command> --help)``: one line, like every other error, not Typer's box."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "songseek"
    return f"error: {safe_text(exc.format_message()).rstrip('.')} (see {where} --help)"


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise  # shows the help, as no_args_is_help asks
        typer.echo(usage_error_line(exc), err=True)
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None


@contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """``songseek ... | head -1``: once the reader has what it wants and closes the pipe, stop writing and exit 0
    without a word, as grep and rg do (click's own handling exits 1)."""
    try:
        yield
    except BrokenPipeError:
        try:  # what is still buffered for stdout goes nowhere, so the flush at exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout with no file descriptor (a test runner's buffer)
            pass
        raise typer.Exit(0) from None


class OneLineErrorGroup(TyperGroup):
    """The root group: a usage error in it or any subcommand is parsed inside these two methods, so it is
    printed here as one line and exits with its code (2), in the installed script and in CliRunner alike."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors(), _quiet_broken_pipe():
            result = super().invoke(ctx)
            sys.stdout.flush()  # here, not at exit: a reader gone by now is met inside _quiet_broken_pipe
            return result


app = SongseekTyper(
    cls=OneLineErrorGroup,
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


def _print_version(value: bool) -> None:
    # an eager option's callback runs while the arguments are parsed, so no subcommand is needed
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version, expose_value=False),
) -> None:
    pass


if __name__ == "__main__":  # pragma: no cover
    app()
