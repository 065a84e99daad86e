"""The command line as a fresh user meets it: `--version` alone, usage errors as one line, and a mistyped
--library that fails cleanly (serve too) and leaves nothing on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.version import __version__

runner = CliRunner()


def test_version_needs_no_command() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == __version__


@pytest.mark.parametrize("args, says", [
    (["search", "x", "--bogus"], "error: No such option: --bogus (see songseek search --help)"),
    (["index", "--library", "L"], "error: Missing argument 'SOURCES' (see songseek index --help)"),
    (["nosuch"], "error: No such command 'nosuch' (see songseek --help)"),
    (["bench", "nosuch"], "error: No such command 'nosuch' (see songseek bench --help)"),
    (["search", "x", "-k", "many"], "error: Invalid value for '-k'"),
])
def test_usage_errors_are_one_line_with_exit_2(args: list[str], says: str) -> None:
    r = runner.invoke(app, args, prog_name="songseek")
    assert r.exit_code == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(says), r.stderr


def test_no_arguments_still_shows_help() -> None:
    r = runner.invoke(app, ["bench"], prog_name="songseek")
    assert "Usage: songseek bench" in r.output and "error:" not in r.output


@pytest.mark.parametrize("lock_only", [False, True])
def test_serve_without_a_library_is_one_line(tmp_path: Path, lock_only: bool) -> None:
    lib = tmp_path / "nolib"
    if lock_only:  # what a failed command of an older version left behind
        lib.mkdir()
        (lib / ".lock").write_text("songseek pid 1")
    r = runner.invoke(app, ["serve", "--library", str(lib)])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: no library at {lib}: create one with `songseek index DIR --library {lib}`"
    assert lib.exists() == lock_only


@pytest.mark.parametrize("command", [["tag"], ["duplicates"], ["mos", "predict"]])
def test_mistyped_library_leaves_nothing_on_disk(tmp_path: Path, command: list[str]) -> None:
    wrong = tmp_path / "typo" / "lib"
    r = runner.invoke(app, [*command, "--library", str(wrong)])
    assert r.exit_code == 2 and "no library at" in r.stderr and len(r.stderr.splitlines()) == 1, r.output
    assert list(tmp_path.iterdir()) == []


def test_index_of_a_missing_source_creates_no_library(tmp_path: Path) -> None:
    r = runner.invoke(app, ["index", str(tmp_path / "nosrc"), "--library", str(tmp_path / "lib"), "--encoder", "fake"])
    assert r.exit_code == 2 and "does not exist" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, says", [
    (["bench", "index-speed", "SRC", "--window", "nan"], "error: --batch-size, --workers, --window, --hop and"),
    (["bench", "index-speed", "SRC", "--hop", "inf"], "error: --batch-size, --workers, --window, --hop and"),
    (["bench", "query-speed", "--frames", "500", "--dim", "4", "--nprobe", "0"], "error: --nprobe must be at least 1"),
    (["bench", "query-speed", "--frames", "500", "--dim", "4", "--threads", "-1"], "error: --threads must be 0"),
    (["demo", "--tracks", "0"], "error: --tracks and -k must be at least 1 (got 0, 5)"),
    (["demo", "--tracks", "2", "-k", "0"], "error: --tracks and -k must be at least 1 (got 2, 0)"),
    (["mos", "train", "--lr", "nan"], "error: --lr must be positive and finite (got nan)"),
    (["mos", "train", "--lr", "inf"], "error: --lr must be positive and finite (got inf)"),
    (["mos", "train", "--epochs", "0"], "error: --epochs must be positive (got 0)"),
])
def test_bad_numbers_are_one_line_with_exit_2_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              args: list[str], says: str) -> None:
    """nan and inf slip past `value <= 0`; a check after the work (a synthetic library built, demo tracks
    generated and indexed) leaves progress lines on stdout/stderr before the error. Each is refused first."""
    import pyarrow.parquet as pq

    from tests.library_helpers import vector_table

    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    if args[0] == "mos":
        pq.write_table(vector_table(6, 8, seed=2), tmp_path / "v.parquet")
        assert runner.invoke(app, ["ingest", "v.parquet", "--library", "lib"]).exit_code == 0
        (tmp_path / "r.csv").write_text("track_id,impression\n" + "".join(f"t{i:04d},{1 + i % 5}\n" for i in range(6)))
        args = [*args, "--library", "lib", "--ratings", "r.csv", "--head", "head.safetensors"]
    args = [str(tmp_path / "src") if a == "SRC" else a for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = runner.invoke(app, [*args, "--work", "work"] if args[0] == "bench" else args, prog_name="songseek")
    assert r.exit_code == 2 and r.stdout == "", r.output
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(says), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no library, demo set or head written


@pytest.mark.parametrize("args, option", [
    (["bench", "planted", "--engine-check", "-1"], "--engine-check"),
    (["bench", "planted", "--noise", "-1"], "--noise"),
    (["bench", "rerank", "--library", "L", "--queries", "q.csv", "--candidates", "0"], "--candidates"),
    (["bench", "retrieval", "--candidates", "0"], "--candidates"),
    (["bench", "index-build", "--queries", "0"], "--queries"),
    (["tag", "--library", "L", "--show", "-1"], "--show"),
    (["sql", "SELECT 1", "--library", "L", "--limit", "-1"], "--limit"),
])
def test_numbers_below_their_range_are_usage_errors(args: list[str], option: str) -> None:
    """A negative --engine-check was a numpy traceback, a negative noise or a zero candidates ran, a negative
    --limit or --show acted as 'all': each is now refused by the option's range, in one line, before any work."""
    r = runner.invoke(app, args, prog_name="songseek")
    assert r.exit_code == 2 and r.stdout == "", r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: Invalid value for '{option}'"), r.stderr
