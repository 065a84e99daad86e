"""Malformed manifest / queries rows: a row with more cells than the header (an unquoted comma in a caption)
and half a span must be refused with one line naming the file and line, never silently evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest

from songseek.benchmarks.datasets import load_manifest, load_queries
from songseek.engine.errors import UsageError


def test_unquoted_comma_in_caption_is_refused_not_truncated(audio_root: Path) -> None:
    m = audio_root / "m.csv"
    m.write_text("path,caption\nc.wav,calm piano\na.wav,happy song, with guitar and drums\n", encoding="utf-8")
    with pytest.raises(UsageError) as err:
        load_manifest(m)  # before: caption 'happy song', the rest of the row silently dropped
    msg = str(err.value)
    assert msg.startswith(f"{m}: line 3: 3 cells but the header has 2") and "comma" in msg and "\n" not in msg


def test_extra_tab_in_tsv_row_is_refused(audio_root: Path) -> None:
    m = audio_root / "m.tsv"
    m.write_text("path\tcaption\na.wav\tsoft\tstrings\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"line 2: 3 cells but the header has 2; quote a cell that holds a tab"):
        load_manifest(m)


def test_quoted_comma_and_multiline_caption_still_load(audio_root: Path) -> None:
    m = audio_root / "m.csv"
    m.write_text('path,caption\nc.wav,"two\nlines, one caption"\na.wav,"happy song, with guitar"\n', encoding="utf-8")
    ds = load_manifest(m)
    assert [it.captions for it in ds.items] == [("two\nlines, one caption",), ("happy song, with guitar",)]


def test_queries_row_with_extra_cells_names_the_line(tmp_path: Path) -> None:
    q = tmp_path / "q.csv"
    q.write_text("id,query,relevant\na,piano,t1\nb,happy, upbeat song,t2\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"q\.csv: line 3: 4 cells but the header has 3"):
        load_queries(q)  # before: query 'happy', relevant ' upbeat song'


@pytest.mark.parametrize("cols, cells", [(["start_s"], ["5"]), (["end_s"], ["20"])])
def test_manifest_half_span_is_refused(audio_root: Path, cols: list[str], cells: list[str]) -> None:
    m = audio_root / "m.csv"
    # two rows of one file with only a start: before, two items that each covered the whole file, so
    # audio→text counted the other row's caption as a wrong answer
    m.write_text(f"path,caption,{cols[0]}\na.wav,intro,{cells[0]}\na.wav,outro,{int(cells[0]) + 60}\n",
                 encoding="utf-8")
    with pytest.raises(UsageError, match=r"m\.csv: line 2: give both 'start_s' and 'end_s' or neither"):
        load_manifest(m)


def test_manifest_full_span_and_no_span_still_load(audio_root: Path) -> None:
    m = audio_root / "m.csv"
    m.write_text("path,caption,start_s,end_s\na.wav,intro,0,10\na.wav,whole,,\n", encoding="utf-8")
    ds = load_manifest(m)
    assert sorted((it.start_s, it.end_s) for it in ds.items if it.start_s is not None) == [(0.0, 10.0)]
    assert len(ds.items) == 2
