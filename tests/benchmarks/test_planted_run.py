"""benchmarks/planted_run.py: the planted benchmark through the engine equals the in-memory evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.benchmarks.planted import evaluate_planted_arrays, make_planted
from songseek.benchmarks.planted_run import planted_table, run_planted, track_id
from songseek.engine.errors import UsageError

MODES = ("none", "mean", "max", "fusion")
KEYS = {"R@1", "R@5", "R@10", "R@20", "R@100", "mAP@10", "MedR", "MeanR"}


def test_engine_run_structure_and_reuse(tmp_path: Path) -> None:
    lib = tmp_path / "p.songseek"
    run = run_planted(30, seed=2, dim=16, modes=MODES, library_path=lib)
    assert set(run.results) == {"whole_track", "section", "section_long"}
    ps = make_planted(30, dim=16, seed=2)
    assert run.settings["n_queries"]["whole_track"] == 30 == run.results["whole_track"]["fusion"].n_queries
    assert run.settings["n_queries"]["section"] == int(ps.is_section.sum())
    for direction, modes in run.results.items():
        assert list(modes) == list(MODES)
        for r in modes.values():
            assert KEYS <= set(r.metrics)
            assert ("IoU>=0.5" in r.metrics) == (direction != "whole_track")
            assert all(0.0 <= r.metrics[k] <= 1.0 for k in r.metrics if k.startswith(("R@", "mAP", "IoU", "mIoU")))
    # through the engine == the array evaluation of the same planted set (ties aside: none here)
    ref = evaluate_planted_arrays(ps)
    for mode in MODES:
        got = np.empty(len(ps.query_track), np.int64)
        got[~ps.is_section] = run.results["whole_track"][mode].ranks  # type: ignore[assignment]
        got[ps.is_section] = run.results["section"][mode].ranks  # type: ignore[assignment]
        np.testing.assert_array_equal(got, ref[mode].ranks)
        sec = ps.is_section
        assert run.results["section"][mode].metrics["IoU>=0.5"] == pytest.approx(np.mean(ref[mode].iou[sec] >= 0.5))
    diff = run.to_json()["fusion_vs_mean"]["section"]["R@1"]
    assert diff["diff"] == pytest.approx(diff["a"] - diff["b"])
    assert diff["a"] == run.results["section"]["fusion"].metrics["R@1"]
    out = run.to_json()
    assert set(out) == {"whole_track", "section", "section_long", "fusion_vs_mean", "settings"}
    assert out["settings"]["encoder"] == "precomputed" and out["settings"]["method"] == "engine"
    # the library is reused for the same spec and refused for another
    again = run_planted(30, seed=2, dim=16, modes=("max",), library_path=lib)
    assert again.settings["library_reused"] is True
    assert again.results["section"]["max"].metrics == run.results["section"]["max"].metrics
    with pytest.raises(UsageError, match="not this planted set"):
        run_planted(30, seed=3, dim=16, modes=("max",), library_path=lib)


def test_arrays_method_agrees_with_engine_on_every_query(tmp_path: Path) -> None:
    run = run_planted(25, seed=4, dim=16, modes=MODES, library_path=tmp_path / "p", method="arrays",
                      engine_check_queries=10_000)
    check = run.settings["engine_check"]
    assert check["queries"] == run.settings["n_queries"]["whole_track"] + run.settings["n_queries"]["section"]
    assert check["rank_mismatches"] == {m: 0 for m in MODES}
    assert check["segment_mismatches"] == {m: 0 for m in MODES}
    with pytest.raises(UsageError, match="method must be"):
        run_planted(25, seed=4, dim=16, library_path=tmp_path / "p", method="fast")


def test_noise_free_sections_are_found_first(tmp_path: Path) -> None:
    """With all noise at zero a section query equals its event's windows (cosine 1, nowhere else): max
    pooling and the first stage rank its track first, and max's one-window segment lies inside it."""
    run = run_planted(40, seed=1, dim=32, modes=MODES, library_path=tmp_path / "p", noise=0.0, method="arrays",
                      engine_check_queries=20)
    assert run.settings["engine_check"]["rank_mismatches"]["max"] == 0
    for mode in ("max", "none"):
        assert run.results["section"][mode].metrics["R@1"] == 1.0
    # all windows of the event tie at cosine 1: max's segment is its first window, IoU = 1 / section length
    ps = make_planted(40, dim=32, seed=1, noise=0.0)
    sec = ps.query_section[ps.is_section]
    want = np.mean(1.0 / (ps.sec_last[sec] - ps.sec_first[sec] + 1))
    assert run.results["section"]["max"].metrics["mIoU"] == pytest.approx(want)


def test_planted_table_layout() -> None:
    ps = make_planted(5, dim=8, seed=0)
    t = planted_table(ps)
    assert t.num_rows == ps.frames.shape[0]
    ids = t.column("track_id").to_pylist()
    assert ids[0] == track_id(0) and ids[-1] == track_id(4)
    first = int(ps.track_start[1])
    assert t.column("start_s")[first].as_py() == 0.0 and t.column("end_s")[first].as_py() == ps.hop_s
    np.testing.assert_array_equal(np.asarray(t.column("embedding")[first].as_py(), np.float32), ps.frames[first])
