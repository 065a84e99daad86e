"""The labelled-set scoring of `bench duplicates`, counted by hand on a small example."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from songseek.benchmarks.duplicates import Label, LabelledSetSpec, cache_key, other_piece, score_pairs, truth_level
from songseek.benchmarks.synth.score import PROGRESSIONS, sample_score


def test_score_pairs_counts_levels_false_merges_and_hard_negatives() -> None:
    labels = {"a": Label("A", 0, "base", ""), "a1": Label("A", 1, "mp3", ""), "a2": Label("A", 2, "eq", ""),
              "n": Label("N", 0, "base", "A"), "b": Label("B", 0, "base", "")}
    assert truth_level(labels["a1"], labels["a2"]) == 2 and truth_level(labels["a"], labels["n"]) == 0
    pred = {("a", "a1"): 1, ("a", "a2"): 1, ("a1", "a2"): 2, ("a", "n"): 3}
    r = score_pairs(labels, pred, audio=True, encoder="x", seconds=0.0)
    l1, l2, l3 = r.levels
    assert (l1.predicted, l1.correct, l1.truth, l1.found) == (2, 1, 1, 1)    # a~a2 is a level-2 pair
    assert (l2.predicted, l2.correct, l2.truth, l2.found) == (1, 1, 2, 2)    # a~a2 found closer counts
    assert (l3.predicted, l3.correct) == (1, 0) and math.isnan(l3.recall)
    assert r.false_merges == 1 and r.hard_negative_pairs == 3 and r.hard_negative_merges["3"] == 1


def test_other_piece_keeps_the_setting_and_changes_every_progression() -> None:
    """The hard negative is another piece: same instruments, tempo, key, mode and section layout, but each
    section's chords are another progression of its mode (rotated, moved by scale degrees), sharing at most
    one bar's chord in four with the original at any whole-bar lag (seed 17: a progression with no bar in
    common at lag 0 shared three in four one bar later, and was merged at level 2), so the accompaniment
    plays other notes (before session 5: the same backing under another melody)."""
    for seed in (3, 11, 13, 17):
        for i in range(4):
            score = sample_score(seed, i)
            other = other_piece(score)
            assert other == other_piece(score) and other.seed != score.seed
            assert (other.tempo_bpm, other.key, other.mode) == (score.tempo_bpm, score.key, score.mode)
            assert len(other.sections) == len(score.sections)
            for a, b in zip(score.sections, other.sections):
                assert (a.kind, a.start_s, a.end_s, a.instruments, a.dynamics, a.density, a.fade_out) == (
                    b.kind, b.start_s, b.end_s, b.instruments, b.dynamics, b.density, b.fade_out)
                n = len(a.progression)
                shifts = [a.progression[k:] + a.progression[:k] for k in range(n)]
                assert b.progression not in shifts
                assert any(tuple((d + t) % 7 for d in b.progression) in {q[k:] + q[:k] for k in range(len(q))}
                           for q in PROGRESSIONS[score.mode] for t in range(7))
                assert max(sum(x == y for x, y in zip(p, b.progression)) for p in shifts) <= 1


def test_the_cache_key_records_the_real_recordings_actually_found(tmp_path: Path) -> None:
    """A missing --real-dir (the cwd-relative default run elsewhere) used to key as "real included" (r1):
    a later run with the recordings reused the synthetic-only set. The key now follows the files found."""
    def key(real_dir: Path | None) -> str:
        return cache_key(LabelledSetSpec(synth_tracks=8, real_dir=real_dir, seed=3, max_seconds=75.0))

    assert key(None) == key(tmp_path / "absent") == key(tmp_path) == "g4-s8-r0-seed3-max75"
    (tmp_path / "notes.txt").write_text("not audio")
    assert key(tmp_path) == "g4-s8-r0-seed3-max75"
    for name in ("b.ogg", "a.ogg"):
        (tmp_path / name).write_bytes(b"")
    two = key(tmp_path)
    assert two.startswith("g4-s8-r2-") and two.endswith("-seed3-max75")
    (tmp_path / "c.ogg").write_bytes(b"")
    three = key(tmp_path)
    assert three.startswith("g4-s8-r3-")
    (tmp_path / "c.ogg").unlink()
    assert key(tmp_path) == two
    (tmp_path / "d.ogg").write_bytes(b"")
    assert key(tmp_path).startswith("g4-s8-r3-") and key(tmp_path) != three  # same count, other files


def test_bench_duplicates_says_when_no_real_recordings_are_found(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.cli.main import app

    class Done:
        def table(self) -> str:
            return "table"

    monkeypatch.setattr("songseek.benchmarks.duplicates.run_labelled", lambda *a, **k: Done())
    run = CliRunner().invoke
    res = run(app, ["bench", "duplicates", "--work", str(tmp_path), "--real-dir", str(tmp_path / "absent")])
    assert res.exit_code == 0, res.output
    assert "no real recordings" in res.stderr and str(tmp_path / "absent") in res.stderr
    (tmp_path / "a.ogg").write_bytes(b"")
    for args in (["--real-dir", str(tmp_path)], ["--no-real"]):
        res = run(app, ["bench", "duplicates", "--work", str(tmp_path), *args])
        assert res.exit_code == 0 and "no real recordings" not in res.stderr, res.output
