"""`songseek mos train` with ratings that leave too few tracks: the refusal comes with where the rows went
(rows that matched no track, rows averaged into one track), not a bare "got 1"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from songseek.cli.main import app
from tests.analysis_helpers import build_library

runner = CliRunner()


def library(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    return build_library(tmp_path / "lib", [rng.standard_normal((2, 32)).astype(np.float32) for _ in range(4)])


def train(lib: Path, csv_text: str, tmp_path: Path) -> tuple[int, str]:
    ratings = tmp_path / "ratings.csv"
    ratings.write_text(csv_text)
    res = runner.invoke(app, ["mos", "train", "--library", str(lib), "--ratings", str(ratings),
                              "--head", str(tmp_path / "head.safetensors"), "--optimizer", "adam", "--epochs", "5"])
    return res.exit_code, res.stderr


def test_an_unmatched_row_is_reported_when_too_few_tracks_are_left(tmp_path: Path) -> None:
    code, err = train(library(tmp_path), "track_id,impression\nnot-a-track,3\nt000,4\n", tmp_path)
    assert code == 2
    assert "1 of 2 rows matched no track" in err and "not-a-track" in err
    assert "at least 2 rated tracks, got 1" in err


def test_rows_averaged_into_one_track_are_reported_when_too_few_tracks_are_left(tmp_path: Path) -> None:
    code, err = train(library(tmp_path), "track_id,impression\nt001,2\nt001,4\nt001,3\n", tmp_path)
    assert code == 2
    assert "2 rows repeated a track" in err and "got 1" in err


def test_enough_tracks_still_train_and_report_the_unmatched_row(tmp_path: Path) -> None:
    code, err = train(library(tmp_path), "track_id,impression\nt000,1\nt001,2\nt002,4\nnope,3\n", tmp_path)
    assert code == 0, err
    assert err.count("1 of 4 rows matched no track") == 1
    assert (tmp_path / "head.safetensors").is_file()
