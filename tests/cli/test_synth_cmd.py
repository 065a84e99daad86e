"""`songseek synth` through typer's CliRunner."""

from __future__ import annotations

import csv
import json

import typer
from typer.testing import CliRunner

from songseek.cli import synth_cmd

# Seed 12's first two tracks are under a minute each: quick to render.
SEED = "12"


def _app() -> typer.Typer:
    app = typer.Typer()
    synth_cmd.register(app)

    @app.callback()
    def _root() -> None:  # keep `synth` a subcommand
        pass

    return app


def test_synth_writes_manifests_and_json(tmp_path) -> None:
    out = tmp_path / "set"
    res = CliRunner().invoke(_app(), ["synth", str(out), "--tracks", "2", "--seed", SEED, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["tracks"] == 2 and doc["seed"] == 12 and doc["generator_version"] == "synth-v1"
    with open(out / "tracks.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [list(r) for r in rows] == [["path", "caption"]] * 2
    assert all((out / r["path"]).is_file() for r in rows)
    with open(out / "sections.csv", newline="") as fh:
        sections = list(csv.DictReader(fh))
    assert len(sections) == doc["sections"] and list(sections[0]) == ["path", "start_s", "end_s", "caption"]


def test_same_seed_same_bytes_and_human_summary(tmp_path) -> None:
    runner = CliRunner()
    for name in ("a", "b"):
        res = runner.invoke(_app(), ["synth", str(tmp_path / name), "--tracks", "1", "--seed", SEED])
        assert res.exit_code == 0, res.output
        assert "wrote 1 tracks" in res.stdout and "x real time" in res.stdout
    for rel in ("tracks.csv", "sections.csv", "audio/synth-12-00000.wav"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_bad_arguments_exit_2_with_one_line(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(_app(), ["synth", str(tmp_path / "x"), "--tracks", "0"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --tracks must be at least 1")
    res = runner.invoke(_app(), ["synth", str(tmp_path / "x"), "--format", "mp4"])
    assert res.exit_code == 2 and "unknown audio format" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_help_mentions_the_manifests() -> None:
    res = CliRunner().invoke(_app(), ["synth", "--help"])
    assert res.exit_code == 0 and "sections.csv" in res.stdout
