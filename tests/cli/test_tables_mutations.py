"""cli/tables.py against plain references: a path's middle elision, the split of wide number tables, key: value
lines, and what the table helpers show (escapes, the continued title, track cells)."""

from __future__ import annotations

import random

import pytest
from rich.console import Console
from rich.table import Table

from songseek.cli import tables
from songseek.cli.tables import (
    MiddleElided,
    cells_width,
    column_groups,
    ellipsised,
    folded,
    key_value,
    middle_elided_path,
    print_columns,
    track_cell,
)


def _reference_elision(path: str, width: int) -> str:
    """The rule in middle_elided_path's docstring, spelt out with plain loops (ASCII paths: a cell a char)."""
    if len(path) <= width:
        return path
    parts = path.split("/")
    n_head = 2 if parts[0] == "" else 1
    head = "/".join(parts[:n_head])
    found = None
    for keep in range(len(parts) - 1, 0, -1):  # the longest end that fits in some form wins
        tail = "/".join(parts[len(parts) - keep:])
        forms = []
        if len(parts) - keep > n_head:  # "…" stands for one folder at least
            forms.append(head + "/…/" + tail)
        forms.append("…/" + tail)
        fitting = [f for f in forms if len(f) <= width]
        if fitting:
            found = fitting[0]
            break
    if found is not None:
        return found
    if width <= 0:
        return ""
    name = parts[-1]
    return "…" + name[len(name) - max(width - 1, 0):] if width - 1 < len(name) else "…" + name


def _random_path(rng: random.Random) -> str:
    parts = ["".join(rng.choice("abcxyz-_0") for _ in range(rng.randint(1, 9))) for _ in range(rng.randint(1, 7))]
    parts[-1] += rng.choice([".flac", ".wav", ".mp3", ""])
    return ("/" if rng.random() < 0.6 else "") + "/".join(parts)


def test_middle_elision_matches_the_rule_on_random_paths_and_widths() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        path = _random_path(rng)
        width = rng.randint(0, len(path) + 2)
        got = middle_elided_path(path, width)
        assert got == _reference_elision(path, width), (path, width, got)
        assert len(got) <= width


def test_elision_edges() -> None:
    assert middle_elided_path("/a/b.flac", 9) == "/a/b.flac"  # exactly as wide: whole
    assert middle_elided_path("/a/b.flac", 0) == ""
    assert middle_elided_path("/a/b.flac", 1) == "…"
    assert middle_elided_path("/tmp/a/b/c.wav", 13) == "…/a/b/c.wav"  # more of the end beats the head
    assert middle_elided_path("/t/aaaaaaaa/b/c.wav", 12) == "/t/…/b/c.wav"  # "…" stands for aaaaaaaa
    assert middle_elided_path("/tmp/a/c.wav", 11) == "…/a/c.wav"  # "/tmp/…/c.wav" is no shorter: not offered


def _reference_groups(sizes: list[int], width: int) -> list[list[int]]:
    groups, current, used = [], [0], sizes[0]
    for i in range(1, len(sizes)):
        if len(current) > 1 and used + sizes[i] > width:
            groups.append(current)
            current, used = [0], sizes[0]
        current = [*current, i]
        used = used + sizes[i]
    return [*groups, current]


def test_column_groups_are_greedy_fits_that_each_repeat_the_key() -> None:
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 12)
        header = [f"h{i}" * rng.randint(1, 4) for i in range(n)]
        rows = [[str(rng.randint(0, 10 ** rng.randint(0, 9))) for _ in range(n)] for _ in range(rng.randint(0, 3))]
        width = rng.randint(5, 120)
        sizes = [max([len(h), *(len(r[i]) for r in rows)]) + 3 for i, h in enumerate(header)]
        groups = column_groups(header, rows, width)
        assert groups == _reference_groups(sizes, width)
        assert all(g[0] == 0 for g in groups)
        assert [i for g in groups for i in g[1:]] == list(range(1, n))  # every column once, in order
        for g in groups:  # each table fits, unless it holds a single column beside the key
            assert len(g) <= 2 or sum(sizes[i] for i in g) <= width
        for a, b in zip(groups, groups[1:]):  # greedy: the next table's first column did not fit
            assert sum(sizes[i] for i in a) + sizes[b[1]] > width


