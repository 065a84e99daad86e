"""`songseek bench rerank`: every setting measured on the library's own queries; --save makes the best the
library's default for every search; `info` shows it; a damaged stored value is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from songseek.benchmarks.rerank_tune import SETTINGS
from songseek.cli.main import app
from songseek.engine.errors import LibraryError
from songseek.engine.query.fusion import DEFAULT_RERANK, RerankSettings
from songseek.engine.query.search import Library
from songseek.engine.storage.manifest import read_manifest, write_manifest
from tests.library_helpers import vector_table

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def library_and_queries(tmp_path: Path) -> tuple[Path, Path]:
    table = vector_table(30, 16, seed=6, min_frames=3, max_frames=20)
    pq.write_table(table, tmp_path / "v.parquet")
    lib = tmp_path / "lib"
    code, _, err = run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))
    assert code == 0, err
    rng = np.random.default_rng(0)
    ids = np.asarray(table.column("track_id").to_pylist())
    emb = np.asarray(table.column("embedding").to_pylist())
    lines = []
    for i, t in enumerate(sorted(set(ids.tolist()))[:20]):  # a noisy copy of one window of each track
        v = emb[np.flatnonzero(ids == t)[i % 3]] + rng.normal(0, 1.0, 16)
        lines.append(json.dumps({"id": f"q{i}", "vector": v.tolist(), "relevant": t}))
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    return lib, tmp_path / "q.jsonl"


def info(lib: Path) -> dict[str, object]:
    code, out, err = run("info", "--library", str(lib), "--json")
    assert code == 0, err
    return json.loads(out)


def test_bench_rerank_measures_every_setting_and_save_makes_the_best_the_default(
        library_and_queries: tuple[Path, Path]) -> None:
    lib, queries = library_and_queries
    before = info(lib)["rerank"]
    assert isinstance(before, dict) and before["rerank"] == DEFAULT_RERANK and before["saved"] is False
    code, out, err = run("bench", "rerank", "--library", str(lib), "--queries", str(queries), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert list(report["settings"]) == [label for label, _, _ in SETTINGS] and report["saved"] is False
    best = report["settings"][report["best"]]
    r10 = [s["metrics"]["R@10"] for s in report["settings"].values()]
    assert best["metrics"]["R@10"] == max(r10)
    assert read_manifest(lib).rerank == {}  # not saved without --save

    code, out, err = run("bench", "rerank", "--library", str(lib), "--queries", str(queries), "--save", "--json")
    assert code == 0, err
    saved = RerankSettings.from_json({"rerank": best["rerank"], "params": best["params"]})
    shown = info(lib)["rerank"]
    assert isinstance(shown, dict) and shown["saved"] is True and shown["rerank"] == saved.mode
    assert Library.open(lib).rerank_settings() == saved
    # every search without its own --rerank uses the saved mode and parameters
    q = np.random.default_rng(3).standard_normal(16).astype(np.float32)
    opened = Library.open(lib)
    default = opened.search(vector=q, k=5)
    explicit = opened.search(vector=q, k=5, rerank=saved.mode, fusion=saved.params)
    assert [(h.track_id, h.score) for h in default] == [(h.track_id, h.score) for h in explicit]


def test_a_damaged_stored_rerank_is_one_clear_library_error(library_and_queries: tuple[Path, Path]) -> None:
    lib, _ = library_and_queries
    m = read_manifest(lib)
    write_manifest(lib, m.__class__(**{**m.__dict__, "rerank": {"rerank": "median"}}))
    with pytest.raises(LibraryError, match="damaged rerank settings.*mode must be one of"):
        Library.open(lib).search(vector=np.ones(16, np.float32), k=3)


def fake_text_to_audio(with_spans: bool):  # type: ignore[no-untyped-def]
    """A stand-in for runner.text_to_audio: max ties auto on R@10 and leads on mAP@10 but has worse segments
    (the audit's 80 demo section queries); every other setting ranks worse."""
    from songseek.benchmarks.report import ModeResult

    def fake(lib, vectors, relevant, modes, fusion, *args, **kwargs):  # type: ignore[no-untyped-def]
        (mode,) = modes
        m = {"auto": {"R@10": 1.0, "mAP@10": 0.90, "R@1": 0.8, "IoU>=0.5": 0.625},
             "max": {"R@10": 1.0, "mAP@10": 0.91, "R@1": 0.8, "IoU>=0.5": 0.125}}.get(
            mode, {"R@10": 0.5, "mAP@10": 0.4, "R@1": 0.3, "IoU>=0.5": 0.62})
        if not with_spans:
            m = {k: v for k, v in m.items() if k != "IoU>=0.5"}
        return {mode: ModeResult(m, n_queries=len(vectors), n_candidates=lib.n_tracks)}, {mode: 0}
    return fake


def test_save_never_keeps_a_setting_that_ties_on_ranking_but_loses_segment_quality(
        library_and_queries: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    lib, queries = library_and_queries
    monkeypatch.setattr("songseek.benchmarks.rerank_tune.text_to_audio", fake_text_to_audio(True))
    code, out, err = run("bench", "rerank", "--library", str(lib), "--queries", str(queries), "--save")
    assert code == 0, err
    assert "best: auto" in out
    assert "x max: not eligible, segment IoU>=0.5 12.5% is more than 1 point(s) below auto's 62.5%" in out
    assert Library.open(lib).rerank_settings().mode == "auto"
    code, out, err = run("bench", "rerank", "--library", str(lib), "--queries", str(queries), "--json")
    report = json.loads(out)
    assert report["best"] == "auto" and list(report["excluded"]) == ["max"] and report["segments_measured"]


def test_without_spans_the_choice_is_on_ranking_only_and_says_so(
        library_and_queries: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    lib, queries = library_and_queries
    monkeypatch.setattr("songseek.benchmarks.rerank_tune.text_to_audio", fake_text_to_audio(False))
    code, out, err = run("bench", "rerank", "--library", str(lib), "--queries", str(queries))
    assert code == 0, err
    assert "best: max" in out and "segment quality not measured" in out


def test_with_real_spans_the_best_keeps_the_defaults_segment_quality(
        library_and_queries: tuple[Path, Path], tmp_path: Path) -> None:
    lib, queries = library_and_queries
    lines = [json.loads(x) for x in queries.read_text().splitlines()]
    for i, q in enumerate(lines):  # spans of one to three 10 s windows
        q["start_s"], q["end_s"] = 0.0, 10.0 * (1 + i % 3)
    spanned = tmp_path / "spans.jsonl"
    spanned.write_text("\n".join(json.dumps(q) for q in lines) + "\n")
    code, out, err = run("bench", "rerank", "--library", str(lib), "--queries", str(spanned), "--json")
    assert code == 0, err
    report = json.loads(out)
    iou = {label: s["metrics"]["IoU>=0.5"] for label, s in report["settings"].items()}
    assert report["segments_measured"] and iou[report["best"]] >= iou["auto"] - 0.01
    assert set(report["excluded"]) == {label for label, v in iou.items() if v < iou["auto"] - 0.01}


def test_bench_rerank_names_relevant_ids_the_library_lacks(library_and_queries: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    lib, queries = library_and_queries
    rows = [json.loads(line) for line in queries.read_text().splitlines()]
    rows[0]["relevant"] = [rows[0]["relevant"], "nosuch"]
    (tmp_path / "typo.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, _, err = run("bench", "rerank", "--library", str(lib), "--queries", str(tmp_path / "typo.jsonl"))
    assert code == 0, err
    assert f"note: 1 relevant id(s) of the queries are not tracks of {lib} (first: nosuch)" in err
