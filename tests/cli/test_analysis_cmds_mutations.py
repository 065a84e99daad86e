"""cli/analysis_cmds.py behaviour test_analysis_cmds.py leaves open: outliers' --top/--reasons bounds, the
tag table's rows (--show) and scores (the top label's), and mos predict's order and --top, each against
the stored tables read back with plain loops."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, noisy_copies

runner = CliRunner()
ENC = FakeEncoder()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(4)
    centers = ENC.embed_text(["A jazz track", "A rock track"])
    tracks = [noisy_copies(centers[i % 2], 2, 0.9, rng) for i in range(7)]
    return build_library(tmp_path_factory.mktemp("anmut") / "lib", tracks)


@pytest.mark.parametrize("args", [["--top", "0"], ["--top", "-3"], ["--reasons", "-1"]])
def test_outliers_bounds_are_refused_before_the_library_opens(tmp_path: Path, args: list[str]) -> None:
    r = runner.invoke(app, ["outliers", "-l", str(tmp_path / "nope"), *args])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == "error: --top must be at least 1 and --reasons at least 0"


def test_outliers_top_one_and_no_reasons_are_accepted(root: Path) -> None:
    r = runner.invoke(app, ["outliers", "-l", str(root), "-k", "2", "--top", "1", "--reasons", "0", "--json"])
    assert r.exit_code == 0, r.output
    found = json.loads(r.stdout)
    assert len(found) == 1 and found[0]["reasons"] == []


def _tag_rows(out: str) -> list[list[str]]:
    """The table's track rows: a track shows as its path, or as its bare id where no path was looked up."""
    rows = [ln.replace("│", " ").split() for ln in out.splitlines() if "│" in ln]
    return [r for r in rows if r and (r[0].startswith("/music/t") or re.fullmatch(r"t\d{3}", r[0]))]


@pytest.mark.parametrize("show", [0, 1, 3, 50])
def test_tag_table_rows_and_top_scores(root: Path, tmp_path: Path, show: int) -> None:
    labels = tmp_path / "g.txt"
    labels.write_text("jazz\nrock\nblues\n")
    r = runner.invoke(app, ["tag", "-l", str(root), "--labels", str(labels), "--show", str(show)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    tags = Library.open(root).tables()["tags"].to_pylist()
    want = []
    for row in tags[:show]:  # the tracks in the tags table's order, at most --show
        best = max(row[f"tag_{lab}"] for lab in ("jazz", "rock", "blues"))  # the top label's score
        want.append((f"/music/{row['track_id']}.wav", f"{best:.3f}"))
    rows = _tag_rows(r.stdout)
    assert len(rows) == min(show, len(tags))
    for got, (path, score) in zip(rows, want):
        assert got[0] == path and got[-1] == score
    assert r.stdout.splitlines()[0].startswith("g: 3 labels × 7 tracks")
    if show == 0:
        assert len(r.stdout.splitlines()) == 1  # the summary line only, no table


def test_mos_predict_orders_by_impression_and_cuts_at_top(root: Path, tmp_path: Path) -> None:
    ratings = tmp_path / "r.csv"
    ratings.write_text("track_id,impression\n" + "".join(f"t{i:03d},{1 + (i % 3) * 1.5}\n" for i in range(7)))
    r = runner.invoke(app, ["mos", "train", "-l", str(root), "--ratings", str(ratings), "--epochs", "5",
                            "--head", str(tmp_path / "head.safetensors")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["mos", "predict", "-l", str(root), "--head", str(tmp_path / "head.safetensors"),
                            "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    stored = Library.open(root).tables()["mos"].to_pylist()
    want = sorted(({"track_id": s["track_id"], "mos_impression": s["mos_impression"], "mos_alignment": None}
                   for s in stored), key=lambda x: (-x["mos_impression"], x["track_id"]))
    assert [x["track_id"] for x in rows] == [x["track_id"] for x in want]
    assert all(a["mos_alignment"] is None and abs(a["mos_impression"] - b["mos_impression"]) < 1e-6
               for a, b in zip(rows, want))
    for top in (0, 2):
        t = runner.invoke(app, ["mos", "predict", "-l", str(root), "--head", str(tmp_path / "head.safetensors"),
                                "--top", str(top)], env={"COLUMNS": "200"})
        assert t.exit_code == 0, t.output
        shown = [ln.replace("│", " ").split() for ln in t.stdout.splitlines() if "/music/t" in ln]
        assert [s[-1] for s in shown] == [f"/music/{x['track_id']}.wav" for x in want[:top]]
        assert all(s[0] == f"{x['mos_impression']:.2f}" and s[1] == "-" for s, x in zip(shown, want))
