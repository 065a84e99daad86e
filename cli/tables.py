"""Tables sized to the terminal: every result and benchmark table is printed through :func:`console`.

Long names are cut with … on one line (:func:`ellipsised`), a path that names a hit loses the middle of its
folders instead, so the file name stays (:class:`MiddleElided`), other paths fold inside their cell, numbers
never wrap, and a table of more number columns than the terminal holds is split into several tables, each
repeating the first column (:func:`print_columns`). Where stdout is not a terminal, tables of stored data
(`sql`) are printed at their full width (:func:`unlimited_console`): a file or a pipe gets every value whole.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Collection, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .common import safe_text

# Without a terminal and without COLUMNS (a pipe, a file) nothing wraps on screen: keep a wide layout.
PIPE_WIDTH = 140
# Wide enough for any table: rich lays a table out at its content's width, never padded to the console's.
_UNLIMITED = 1_000_000
# What a column takes besides its text in a Table(show_edge=False): padding on both sides and a separator.
_CELL_EXTRA = 3


def width() -> int:
    """COLUMNS, else the terminal's width, else PIPE_WIDTH."""
    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits 1 here; cli.main ends a command whose reader has gone with exit 0, as for any write
        raise BrokenPipeError


def console() -> Console:
    """stdout, as wide as :func:`width`."""
    return _Console(file=sys.stdout, width=width())


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def unlimited_console() -> Console:
    """stdout with no width limit: every cell whole, each row on one line (for a pipe or a file)."""
    return _Console(file=sys.stdout, width=_UNLIMITED)


def key_value(key: str, value: str, key_width: int = 18) -> str:
    """``key: value`` with the key right-aligned, the value wrapped at :func:`width` under its own start."""
    lead = f"{key:>{key_width}}: "
    return textwrap.fill(value, width=max(width(), len(lead) + 20), initial_indent=lead,
                         subsequent_indent=" " * len(lead), break_on_hyphens=False) or lead.rstrip()


def ellipsised(text: object) -> Text:
    """A name on one line, cut with … where its column is narrower; a Text, so [brackets] are not markup."""
    return Text(safe_text(text), no_wrap=True, overflow="ellipsis")


def middle_elided_path(path: str, width: int) -> str:
    """``path`` in at most ``width`` cells: whole if it fits, else its first folder, …, and as many of its last
    parts as fit (``/tmp/…/audio/track.flac``), else ``…/`` and the file name, else the file name's end."""
    if cell_len(path) <= width:
        return path
    sep = "/" if "/" in path or os.sep == "/" else os.sep
    parts = path.split(sep)
    n_head = 2 if parts[0] == "" else 1  # "/tmp" of an absolute path, else "music"
    head = sep.join(parts[:n_head])
    best = ""
    for keep in range(1, len(parts)):  # more of the path's end while it fits
        tail = sep.join(parts[-keep:])
        forms = [f"{head}{sep}…{sep}{tail}"] if keep < len(parts) - n_head else []  # … stands for a folder
        shortened = next((c for c in [*forms, f"…{sep}{tail}"] if cell_len(c) <= width), "")
        if not shortened:
            break
        best = shortened
    if best:
        return best
    end = parts[-1]
    while end and cell_len("…" + end) > width:  # a name longer than the column: its end (extension) stays
        end = end[1:]
    return "…" + end if width > 0 else ""


class MiddleElided:
    """A path on one line; where its column is narrower, the middle is cut (:func:`middle_elided_path`), as
    the file name is what tells hits apart. Control characters are escaped, [brackets] are not markup."""

    def __init__(self, path: object) -> None:
        self.text = safe_text(path)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(cell_len(self.text), 1), cell_len(self.text))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(middle_elided_path(self.text, options.max_width), no_wrap=True, overflow="ellipsis")


def track_cell(artist: str | None, title: str | None, path: str) -> Text | MiddleElided:
    """What tells a track apart on one line: ``artist – title`` when tagged (cut at its end), else its path
    (cut in its middle, so the file name stays); neither read as [markup]."""
    return ellipsised(f"{artist} – {title}") if artist and title else MiddleElided(path)


def folded(path: object) -> Text:
    """A path kept whole (it is what a user acts on), folded onto more lines where its column is narrower."""
    return Text(safe_text(path), overflow="fold")


def cells_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """The width of these columns of text in a Table(show_edge=False), each as wide as its widest cell."""
    return sum(max([cell_len(h), *(cell_len(r[i]) for r in rows)]) + _CELL_EXTRA for i, h in enumerate(header))


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
