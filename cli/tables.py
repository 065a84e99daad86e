"""Tables sized to the terminal: every result and benchmark table is printed through :func:`console`.

Long names are cut with … on one line (:func:`ellipsised`), paths fold inside their cell, numbers never
wrap, and a table of more number columns than the terminal holds is split into several tables, each
repeating the first column (:func:`print_columns`).
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Collection, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .common import safe_text

# Without a terminal and without COLUMNS (a pipe, a file) nothing wraps on screen: keep a wide layout.
PIPE_WIDTH = 140
# What a column takes besides its text in a Table(show_edge=False): padding on both sides and a separator.
_CELL_EXTRA = 3


def width() -> int:
    """COLUMNS, else the terminal's width, else PIPE_WIDTH."""
    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns


def console() -> Console:
    """stdout, as wide as :func:`width`."""
    return Console(file=sys.stdout, width=width())


def key_value(key: str, value: str, key_width: int = 18) -> str:
    """``key: value`` with the key right-aligned, the value wrapped at :func:`width` under its own start."""
    lead = f"{key:>{key_width}}: "
    return textwrap.fill(value, width=max(width(), len(lead) + 20), initial_indent=lead,
                         subsequent_indent=" " * len(lead), break_on_hyphens=False) or lead.rstrip()


def ellipsised(text: object) -> Text:
    """A name on one line, cut with … where its column is narrower; a Text, so [brackets] are not markup."""
    return Text(safe_text(text), no_wrap=True, overflow="ellipsis")


def folded(path: object) -> Text:
    """A path kept whole (it is what a user acts on), folded onto more lines where its column is narrower."""
    return Text(safe_text(path), overflow="fold")


def column_groups(header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[list[int]]:
    """Column indices per table so that each fits ``width``; every table starts with column 0 (the key)."""
    sizes = [max([len(h), *(len(r[i]) for r in rows)]) + _CELL_EXTRA for i, h in enumerate(header)]
    groups: list[list[int]] = []
    current, used = [0], sizes[0]
    for i in range(1, len(header)):
        if len(current) > 1 and used + sizes[i] > width:
            groups.append(current)
            current, used = [0], sizes[0]
        current.append(i)
        used += sizes[i]
    groups.append(current)
    return groups


def print_columns(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                  text: Collection[str] = ()) -> None:
    """A table of numbers (right-aligned, never wrapped) and the ``text`` columns (left, wrapped), split
    into as many tables as the terminal's width needs."""
    out = console()
    for n, group in enumerate(column_groups(header, rows, out.width)):
        table = Table(title=title if n == 0 else f"{title} (continued)", show_edge=False)
        for i in group:
            is_text = header[i] in text
            table.add_column(header[i], justify="left" if is_text else "right", no_wrap=not is_text)
        for r in rows:
            table.add_row(*(Text(safe_text(r[i])) for i in group))
        out.print(table)
