"""What every command shares: turning library errors into one line and an exit code, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from songseek.engine.errors import SongseekError

F = TypeVar("F", bound=Callable[..., Any])


def library_option(help: str = "Library directory (created by index/ingest).", required: bool = True) -> Any:
    """The one definition of ``--library/-l``; commands differ only in its help text and whether it is required."""
    return typer.Option(... if required else None, "--library", "-l", help=help)


LIBRARY_OPT = library_option()


def handles_errors(func: F) -> F:
    """Run a command; a SongseekError becomes ``error: <message>`` on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SongseekError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}


def terminal_safe(text: str) -> str:
    """``text`` with control characters (escape sequences, newlines, C1 codes) shown as \\xNN, so a file
    name or a stored value cannot drive the terminal. JSON output needs no such care."""
    return text.translate(_CONTROL)


def print_json(obj: Any) -> None:
    """One JSON document on one line to stdout (scripts read it)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=_default) + "\n")
    sys.stdout.flush()


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
