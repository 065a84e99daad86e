"""Benchmark reports: files written, JSON round-trips, Markdown holds the numbers, PNGs are real PNGs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from songseek.benchmarks.metrics import metrics_ci, per_query_values, retrieval_metrics
from songseek.benchmarks.report import ModeResult, read_report, write_report
from songseek.engine.errors import UsageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_results(seed: int = 0) -> tuple[dict[str, dict[str, object]], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ranks = {
        "faiss": rng.integers(1, 400, size=250),
        "fused": np.minimum(rng.geometric(0.08, size=250), 400),
    }
    results: dict[str, dict[str, object]] = {
        "text_to_audio": {
            "faiss": ModeResult(
                metrics=retrieval_metrics(ranks["faiss"]),
                ranks=ranks["faiss"],
                ci=metrics_ci(per_query_values(ranks["faiss"]), n=200, seed=0),
                n_candidates=400,
            ),
            "fused": {
                **retrieval_metrics(ranks["fused"]),
                "IoU@0.5": 0.4321,
                "ranks": ranks["fused"].tolist(),
                "n_candidates": 400,
            },
        },
        "audio_to_text": {"faiss": {"R@1": 0.259, "R@5": 0.519, "R@10": 0.633, "mAP@10": 0.36, "MedR": 5.0}},
    }
    return results, ranks


def test_write_report_files_json_and_markdown(tmp_path: Path) -> None:
    results, ranks = make_results()
    settings = {
        "dataset": {"name": "musiccaps-eval", "hash": "ab" * 32, "path": tmp_path / "mc.csv"},
        "encoder": "fake",
        "ks": (1, 5, 10, 20, 100),
        "seed": np.int64(0),
        "tau": np.float32(0.5),
    }
    paths = write_report(tmp_path / "out", results, settings)  # type: ignore[arg-type]
    names = [p.name for p in paths]
    assert names[:2] == ["report.json", "report.md"]
    assert "recall_at_k_text_to_audio.png" in names and "rank_hist_text_to_audio.png" in names
    assert "recall_at_k_audio_to_text.png" in names  # from the R@K points
    assert "rank_hist_audio_to_text.png" not in names  # no ranks, no histogram
    for p in paths:
        assert p.is_file()
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == sorted(names)  # no temp files left

    doc = read_report(tmp_path / "out")
    assert doc == json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["settings"] == {
        "dataset": {"name": "musiccaps-eval", "hash": "ab" * 32, "path": str(tmp_path / "mc.csv")},
        "encoder": "fake",
        "ks": [1, 5, 10, 20, 100],
        "seed": 0,
        "tau": 0.5,
    }
    faiss = doc["results"]["text_to_audio"]["faiss"]
    assert faiss["metrics"] == retrieval_metrics(ranks["faiss"])
    assert faiss["ranks"] == ranks["faiss"].tolist()
    assert faiss["n_queries"] == 250 and faiss["n_candidates"] == 400
    assert faiss["ci"]["R@10"][0] <= faiss["metrics"]["R@10"] <= faiss["ci"]["R@10"][1]
    fused = doc["results"]["text_to_audio"]["fused"]
    assert fused["metrics"]["IoU@0.5"] == 0.4321 and fused["ranks"] == ranks["fused"].tolist()
    assert doc["results"]["audio_to_text"]["faiss"]["ranks"] is None
    assert doc["plots"] == names[2:]

    md = (tmp_path / "out" / "report.md").read_text()
    m = retrieval_metrics(ranks["fused"])
    row = next(line for line in md.splitlines() if line.startswith("| fused |"))
    for key in ("R@1", "R@5", "R@10", "R@20", "R@100", "mAP@10"):
        assert f"{100 * m[key]:.2f}" in row, key
    assert f"{m['MedR']:.1f}" in row and "| 43.21 |" in row and "| 250 | 400 |" in row  # IoU in % too
    assert "| faiss | – | – | 25.90 | 51.90 | 63.30 | 36.00 | 5.0 |" in md  # only columns present
    assert ("| mode | queries | candidates | R@1 (%) | R@5 (%) | R@10 (%) | R@20 (%) | R@100 (%) | mAP@10 (%) "
            "| MedR (rank) | MeanR (rank) | IoU@0.5 (%) |") in md
    assert "95 % bootstrap intervals, lo–hi (percentile bootstrap over the queries):" in md
    assert "![recall_at_k_text_to_audio](recall_at_k_text_to_audio.png)" in md
    assert "| dataset.hash | " + "ab" * 32 + " |" in md and "| ks | [1, 5, 10, 20, 100] |" in md


def test_every_markdown_number_has_its_columns_unit(tmp_path: Path) -> None:
    # Fractions (recalls, mAP and every IoU figure) are all shown x100 under "(%)", ranks under "(rank)";
    # a metric the report does not know is printed unconverted and its header says so.
    metrics = {"R@1": 0.125, "mAP@10": 0.2, "MedR": 4.5, "IoU>=0.5": 0.375, "mIoU": 0.3125,
               "R@1&IoU>=0.5": 0.0625, "speed": 12.5}
    ci = {"R@1": (0.1, 0.15), "mIoU": (0.25, 0.5), "MedR": (3.0, 6.0)}
    write_report(tmp_path, {"d": {"m": ModeResult(metrics, ci=ci, n_queries=8)}},
                 {"ci": "95% percentile bootstrap over queries (captions)"}, plots=False)
    md = (tmp_path / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| mode | queries |")).split(" | ")[3:]
    row = next(line for line in md.splitlines() if line.startswith("| m | 8 |")).split(" | ")[3:]
    shown = dict(zip((h.strip(" |") for h in header), (c.strip(" |") for c in row), strict=True))
    want = {}
    for name, value in metrics.items():
        unit = "rank" if name == "MedR" else "as given" if name == "speed" else "%"
        want[f"{name} ({unit})"] = f"{100 * value:.2f}" if unit == "%" else f"{value:.1f}" if unit == "rank" else "12.5"
    assert shown == want
    assert "95 % bootstrap intervals, lo–hi (95% percentile bootstrap over queries (captions)):" in md
    ci_row = next(line for line in md.splitlines() if line.startswith("| m |") and "–" in line and "| 8 |" not in line)
    assert "| 10.00–15.00 |" in ci_row and "| 25.00–50.00 |" in ci_row and "| 3.0–6.0 |" in ci_row
    assert read_report(tmp_path)["results"]["d"]["m"]["metrics"]["mIoU"] == 0.3125  # JSON keeps fractions


def test_pngs_are_valid(tmp_path: Path) -> None:
    results, _ = make_results(1)
    for p in write_report(tmp_path, results, {"x": 1})[2:]:  # type: ignore[arg-type]
        data = p.read_bytes()
        assert data[:8] == PNG_SIGNATURE, p.name
        assert len(data) > 5000, p.name  # a drawn figure, not an empty canvas
        assert data[12:16] == b"IHDR"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (600, 400)


def test_without_matplotlib_plots_are_skipped_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    results, _ = make_results()
    paths = write_report(tmp_path, results, {})  # type: ignore[arg-type]
    assert [p.name for p in paths] == ["report.json", "report.md"]
    assert "matplotlib is not installed" in (tmp_path / "report.md").read_text()
    doc = read_report(tmp_path / "report.json")
    assert doc["plots"] == [] and "matplotlib" in doc["plots_note"]


def test_plots_off_and_nan_metric(tmp_path: Path) -> None:
    paths = write_report(tmp_path, {"d": {"m": {"R@1": float("nan"), "MedR": 3.0}}}, {}, plots=False)
    assert len(paths) == 2
    doc = read_report(tmp_path)
    assert doc["results"]["d"]["m"]["metrics"] == {"R@1": None, "MedR": 3.0}
    assert "| m | – | – | – | 3.0 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    "results, settings, match",
    [
        ({}, {}, "non-empty mapping"),
        ({"d": {}}, {}, "results\\['d'\\]"),
        ({"d": {"m": [1, 2]}}, {}, "ModeResult or a mapping"),
        ({"d": {"m": {"R@1": "high"}}}, {}, "metric 'R@1' must be a number"),
        ({"d": {"m": {"R@1": 0.5}}}, {"model": object()}, "settings.model is a object"),
    ],
)
def test_bad_input_raises(tmp_path: Path, results: dict, settings: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        write_report(tmp_path, results, settings)


def test_read_report_rejects_other_json(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(UsageError, match="not a songseek benchmark report"):
        read_report(tmp_path)
