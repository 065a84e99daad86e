"""`songseek bench retrieval --dataset M --missing error`: the refusal is one line that names the command-line
option that evaluates the files present, not only the Python keyword."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from songseek.cli.bench_retrieval_cmds import register_bench
from tests.benchmarks.test_datasets import write_wav


def test_missing_error_names_the_cli_option(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav")
    m = tmp_path / "m.csv"
    m.write_text("path,caption\na.wav,calm piano\ngone.wav,loud drums\n", encoding="utf-8")
    root, bench = typer.Typer(), typer.Typer()
    root.add_typer(bench, name="bench")
    register_bench(bench)
    res = CliRunner().invoke(root, ["bench", "retrieval", "--dataset", str(m), "--missing", "error",
                                    "--library", str(tmp_path / "lib")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "1 of 2 audio files are missing" in lines[0] and "gone.wav" in lines[0]
    assert "--missing skip" in lines[0]