def test_column_groups_edges() -> None:
    header, row = ["key", "aaaa", "bbbb"], ["1", "2", "3"]  # sizes 6, 7, 7
    assert column_groups(header, [row], 20) == [[0, 1, 2]]  # 20: fits exactly
    assert column_groups(header, [row], 19) == [[0, 1], [0, 2]]
    assert column_groups(header, [row], 1) == [[0, 1], [0, 2]]  # a column beside the key always
    assert column_groups(["key"], [], 1) == [[0]]


def test_cells_width_is_the_widest_cell_plus_padding_per_column() -> None:
    header, rows = ["ab", "c"], [["x", "12345"], ["xyz", "1"]]
    assert cells_width(header, rows) == (3 + 3) + (5 + 3)
    assert cells_width(["abc"], []) == 6


def test_print_columns_continues_the_title_and_right_aligns_numbers(capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    header = ["name", *(f"metric{i}" for i in range(6))]
    row = ["x\x1by", *(f"{i}.5" for i in range(6))]
    print_columns("speed", header, [row], text=["name"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "x\\x1by" in out
    titles = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("speed")]
    groups = column_groups(header, [row], 40)
    assert titles == ["speed"] + ["speed (continued)"] * (len(groups) - 1) and len(groups) > 1
    line = next(ln for ln in out.splitlines() if "metric0" in ln)
    value = next(ln for ln in out.splitlines() if "0.5" in ln)
    assert line.index("metric0") + len("metric0") == value.index("0.5") + len("0.5")  # right-aligned


@pytest.mark.parametrize("cols", [40, 100])
def test_key_value_wraps_under_the_values_start(monkeypatch: pytest.MonkeyPatch, cols: int) -> None:
    monkeypatch.setenv("COLUMNS", str(cols))
    value = " ".join(f"word{i}" for i in range(40))
    lines = key_value("tracks", value).splitlines()
    assert lines[0].startswith(" " * 12 + "tracks: ")
    assert all(ln.startswith(" " * 20) and not ln.startswith(" " * 21) for ln in lines[1:])
    assert all(len(ln) <= max(cols, 40) for ln in lines) and len(lines) > 1
    assert " ".join(ln.strip() for ln in lines)[len("tracks: "):] == value
    assert key_value("k", "") == " " * 17 + "k:"
    assert key_value("key", "v", key_width=5) == "  key: v"


def test_key_value_never_wraps_narrower_than_twenty_cells_of_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10")
    lines = key_value("k", "aaaa bbbb cccc dddd eeee").splitlines()
    assert lines == [" " * 17 + "k: aaaa bbbb cccc dddd", " " * 20 + "eeee"]


def _render(cell: object, width: int) -> str:
    console = Console(width=width, file=None, record=True, color_system=None)
    table = Table(show_header=False, box=None, padding=0)
    table.add_column()
    table.add_row(cell)  # type: ignore[arg-type]
    with console.capture() as cap:
        console.print(table)
    return cap.get()


def test_track_cell_needs_both_artist_and_title() -> None:
    assert isinstance(track_cell("A", "T", "/m/x.flac"), type(ellipsised("")))
    assert _render(track_cell("A", "T", "/m/x.flac"), 40).strip() == "A – T"
    for artist, title in (("A", None), (None, "T"), ("", "T"), (None, None)):
        cell = track_cell(artist, title, "/m/x.flac")
        assert isinstance(cell, MiddleElided) and _render(cell, 40).strip() == "/m/x.flac"


def test_middle_elided_cell_shrinks_to_its_column_and_escapes() -> None:
    cell = MiddleElided("/music/albums/x\x1by/song.flac")
    assert _render(cell, 80).strip() == "/music/albums/x\\x1by/song.flac"
    assert _render(cell, 20).strip() == middle_elided_path("/music/albums/x\\x1by/song.flac", 20)
    assert _render(folded("a\nb"), 20).strip() == "a\\nb"


def test_pipe_width_is_used_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(tables.shutil, "get_terminal_size", lambda fallback: __import__("os").terminal_size(fallback))
    assert tables.width() == tables.PIPE_WIDTH == 140
