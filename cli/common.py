"""What every command shares: turning library errors into one line and an exit code, JSON output."""

from __future__ import annotations

import functools
import json
import re
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


# Characters a terminal acts on: C0/C1 controls and DEL (escape sequences, carriage returns) and the
# bidirectional overrides that reorder what follows; escaped wherever a stored or user-given string is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def safe_text(text: object) -> str:
    """``text`` with every control character as a visible escape (``\\n``, ``\\x1b``, ``\\u202e``), so a file
    name or tag can neither move the cursor, recolour the terminal nor break a one-line record."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), m.group().encode("unicode_escape", "backslashreplace")
                                            .decode("ascii")), str(text))


def handles_errors(func: F) -> F:
    """Run a command; a SongseekError becomes ``error: <message>`` on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SongseekError as exc:
            typer.echo(f"error: {safe_text(exc)}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


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
