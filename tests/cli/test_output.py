"""What a user who pipes songseek meets: `| head` ends it quietly with exit 0, and a path in a narrow column
keeps its file name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.cli.tables import middle_elided_path
from tests.library_helpers import vector_table

CLI = "import sys; sys.modules['torch'] = None; from songseek.cli.main import app; app()"


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("output")
    pq.write_table(vector_table(40, 32, seed=3), root / "v.parquet")
    result = CliRunner().invoke(app, ["ingest", str(root / "v.parquet"), "--library", str(root / "lib"),
                                      "--encoder", "fake"])
    assert result.exit_code == 0, result.stderr
    return root / "lib"


@pytest.mark.parametrize("args", [
    ["sql", "SELECT * FROM frames"],                       # the table view
    ["sql", "SELECT * FROM frames", "--csv"],
    ["sql", "SELECT * FROM frames", "--json"],
    ["info"],
    ["search", "anything", "-k", "40"],
    ["search", "anything", "--json"],
])
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(lib: Path, args: list[str]) -> None:
    """`songseek ... | head -1`: the reader is gone before songseek writes (the harshest case), so every
    write meets a broken pipe; like grep or rg, songseek then stops with exit 0 and says nothing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-c", CLI, *args, "--library", str(lib)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    errors = [line for line in proc.stderr.splitlines() if "RANDOM weights" not in line]  # the fake encoder's
    assert proc.returncode == 0 and errors == [], proc.stderr


@pytest.mark.parametrize("width, shown", [
    (200, "/tmp/pytest-of-u/pytest-1/songseek-demo/music/audio/synth-2024-00003.flac"),
    (40, "/tmp/…/music/audio/synth-2024-00003.flac"),
    (34, "/tmp/…/audio/synth-2024-00003.flac"),
    (30, "…/audio/synth-2024-00003.flac"),
    (22, "…synth-2024-00003.flac"),     # not even …/ and the name: the name's end, with its extension
    (8, "…03.flac"),
])
def test_a_path_loses_its_middle_not_its_file_name(width: int, shown: str) -> None:
    path = "/tmp/pytest-of-u/pytest-1/songseek-demo/music/audio/synth-2024-00003.flac"
    assert middle_elided_path(path, width) == shown and len(shown) <= width


def test_a_relative_or_short_path_is_elided_too() -> None:
    assert middle_elided_path("music/a/b/c.wav", 12) == "…/a/b/c.wav"
    assert middle_elided_path("music/albums/x/c.wav", 15) == "music/…/x/c.wav"
    assert middle_elided_path("/tmp/f.flac", 8) == "…/f.flac"
