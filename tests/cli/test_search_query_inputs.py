"""`songseek search --query-file` / `--query-vectors` inputs as users write them: a byte-order mark, a bad
line in a long file, an empty array."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from tests.audio_helpers import tone_track, write_wav

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def errors(err: str) -> list[str]:
    """stderr without the warning every search of a fake-encoder (random weights) library starts with."""
    return [line for line in err.splitlines() if "RANDOM weights" not in line]


@pytest.fixture
def library(tmp_path: Path) -> Path:
    music = tmp_path / "music"
    for i, freqs in enumerate(([110.0, 110.0], [3000.0, 3000.0, 110.0], [440.0])):
        write_wav(music / f"t{i}.wav", tone_track(freqs, 10, i))
    lib = tmp_path / "lib"
    code, _, err = run("index", str(music), "--library", str(lib), "--encoder", "fake")
    assert code == 0, err
    return lib


def search_file(library: Path, path: Path) -> tuple[int, list[list[tuple[str, float]]], list[str]]:
    code, out, err = run("search", "--query-file", str(path), "--library", str(library), "-k", "3")
    rows = [[(h["track_id"], h["score"]) for h in json.loads(line)] for line in out.splitlines()]
    return code, rows, errors(err)


def test_a_byte_order_mark_is_not_part_of_the_first_query(library: Path, tmp_path: Path) -> None:
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("low drone\r\nmid tone\r\n", encoding="utf-8")
    marked.write_text("low drone\r\nmid tone\r\n", encoding="utf-8-sig")  # what Notepad's "UTF-8 with BOM" writes
    code, want, _ = search_file(library, plain)
    assert code == 0 and [len(r) for r in want] == [3, 3]
    code, got, err = search_file(library, marked)
    assert code == 0, err
    assert got == want  # the first line is searched as "low drone", not "\ufefflow drone"
    # a file whose first line is blank: the mark alone is a blank line ([]), not an "empty query" error
    marked.write_text("\nmid tone\n", encoding="utf-8-sig")
    code, got, err = search_file(library, marked)
    assert code == 0, err
    assert got == [[], want[1]]


def test_a_bad_line_is_named_by_its_number(library: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    lines = ["low drone"] * 500 + ["piano " * 4000, "mid tone"]  # line 501 is past the 20,000-character limit
    queries.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, rows, err = search_file(library, queries)
    assert code == 2 and rows == []
    assert len(err) == 1 and err[0].startswith(f"error: {queries} line 501: ") and "20,000" in err[0], err
    queries.write_text("low drone\n\n\x00\x01\nmid tone\n", encoding="utf-8")  # control characters only
    code, rows, err = search_file(library, queries)
    assert code == 2 and rows == []
    assert len(err) == 1 and err[0].startswith(f"error: {queries} line 3: the text query is empty"), err


def test_query_vectors_with_no_rows_is_an_error(library: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "none.npy", np.zeros((0, 32), np.float32))
    code, out, err = run("search", "--query-vectors", str(tmp_path / "none.npy"), "--library", str(library))
    assert code == 2 and out == ""  # it printed nothing and exited 0
    assert errors(err) == [f"error: {tmp_path / 'none.npy'}: no query vectors in the file (an array of shape "
                           "(0, 32))"]
