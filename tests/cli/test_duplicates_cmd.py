"""`songseek duplicates --json` (the contract), --not-duplicate, info, search --collapse-duplicates."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from songseek.cli.main import app
from tests.analysis_helpers import build_library
from tests.engine.test_duplicates import _tracks

runner = CliRunner()


def test_duplicates_json_contract_marks_and_info(tmp_path: Path) -> None:
    root = build_library(tmp_path / "lib", _tracks())
    res = runner.invoke(app, ["duplicates", "--library", str(root), "--json"])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.stdout)
    assert isinstance(groups, list) and len(groups) == 1
    g = groups[0]
    assert g["level"] in (1, 2, 3)
    assert sorted(m["track_id"] for m in g["members"]) == ["t000", "t001", "t002"]
    assert all(m["path"] == f"/music/{m['track_id']}.wav" for m in g["members"])
    assert {"offset_s", "span_a", "span_b", "window_agreement", "duration_ratio"} <= set(g["pairs"][0])
    info = json.loads(runner.invoke(app, ["info", "--library", str(root), "--json"]).stdout)
    assert info["duplicates"]["groups"] == 1 and info["duplicates"]["tracks"] == 3
    res = runner.invoke(app, ["duplicates", "--library", str(root), "--json", "--not-duplicate", "t000", "t002"])
    assert sorted(m["track_id"] for m in json.loads(res.stdout)[0]["members"]) == ["t000", "t001"]
    again = json.loads(runner.invoke(app, ["duplicates", "--library", str(root), "--json"]).stdout)
    assert sorted(m["track_id"] for m in again[0]["members"]) == ["t000", "t001"]
    bad = runner.invoke(app, ["duplicates", "--library", str(root), "--not-duplicate", "t000", "zz"])
    assert bad.exit_code == 2 and "no track 'zz'" in bad.output
    assert runner.invoke(app, ["duplicates", "--library", str(root), "--max-level", "4"]).exit_code == 2
