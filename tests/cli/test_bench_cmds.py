"""CLI: `songseek bench query-speed` and `bench index-speed` through typer's CliRunner, at tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from songseek.cli import bench_cmds
from songseek.cli.main import app

runner = CliRunner()


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_bench_group_lists_speed_and_other_benchmarks() -> None:
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("query-speed", "index-speed"):
        assert name in result.output


def test_every_bench_subcommand_is_registered() -> None:
    """The bench modules are imported, not looked up by name: a broken one fails loudly at start-up instead
    of its commands silently disappearing."""
    names = {c.name for c in bench_cmds.bench_app.registered_commands}
    assert {"query-speed", "index-speed", "retrieval", "planted", "tagging", "anomaly", "mos"} <= names


def test_query_speed_json_two_sizes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "query-speed", "--frames", "3000", "--frames", "5000", "--dim", "32",
                                 "--queries", "8", "--candidates", "20", "-k", "5", "--work", str(tmp_path),
                                 "--index-factory", "IVF16,SQfp16", "--nprobe", "4", "--json"])
    assert result.exit_code == 0, result.output
    reports = _json_lines(result.output)
    assert [r["frames"] for r in reports] == [3000, 5000]
    for r in reports:
        assert r["index"] == "IVF16,SQfp16" and r["nprobe"] == 4 and r["dim"] == 32 and r["queries"] == 8
        names = [lat["name"] for lat in r["latencies"]]
        assert names == ["baseline", "faiss", "candidates", "fusion", "query", "exact"]
        assert all(lat["p95_ms"] >= lat["p50_ms"] > 0 for lat in r["latencies"])
        for key in ("identical", "same_set", "overlap"):
            assert 0.0 <= r["agreement"][key] <= 1.0
        assert r["agreement"]["identical"] <= r["agreement"]["same_set"] <= 1.0
        assert 0.0 <= r["frame_recall_at_100"] <= 1.0
    # the libraries stay under --work for the next run
    assert len(list(tmp_path.glob("synth-*/index-IVF16_SQfp16"))) == 2


def test_query_speed_table_on_an_existing_library(tmp_path: Path) -> None:
    from songseek.benchmarks.synthetic import SyntheticSpec, cached_library

    root = cached_library(SyntheticSpec(n_frames=2000, dim=16, n_clusters=8), tmp_path, "Flat")
    result = runner.invoke(app, ["bench", "query-speed", "--library", str(root), "--queries", "5",
                                 "--candidates", "10"])
    assert result.exit_code == 0, result.output
    for word in ("baseline", "faiss", "fusion", "exact", "identical 1.000", "2000 frames"):
        assert word in result.output
    # before: "Flat (nprobe 1)", while `info` says nprobe does not apply to Flat
    assert "Flat (exact)" in result.output and "nprobe" not in result.output


def test_query_speed_with_the_users_own_queries(tmp_path: Path) -> None:
    from tests.analysis_helpers import build_library

    rng = np.random.default_rng(0)
    root = build_library(tmp_path / "lib", [rng.standard_normal((6, 32)) for _ in range(40)])  # fake encoder
    texts = tmp_path / "queries.txt"
    texts.write_text("slow sad piano\n\nstring crescendo\njazz trumpet\n", encoding="utf-8")
    vecs = tmp_path / "queries.npy"
    np.save(vecs, rng.standard_normal((5, 32)).astype(np.float32))
    for path, n in ((texts, 3), (vecs, 5)):
        result = runner.invoke(app, ["bench", "query-speed", "--library", str(root), "--query-file", str(path),
                                     "--candidates", "10", "--json"])
        assert result.exit_code == 0, result.output
        assert _json_lines(result.output)[0]["queries"] == n
    result = runner.invoke(app, ["bench", "query-speed", "--query-file", str(texts), "--work", str(tmp_path)])
    assert result.exit_code != 0 and "--query-file needs --library" in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    result = runner.invoke(app, ["bench", "query-speed", "--library", str(root), "--query-file", str(empty)])
    assert result.exit_code == 2 and "no queries in the file" in result.output


def test_query_speed_rejects_bad_sizes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "query-speed", "--frames", "0", "--work", str(tmp_path)])
    assert result.exit_code != 0 and "must be positive" in result.output


def test_index_speed_json(tmp_path: Path) -> None:
    import soundfile as sf

    src = tmp_path / "audio"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(src / f"f{i}.wav", 0.1 * rng.standard_normal(16000 * 5).astype(np.float32), 16000)
    result = runner.invoke(app, ["bench", "index-speed", str(src), "--encoder", "fake", "--window", "2",
                                 "--batch-size", "2", "--json", "--work", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    r = _json_lines(result.output)[0]
    assert r["files"] == 2 and r["windows"] == 6 and r["encoder"] == "fake"  # 5 s → 2 full + 1 tail each
    assert r["ratio"] == pytest.approx(r["end_to_end_windows_per_s"] / r["model_only_windows_per_s"])
    assert r["pipeline_batches"] >= 3


def test_index_speed_table_and_missing_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "index-speed", str(tmp_path / "nope"), "--encoder", "fake"])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_bench_retrieval_on_fewer_tracks_than_k_says_r_at_k_is_full_by_construction(tmp_path: Path) -> None:
    """Before: `bench retrieval --dataset` on 3 tracks reported R@5 ... R@100 = 100.00 with no word on why."""
    sr = 16000
    rows = []
    for i, freq in enumerate((200, 700, 2500)):
        t = np.arange(int(6 * sr)) / sr
        sf.write(tmp_path / f"s{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
        rows.append({"path": f"s{i}.wav", "captions": [f"tone number {i}"]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["bench", "retrieval", "--dataset", str(manifest), "--encoder", "fake", "--window", "3",
                              "--rerank", "mean", "--report", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    for direction, what in (("text_to_audio", "tracks"), ("audio_to_text", "captions")):
        assert (f"note: {direction}: R@5, R@10, R@20, R@100: R@K with K ≥ the number of {what} (3) is 100 % by "
                "construction") in res.stderr
    assert "R@K with K ≥ the number of tracks (3) is 100 % by construction" in (tmp_path / "report" / "report.md"
                                                                                ).read_text()
