"""What a first user sees: --help that reads like a well-kept CLI, tables that fit an 80-column terminal,
and errors that name the option typed rather than the engine's parameter."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from songseek.cli.common import cli_message, option_names
from songseek.cli.main import app
from songseek.cli.tables import column_groups, print_columns
from tests.library_helpers import vector_table

runner = CliRunner()


def _commands() -> list[list[str]]:
    def walk(command: object, path: list[str]) -> list[list[str]]:
        subs = getattr(command, "commands", {})
        return [path] + [p for name, sub in subs.items() for p in walk(sub, [*path, name])]

    return walk(get_command(app), [])


def test_every_help_reads_cleanly_at_80_columns() -> None:
    for path in _commands():
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0, (path, r.output)
        assert not re.search(r"<(bool|int|float|str|path|list\[\w+\])>", r.output, re.IGNORECASE), (path, r.output)
        assert "{" not in r.output.splitlines()[0], (path, r.output)  # usage: SOURCES..., not {sources}...
        assert max(map(len, r.output.splitlines())) <= 80, (path, r.output)


def test_every_seed_option_refuses_a_negative_seed_in_one_line(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's generators take no negative seed: every command with --seed says so before any work (synth,
    demo, mos train and the benchmarks used to end in a ValueError traceback, exit 1)."""
    monkeypatch.chdir(tmp_path)  # a command that ran anyway (demo: ./songseek-demo) writes here
    seeded = [path for path in _commands()
              if any("--seed" in getattr(p, "opts", []) for p in getattr(get_command_at(path), "params", []))]
    assert {"synth", "demo", "mos train", "bench query-speed", "bench planted"} <= {" ".join(p) for p in seeded}
    for path in seeded:
        r = runner.invoke(app, [*path, "--seed", "-1"], prog_name="songseek")
        assert r.exit_code == 2 and r.stdout == "", (path, r.output)
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: Invalid value for '--seed'"), \
            (path, r.stderr)
    assert not any(tmp_path.iterdir())  # refused before any work


def get_command_at(path: list[str]) -> object:
    command: object = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def test_flags_and_values_read_like_click() -> None:
    index = runner.invoke(app, ["index", "--help"], env={"COLUMNS": "100"}).output
    assert "Usage: songseek index [OPTIONS] SOURCES..." in index
    assert re.search(r"^  --prune / --no-prune +Drop", index, re.MULTILINE), index
    assert re.search(r"^  --strict +Exit 1", index, re.MULTILINE), index
    search = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "100"}).output
    assert "Usage: songseek search [OPTIONS] [QUERY]" in search
    for line in ("-k INTEGER", "-l, --library PATH", "--where-timeout FLOAT", "--rerank TEXT"):
        assert f"  {line} " in search, (line, search)
    assert re.search(r"^  --exact +Skip FAISS", search, re.MULTILINE), search
    assert "--min-level, --max-level LEVEL" in runner.invoke(app, ["duplicates", "--help"]).output


def test_a_wide_number_table_is_split_to_fit(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    header = ["frames", "factory", *(f"metric {i}" for i in range(15))]
    row = ["1000000", "IVF4096,SQ8", *(f"{i}.123" for i in range(15))]
    assert column_groups(header, [row], 200) == [list(range(17))]
    groups = column_groups(header, [row], 80)
    assert len(groups) > 1 and all(g[0] == 0 for g in groups)
    assert sorted({i for g in groups for i in g}) == list(range(17))
    monkeypatch.setenv("COLUMNS", "80")
    print_columns("index build", header, [row], text=["factory"])
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80, out
    for cell in row:  # every number whole, none cut with …
        assert cell in out, (cell, out)


def test_outliers_fit_80_columns_and_keep_the_path(tmp_path: Path) -> None:
    rows = vector_table(8, 8, seed=3).to_pylist()
    long_dir = "/music/" + "/".join(["a-rather-long-folder-name"] * 4)
    for r in rows:
        r["path"] = f"{long_dir}/{r['track_id']}.flac"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "v.parquet")
    ingest = runner.invoke(app, ["ingest", str(tmp_path / "v.parquet"), "--library", str(tmp_path / "lib")])
    assert ingest.exit_code == 0, ingest.output
    r = runner.invoke(app, ["outliers", "--library", str(tmp_path / "lib"), "-k", "2", "--top", "3",
                            "--reasons", "0"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert max(map(len, r.stdout.splitlines())) <= 80, r.stdout
    cells = [line.split("│")[2].strip() for line in r.stdout.splitlines() if line.count("│") == 3]
    assert f"{long_dir}/t0000.flac" in "".join(cells), r.stdout  # the path folded, not cut


def test_engine_parameter_names_become_the_options_typed() -> None:
    def command(k: int = typer.Option(10, "-k"), kernel_s: float = typer.Option(None, "--kernel-s"),
                min_level: str = typer.Option("v", "--min-level", "--max-level"),
                audio: bool = typer.Option(True, "--audio/--no-audio"),
                where_timeout: float = typer.Option(10.0, "--where-timeout")) -> None:
        pass

    names = option_names(command)
    assert names["k"] == "-k" and names["audio"] == "--audio" and names["timeout_s"] == "--where-timeout"
    assert cli_message("k must be at least 1 (got 0)", names) == "-k must be at least 1 (got 0)"
    assert cli_message("min_level must be 1, 2 or 3", names) == "--min-level must be 1, 2 or 3"
    assert cli_message("FusionParams (engine/query/fusion.py): kernel_s must be > 0", names) == \
        "--kernel-s must be > 0"
    assert cli_message("timeout_s must be a positive number", names) == "--where-timeout must be a positive number"
    # words that are only words stay: "no library", "-k 5 needs", "the k nearest"
    for text in ("no library at x", "-k 5 needs at least 6 reference tracks", "the k nearest tracks",
                 "lib was built with another audio: 'demo'"):  # a plain word before ":" is prose
        assert cli_message(text, names) == text
    assert cli_message("bad kernel_s: 0", names) == "bad --kernel-s: 0" and cli_message("k=0", names) == "-k=0"


@pytest.mark.parametrize(("args", "says"), [
    (["duplicates", "--min-level", "7"], "error: --min-level must be 1, 2, 3 or one of"),
    (["duplicates", "--not-duplicate", "zz", "t0001"], "error: --not-duplicate: no track 'zz'"),
    (["duplicates", "--neighbours", "0"], "error: --neighbours must be at least 1"),
    (["search", "--query-vectors", "Q", "-k", "0"], "error: -k must be at least 1"),
    (["search", "--query-vectors", "Q", "--candidates", "0"], "error: --candidates must be at least 1"),
    (["search", "--query-vectors", "Q", "--temperature", "0"], "error: --temperature must be > 0"),
    (["serve", "--where-timeout", "0"], "error: --where-timeout must be a positive number"),
])
def test_cli_errors_name_the_option(tmp_path: Path, args: list[str], says: str) -> None:
    import numpy as np

    pq.write_table(vector_table(4, 8, seed=1), tmp_path / "v.parquet")
    ingest = runner.invoke(app, ["ingest", str(tmp_path / "v.parquet"), "--library", str(tmp_path / "lib")])
    assert ingest.exit_code == 0, ingest.output
    np.save(tmp_path / "q.npy", np.ones((1, 8), np.float32))
    args = [str(tmp_path / "q.npy") if a == "Q" else a for a in args]
    r = runner.invoke(app, [*args, "--library", str(tmp_path / "lib")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.output
    assert r.stderr.startswith(says), r.stderr
