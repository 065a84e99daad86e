"""The stored duplicate groups after the library changed: when the file a group keeps is removed from the
library, `--where "dup_keep IS NOT FALSE"` (hide every copy but the kept one) must not hide the copies left,
and the removed track's row is no longer seen."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.query.filters import filter_track_ids
from songseek.engine.query.search import Library
from tests.audio_helpers import sweep, write_audio

runner = CliRunner()


def index(music: Path, lib: Path) -> None:
    res = runner.invoke(app, ["index", str(music), "--library", str(lib), "--encoder", "demo"])
    assert res.exit_code == 0, res.output


def test_removing_the_kept_file_leaves_its_copies_visible(tmp_path: Path) -> None:
    music, lib = tmp_path / "music", tmp_path / "lib"
    music.mkdir()
    rng = np.random.default_rng(3)
    sr = 16000
    base = sweep(40.0, sr, 150.0, 3000.0) + 0.05 * rng.standard_normal(40 * sr).astype(np.float32)
    write_audio(music / "a.wav", base, sr)
    shutil.copyfile(music / "a.wav", music / "a_copy.wav")  # the same recording at two paths
    write_audio(music / "other.wav", sweep(40.0, sr, 2500.0, 200.0), sr)
    index(music, lib)
    res = runner.invoke(app, ["duplicates", "--library", str(lib)])
    assert res.exit_code == 0, res.output

    before = Library.open(lib)
    dup = before.extra_tables["duplicates"].to_pylist()
    paths = dict(zip(before.tracks.column("track_id").to_pylist(), before.tracks.column("path").to_pylist()))
    assert len(dup) == 2 and sorted(Path(paths[r["track_id"]]).name for r in dup) == ["a.wav", "a_copy.wav"]
    kept = next(r["track_id"] for r in dup if r["dup_keep"])
    left = next(r["track_id"] for r in dup if not r["dup_keep"])
    assert set(filter_track_ids(before.tables(), "dup_keep IS NOT FALSE").tolist()) == set(paths) - {left}

    Path(paths[kept]).unlink()
    index(music, lib)
    after = Library.open(lib)
    assert kept not in after.tracks.column("track_id").to_pylist()
    shown = set(filter_track_ids(after.tables(), "dup_keep IS NOT FALSE").tolist())
    assert shown == set(after.tracks.column("track_id").to_pylist())  # the copy left is not hidden
    assert kept not in after.extra_tables["duplicates"].column("track_id").to_pylist()
