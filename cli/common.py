"""What every command shares: turning library errors into one line and an exit code, JSON output."""

from __future__ import annotations

import datetime
import decimal
import functools
import inspect
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.models import OptionInfo

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


# Engine parameters that a command's own parameter spells differently (FilterLimits.timeout_s is --where-timeout).
_ENGINE_NAMES = {"timeout_s": "where_timeout", "memory_mb": "where_memory_mb", "n_tracks": "tracks",
                 "max_epochs": "epochs"}
# Where an engine check says it ran ("FusionParams (engine/query/fusion.py): "): noise once an option is named.
_ENGINE_PLACE = re.compile(r"^\w+ \(engine/[\w/]+\.py\): (?=-)")


def option_names(func: Callable[..., Any]) -> dict[str, str]:
    """A command's Python parameter names → its options as typed: ``kernel_s`` → ``--kernel-s``, ``k`` → ``-k``."""
    names = {}
    for name, param in inspect.signature(func).parameters.items():
        if isinstance(param.default, OptionInfo) and param.default.param_decls:
            decls = [d.split("/")[0] for d in param.default.param_decls]  # --audio/--no-audio: --audio
            names[name] = next((d for d in decls if d.startswith("--")), decls[0])
    names.update({engine: names[own] for engine, own in _ENGINE_NAMES.items() if own in names})
    return names


def cli_message(message: str, options: dict[str, str]) -> str:
    """``message`` with each parameter the engine names ("min_level must be ...", "not_duplicate: ...",
    "k=3") written as the option the user typed; the engine's own messages keep its Python names."""
    if not options:
        return message
    named = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, options)) + r")(?= must\b|:|=)")

    def swap(m: re.Match[str]) -> str:
        name = m.group(1)
        # "NAME must" always; "NAME:" / "NAME=" only for names prose does not use (snake_case, or a letter
        # like k): in "built with another encoder: 'demo'" the word is prose, not the --encoder option
        if message.startswith(" must", m.end()) or "_" in name or len(name) == 1:
            return options[name]
        return name

    return _ENGINE_PLACE.sub("", named.sub(swap, message))


def handles_errors(func: F) -> F:
    """Run a command; a SongseekError becomes ``error: <message>`` on stderr (options named as typed) and its
    exit code."""
    options = option_names(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SongseekError as exc:
            typer.echo(f"error: {safe_text(cli_message(str(exc), options))}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """One JSON document on one line to stdout (scripts read it): strict JSON, so NaN and ±inf (which a
    user's own `sql` can build) are written as null, not as tokens `jq` and other readers refuse."""
    try:
        text = json.dumps(obj, ensure_ascii=False, default=_default, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(json.loads(json.dumps(obj, default=_default))), ensure_ascii=False,
                          allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _finite(obj: Any) -> Any:
    """``obj`` (plain JSON values) with every NaN or infinite float replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, list):
        return [_finite(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    # what DuckDB hands back for HUGEINT sums and DECIMAL (Decimal), dates and times, BLOBs (bytes)
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, datetime.timedelta):
        return obj.total_seconds()
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
