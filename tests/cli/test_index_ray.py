"""The --ray contract: `index SRC --library LIB --ray local` gives the `info --json` tracks and frames of a plain
`index`, and `search TEXT --json` the same track order and segments (the session's Ray is used as is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from tests.indexers.ray_helpers import make_music

pytestmark = [pytest.mark.filterwarnings("ignore:.*RANDOM weights"), pytest.mark.usefixtures("ray_cluster")]
runner = CliRunner()


def run(*args: str) -> Any:
    """The command's JSON output (an object for index and info, a list of hits for search)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return json.loads(result.stdout)


def test_index_on_ray_matches_a_plain_index_through_the_cli(tmp_path: Path) -> None:
    music = tmp_path / "music"
    make_music(music, [12.0, 25.0, 4.0, 31.0], seed=3)
    (music / "broken.mp3").write_text("not audio")
    common = ["--encoder", "fake", "--window", "5", "--hop", "2.5", "--json"]
    plain = run("index", str(music), "--library", str(tmp_path / "plain"), *common)
    on_ray = run("index", str(music), "--library", str(tmp_path / "ray"), *common, "--ray", "local",
                 "--ray-workers", "1")
    assert isinstance(plain, dict) and isinstance(on_ray, dict)
    keys = ("added", "failed", "windows", "unchanged")
    assert [on_ray[k] for k in keys] == [plain[k] for k in keys] == [4, 1, plain["windows"], 0]
    info = {name: run("info", "--library", str(tmp_path / name), "--json") for name in ("plain", "ray")}
    assert (info["ray"]["tracks"], info["ray"]["frames"]) == (info["plain"]["tracks"], info["plain"]["frames"])
    assert info["ray"]["frames"] == plain["windows"]
    for text in ("low hum", "bright noisy tone", "a long quiet piece"):
        hits = {name: run("search", text, "--library", str(tmp_path / name), "-k", "4", "--json")
                for name in ("plain", "ray")}
        assert len(hits["plain"]) == 4
        assert [(h["path"], h["start_s"], h["end_s"]) for h in hits["ray"]] == \
               [(h["path"], h["start_s"], h["end_s"]) for h in hits["plain"]]
