"""benchmarks/report.py behaviour that a mutation sweep found unpinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from songseek.benchmarks.report import ModeResult, jsonable, metric_unit, read_report, write_report
from songseek.engine.errors import UsageError


def test_a_bool_metric_is_refused_not_read_as_one() -> None:
    with pytest.raises(UsageError, match="metric 'R@1' must be a number, got bool"):
        ModeResult.from_mapping({"R@1": True})


def test_sets_are_written_sorted() -> None:
    labels = {f"tag{i}" for i in (5, 1, 12, 3, 40, 2)}
    assert jsonable(labels) == sorted(labels)
    assert jsonable({"k": frozenset({3, 1, 2})}) == {"k": [1, 2, 3]}


def test_report_settings_round_trip(tmp_path: Path) -> None:
    write_report(tmp_path, {"d": {"m": {"R@1": 0.5}}}, {"tags": {"b", "a", "c"}}, plots=False)
    assert read_report(tmp_path)["settings"] == {"tags": ["a", "b", "c"]}


def test_non_finite_floats_in_settings_become_null(tmp_path: Path) -> None:
    settings = {"tau": float("nan"), "nested": {"x": [1.5, float("inf")]}, "n": 3}
    assert jsonable(settings) == {"tau": None, "nested": {"x": [1.5, None]}, "n": 3}
    write_report(tmp_path, {"d": {"m": {"R@1": 0.5}}}, settings, plots=False)
    assert read_report(tmp_path)["settings"] == {"tau": None, "nested": {"x": [1.5, None]}, "n": 3}


@pytest.mark.parametrize(
    "metric, unit",
    [("R@10", "%"), ("mAP@10", "%"), ("R@1&IoU>=0.5", "%"), ("mIoU", "%"), ("IoU@0.5", "%"), ("MedR", "rank"),
     ("R@10_old", "as given"), ("mAP@10x", "as given"), ("MedR2", "as given"), ("xR@1", "as given"),
     ("speed", "as given")],
)
def test_metric_unit_matches_whole_names_only(metric: str, unit: str) -> None:
    assert metric_unit(metric) == unit


def _md(tmp_path: Path, results: dict, settings: dict | None = None) -> str:  # type: ignore[type-arg]
    write_report(tmp_path, results, settings or {}, plots=False)
    return (tmp_path / "report.md").read_text()


def test_markdown_columns_notes_and_escapes(tmp_path: Path) -> None:
    results = {
        "text_to_audio": {
            "a|b": ModeResult({"R@1": 0.5, "R@10": 1.0, "zeta": 2.0, "alpha": 1.0}, n_queries=4, n_candidates=10,
                              ci={"R@1": (0.25, 0.75)}),
            "small": ModeResult({"R@1": 0.5, "R@5": 1.0}, n_queries=4, n_candidates=4),
        }
    }
    md = _md(tmp_path, results, {"empty": {}, "note": "x|y", "flag": True, "none": None})
    # standard columns first, then the others sorted by name
    assert "| mode | queries | candidates | R@1 (%) | R@5 (%) | R@10 (%) | alpha (as given) | zeta (as given) |" in md
    assert "| a\\|b | 4 | 10 | 50.00 | – | 100.00 | 1 | 2 |" in md  # a '|' in a name is escaped
    # a missing interval shows –
    assert "| a\\|b | 25.00–75.00 | – | – | – | – |" in md
    # the largest candidate count (10) decides: R@10 (K = 10 >= 10) is saturated, R@5 is not
    assert "_Note: R@10: R@K with K ≥ the number of tracks (10) is 100 % by construction._" in md
    # an empty mapping is one row, not dropped; a '|' in a value is escaped
    assert "| empty | {} |" in md and "| note | x\\|y |" in md
    assert "| flag | true |" in md and "| none | null |" in md  # as report.json writes them


def test_plot_links_go_under_their_own_direction(tmp_path: Path) -> None:
    results = {"text_to_audio": {"m": {"R@1": 0.5, "R@5": 0.75, "ranks": [1, 2, 7, 1]}},
               "audio_to_text": {"m": {"R@1": 0.25, "R@5": 0.5, "ranks": [3, 1, 9, 2]}}}
    paths = write_report(tmp_path, results, {})
    if len(paths) == 2:
        pytest.skip("matplotlib not installed")
    md = (tmp_path / "report.md").read_text()
    t2a, a2t = md.split("## audio_to_text")[0], md.split("## audio_to_text")[1].split("## Settings")[0]
    assert "recall_at_k_text_to_audio.png" in t2a and "recall_at_k_audio_to_text.png" not in t2a
    assert "recall_at_k_audio_to_text.png" in a2t and "recall_at_k_text_to_audio.png" not in a2t


def test_plot_names_are_slugs_without_edge_dashes(tmp_path: Path) -> None:
    paths = write_report(tmp_path, {"(my) direction!": {"m": {"R@1": 0.5, "R@5": 0.75}}}, {})
    if len(paths) == 2:
        pytest.skip("matplotlib not installed")
    assert [p.name for p in paths[2:]] == ["recall_at_k_my-direction.png"]


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import songseek.benchmarks.report as report

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path / "out", {"d": {"m": {"R@1": 0.5}}}, {}, plots=False)
    assert list((tmp_path / "out").iterdir()) == []
