"""`songseek repair` behaviour test_repair.py leaves open: the --check --json shape (path and problems, exit
1 on damage) and --wait, which waits for the writer lock instead of refusing."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.writer import acquire_lock
from tests.cli.test_repair import build

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    if "torch" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torch", None)  # the fake encoder needs none


def test_check_json_names_the_library_and_each_problem(tmp_path: Path) -> None:
    _, lib = build(tmp_path, n=2)
    result = runner.invoke(app, ["repair", "--library", str(lib), "--check", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == {"path": str(lib), "problems": []}
    shard = lib / read_manifest(lib).frame_shards[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = runner.invoke(app, ["repair", "--library", str(lib), "--check", "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and set(report) == {"path", "problems"} and report["path"] == str(lib)
    assert len(report["problems"]) >= 1 and any(shard.name in p for p in report["problems"]), report
    text = runner.invoke(app, ["repair", "--library", str(lib), "--check"])  # the same problems, as lines
    damaged = [ln[len("damaged: "):] for ln in text.stdout.splitlines() if ln.startswith("damaged: ")]
    assert text.exit_code == 1 and damaged == report["problems"]
    assert f"{len(damaged)} problem(s); run `songseek repair --library {lib}`" in text.stdout
    fixed = runner.invoke(app, ["repair", "--library", str(lib)])  # problems and actions on stderr, summary out
    assert fixed.exit_code == 0, fixed.output
    err = fixed.stderr.splitlines()
    assert [ln[len("damaged: "):] for ln in err if ln.startswith("damaged: ")] == report["problems"]
    assert any(ln.startswith("repaired: ") for ln in err)
    assert len(fixed.stdout.strip().splitlines()) == 1
    assert not fixed.stdout.startswith(("damaged", "repaired"))


def test_wait_waits_for_the_writer_instead_of_refusing(tmp_path: Path) -> None:
    _, lib = build(tmp_path, n=2)
    fd = acquire_lock(lib)
    refused = runner.invoke(app, ["repair", "--library", str(lib)])
    assert refused.exit_code == 2 and "is being written by songseek pid" in refused.output
    release = threading.Timer(0.5, os.close, args=(fd,))  # the other writer finishes a moment later
    release.start()
    try:
        result = runner.invoke(app, ["repair", "--library", str(lib), "--wait", "--json"])
    finally:
        release.join()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["problems"] == []
