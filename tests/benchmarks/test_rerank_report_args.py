"""`python -m songseek.benchmarks.rerank_report` arguments: an existing --out without the report markers is
refused (it used to be replaced whole), bad numbers are one line each, all before any computation; every
option has help and is documented in docs/fusion.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from songseek.benchmarks import rerank_report

DOCS = Path(__file__).resolve().parents[2] / "docs" / "fusion.md"


@pytest.fixture
def no_report(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    runs: list[tuple[object, ...]] = []

    def fake(*args: object) -> str:
        runs.append(args)
        return "the report\n"

    monkeypatch.setattr(rerank_report, "run_report", fake)
    return runs


def test_an_existing_file_without_markers_is_refused_and_kept(tmp_path: Path, no_report: list[tuple[object, ...]],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\nkeep me\n")
    assert rerank_report.main(["--out", str(notes)]) == 2
    assert notes.read_text() == "# my notes\nkeep me\n" and no_report == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out") and "markers" in err[0]
    # one marker without the other is no block either
    notes.write_text(f"intro\n{rerank_report.START}\nold\n")
    assert rerank_report.main(["--out", str(notes)]) == 2 and no_report == []


def test_a_new_or_empty_file_and_a_marked_block_are_written(tmp_path: Path,
                                                             no_report: list[tuple[object, ...]]) -> None:
    new = tmp_path / "new.md"
    assert rerank_report.main(["--out", str(new), "--planted-tracks", "3", "--demo-tracks", "0"]) == 0
    assert new.read_text() == "the report\n"
    empty = tmp_path / "empty.md"
    empty.write_text("")
    assert rerank_report.main(["--out", str(empty)]) == 0 and empty.read_text() == "the report\n"
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{rerank_report.START}\nold\n{rerank_report.END}\noutro\n")
    assert rerank_report.main(["--out", str(doc)]) == 0
    assert doc.read_text() == f"intro\n{rerank_report.START}\nthe report\n{rerank_report.END}\noutro\n"
    assert len(no_report) == 3 and no_report[0][:2] == (3, 0)


@pytest.mark.parametrize(("args", "words"), [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--planted-tracks", "0"], "--planted-tracks must be at least 1"),
    (["--demo-tracks", "-1"], "--demo-tracks must be 0"),
])
def test_bad_numbers_are_one_line_before_any_work(args: list[str], words: str, no_report: list[tuple[object, ...]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert rerank_report.main(args) == 2 and no_report == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_every_option_has_help_and_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        rerank_report.main(["--help"])
    shown = capsys.readouterr().out
    options = sorted(set(re.findall(r"^  (--[a-z-]+)", shown, flags=re.M)) - {"--help"})
    assert options == ["--cache", "--demo-tracks", "--out", "--planted-tracks", "--threads"]
    for opt in options:  # help text on the option's line or the next one
        assert re.search(rf"^  {opt}( [A-Z_]+)?( {{2,}}\S|\n {{20,}}\S)", shown, flags=re.M), opt
    docs = DOCS.read_text()
    assert all(f"`{opt}" in docs for opt in options), [o for o in options if f"`{o}" not in docs]
