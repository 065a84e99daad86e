"""How every ``--help`` reads: plain click-style help (``--prune / --no-prune``, ``-k INTEGER``, ``SOURCES...``).

Typer's rich panels print a type hint for every parameter, flags included (``--exact <bool>``), show
``{sources}...`` in usage lines and spend a column on each ``--no-x``; every songseek Typer is a
:class:`SongseekTyper`, whose commands are :class:`SongseekCommand`, so all commands read alike.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

# click's names for the value types; any other type is shown by its name in capitals (PATH, FLOAT)
_METAVARS = {"int": "INTEGER", "str": "TEXT"}


def option_metavar(option: TyperOption) -> str:
    """``INTEGER`` for ``-k``, ``PATH`` for ``--library``; a repeatable option shows its element's."""
    name = option.bare_type()
    if name.startswith("list[") and name.endswith("]"):
        name = name[len("list["):-1]
    return _METAVARS.get(name, name.upper())


def argument_usage(argument: TyperArgument) -> str:
    """``SOURCES...`` for a required list, ``[QUERY]`` for an optional argument (click's spelling)."""
    name = argument.metavar or argument.name.upper()
    if argument.nargs != 1:
        name += "..."
    return name if argument.required else f"[{name}]"


class SongseekCommand(TyperCommand):
    """A command whose help names values like click does and lists flags without a type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is not None:
                continue  # set by the command itself (LEVEL, ID1 ID2)
            if isinstance(param, TyperOption) and not param.is_flag:
                param.metavar = option_metavar(param)
            elif isinstance(param, TyperArgument) and param.name:
                param.metavar = param.name.upper()  # also what a "Missing argument" error names

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(argument_usage(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = self.get_params(ctx)
        arguments = [(argument_usage(p).strip("[]"), p.help or "") for p in params
                     if isinstance(p, TyperArgument) and not p.hidden]
        options = [record for p in params if isinstance(p, TyperOption) and (record := p.get_help_record(ctx))]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class SongseekTyper(typer.Typer):
    """A Typer with plain help (no rich panels) whose commands are :class:`SongseekCommand`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(name, cls=cls or SongseekCommand, **kwargs)
