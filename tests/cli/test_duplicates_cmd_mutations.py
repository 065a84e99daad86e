"""`songseek duplicates` behaviour test_duplicates_cmd.py leaves open: the options reach the engine, the text
view's header and the exact width at which a path goes beside its member, and bench duplicates-speed's table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from tests.analysis_helpers import build_library, duplicate_tracks

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("dupmut") / "lib", duplicate_tracks())


def test_neighbours_audio_and_level_reach_the_engine(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.engine.analysis import duplicates as engine

    seen = []
    real = engine.update_library

    def spy(library: Path, params: object, marks: list) -> object:
        seen.append((params, marks))
        return real(library, params, marks)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "update_library", spy)
    res = runner.invoke(app, ["duplicates", "--library", str(root), "--json", "--neighbours", "5", "--no-audio",
                              "--min-level", "master"])
    assert res.exit_code == 0, res.output
    params, marks = seen[-1]
    assert (params.neighbours, params.audio, params.min_level, marks) == (5, False, 2, [])  # type: ignore[attr-defined]
    res = runner.invoke(app, ["duplicates", "--library", str(root), "--json", "--not-duplicate", "t000", "t001"])
    assert res.exit_code == 0, res.output
    params, marks = seen[-1]
    assert (params.neighbours, params.audio, params.min_level) == (20, True, 3)  # type: ignore[attr-defined]
    assert [tuple(m) for m in marks] == [("t000", "t001")]


def _expected_rows(group: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for m in group["members"]:
        mark = "keep" if m["keep"] else f"L{m['level']}"
        fmt = (f"format unknown {m['duration_s']:.1f} s" if not m["sample_rate"] else
               f"{m['codec']} {m['bit_rate_kbps']:.0f} kbit/s {m['sample_rate']} Hz {m['duration_s']:.1f} s")
        rows.append((mark, m["track_id"], fmt, m["path"]))
    return rows


def test_the_path_goes_beside_exactly_when_the_whole_row_fits(tmp_path: Path) -> None:
    tracks = duplicate_tracks()
    root = build_library(tmp_path / "lib", tracks, ids=[f"id{i}-{'x' * i}" for i in range(len(tracks))])
    groups = json.loads(runner.invoke(app, ["duplicates", "--library", str(root), "--json"]).stdout)
    assert len(groups) == 1
    rows = _expected_rows(groups[0])
    need = sum(max(len(r[i]) for r in rows) for i in range(3)) + 8 + max(len(r[3]) for r in rows)
    fits = runner.invoke(app, ["duplicates", "--library", str(root)], env={"COLUMNS": str(need)})
    assert fits.exit_code == 0, fits.output
    lines = fits.stdout.splitlines()
    assert lines[0] == f"group {groups[0]['group_id']}  level {groups[0]['level']} ({groups[0]['level_name']})"
    for mark, tid, fmt, path in rows:  # one line per member: mark, id, format and path
        assert any(line.split() == [mark, tid, *fmt.split(), path] for line in lines), (fits.stdout, tid)
    narrow = runner.invoke(app, ["duplicates", "--library", str(root)], env={"COLUMNS": str(need - 1)})
    lines = narrow.stdout.splitlines()
    width = max(len(r[1]) for r in rows)
    for mark, tid, fmt, path in rows:  # the id padded to the widest, then the format; the path below
        assert any(line.strip() == f"{mark}  {tid.ljust(width)}  {fmt}".strip() or
                   line.split() == [mark, tid, *fmt.split()] for line in lines), (narrow.stdout, tid)
        assert any(line.strip() == path for line in lines), (narrow.stdout, path)
        assert any(line.startswith(f" {mark} ") and f"{tid.ljust(width)}  {fmt}" in line for line in lines)


def test_duplicates_speed_table_and_growth_exponent(monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.benchmarks import duplicates as bench

    def row(tracks: int, seconds: float) -> SimpleNamespace:
        return SimpleNamespace(tracks=tracks, frames=tracks * 10, seconds=seconds,
                               seconds_per_1k=seconds / tracks * 1000, candidates=7, aligned=5, groups=3,
                               planted=4, planted_found=4)

    rows = [row(1000, 2.0), row(2000, 5.0), row(8000, 32.0)]
    monkeypatch.setattr(bench, "run_speed", lambda tracks, work: rows)
    res = runner.invoke(app, ["bench", "duplicates-speed", "--tracks", "1000"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 1 + len(rows) + 1
    assert [ln.split()[0] for ln in lines[1:-1]] == ["1000", "2000", "8000"]
    want = math.log(32.0 / 2.0) / math.log(8000 / 1000)  # between the first and the last size
    assert lines[-1].startswith("growth exponent (time ∝ tracks^x) between 1000 and 8000: ")
    assert f"x = {want:.2f} " in lines[-1]
    monkeypatch.setattr(bench, "run_speed", lambda tracks, work: rows[:2])
    two = runner.invoke(app, ["bench", "duplicates-speed"]).stdout.splitlines()
    assert two[-1].startswith("growth exponent") and f"x = {math.log(2.5) / math.log(2):.2f} " in two[-1]
    monkeypatch.setattr(bench, "run_speed", lambda tracks, work: rows[:1])
    one = runner.invoke(app, ["bench", "duplicates-speed"]).stdout
    assert "growth exponent" not in one and len(one.splitlines()) == 2


def test_bench_duplicates_no_real_leaves_the_real_folder_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from songseek.benchmarks import duplicates as bench

    specs = []

    def run_labelled(spec: object, work: Path, encoder: str, random_weights: bool, audio: bool,
                     neighbours: int) -> SimpleNamespace:
        specs.append((spec, work, encoder, random_weights, audio, neighbours))
        return SimpleNamespace(to_json=lambda: {"ok": 1}, table=lambda: "TABLE")

    monkeypatch.setattr(bench, "run_labelled", run_labelled)
    empty = tmp_path / "none"
    empty.mkdir()
    res = runner.invoke(app, ["bench", "duplicates", "--work", str(tmp_path / "w"), "--no-real", "--real-dir",
                              str(empty), "--json", "--no-audio", "--neighbours", "6", "--seed", "9"])
    assert res.exit_code == 0 and json.loads(res.stdout) == {"ok": 1} and "note:" not in res.stderr
    spec, work, encoder, random_weights, audio, neighbours = specs[-1]
    assert spec.real_dir is None and spec.seed == 9 and work == tmp_path / "w"  # type: ignore[attr-defined]
    assert (encoder, random_weights, audio, neighbours) == ("demo", False, False, 6)
    res = runner.invoke(app, ["bench", "duplicates", "--work", str(tmp_path / "w"), "--real-dir", str(empty)])
    assert res.exit_code == 0 and res.stdout == "TABLE\n"
    assert specs[-1][0].real_dir == empty  # type: ignore[attr-defined]
    assert res.stderr.startswith(f"note: no real recordings (*.ogg) in {empty.resolve()}: the set is synthetic")
