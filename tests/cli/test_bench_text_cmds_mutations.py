"""`songseek bench text-speed` / `text-ranking` argument checks (exit 2 before any model or library work)
and the --query-file texts text-ranking is given; the benchmark runs themselves are replaced by recorders."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from songseek.cli.main import app

runner = CliRunner()


@pytest.fixture
def no_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every benchmark run, recorded instead of run."""
    from songseek.benchmarks import int8_ranking, text_query

    calls: list[tuple] = []
    monkeypatch.setattr(text_query, "run_text_contract", lambda *a, **kw: calls.append(("speed", a, kw)))

    def ranking(library: Path, texts: list[str], k: int, seed: int) -> SimpleNamespace:
        calls.append(("ranking", library, texts, k, seed))
        return SimpleNamespace(to_json=lambda: {"texts": texts})

    monkeypatch.setattr(int8_ranking, "run_text_ranking", ranking)
    return calls


@pytest.mark.parametrize("args", [
    ["--library", "L", "--frames", "10"],                     # both
    ["--library", "L", "--queries", "0"], ["--library", "L", "--words", "0"],
    ["--library", "L", "--threads", "0"], ["--library", "L", "-k", "0"],
    ["--frames", "0", "--encoder", "demo"], ["--frames", "-5", "--encoder", "demo"],
    ["--frames", "10"],                                       # no encoder for a synthetic library
])
def test_text_speed_refuses_bad_arguments_in_one_line(no_runs: list[tuple], args: list[str]) -> None:
    res = runner.invoke(app, ["bench", "text-speed", *args])
    assert res.exit_code == 2 and res.stdout == "" and no_runs == []
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")


@pytest.mark.parametrize("args", [["--queries", "1"], ["--queries", "0"], ["-k", "0"], ["--threads", "0"]])
def test_text_ranking_refuses_bad_numbers(no_runs: list[tuple], args: list[str], tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "text-ranking", "--library", str(tmp_path), *args])
    assert res.exit_code == 2 and no_runs == []
    assert res.stderr.strip() == "error: --queries must be at least 2, -k and --threads positive"


def test_text_ranking_reads_distinct_nonblank_lines_up_to_queries(no_runs: list[tuple], tmp_path: Path) -> None:
    lines = ["  jazz piano ", "", "rock", "jazz piano", "   ", "ambient pad", "rock", "folk", "metal"]
    (tmp_path / "q.txt").write_text("\n".join(lines), encoding="utf-8")
    res = runner.invoke(app, ["bench", "text-ranking", "--library", str(tmp_path), "--query-file",
                              str(tmp_path / "q.txt"), "--queries", "4", "-k", "3", "--seed", "5", "--json"])
    assert res.exit_code == 0, res.output
    want: list[str] = []
    for ln in lines:  # stripped, blank lines dropped, first occurrence kept, at most --queries
        t = ln.strip()
        if t and t not in want and len(want) < 4:
            want.append(t)
    assert no_runs == [("ranking", tmp_path, want, 3, 5)]
    assert json.loads(res.stdout) == {"texts": want, "saved": None}


def test_text_ranking_refuses_a_query_file_that_is_not_utf8(no_runs: list[tuple], tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_bytes(b"caf\xe9\n")
    res = runner.invoke(app, ["bench", "text-ranking", "--library", str(tmp_path), "--query-file",
                              str(tmp_path / "q.txt")])
    assert res.exit_code == 2 and no_runs == [] and len(res.stderr.strip().splitlines()) == 1
    assert "cannot read it as UTF-8 text" in res.stderr and "q.txt" in res.stderr
    res = runner.invoke(app, ["bench", "text-ranking", "--library", str(tmp_path), "--query-file",
                              str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and no_runs == [] and "missing.txt: cannot read it" in res.stderr
