"""`songseek bench index-build` (cli/bench_scale_cmds.py): --frames parsing, the factory per size, one child
per size in the order given, and its JSON / table output; the children are replaced by a recorder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from songseek.cli.bench_scale_cmds import _sizes
from songseek.cli.main import app
from songseek.engine.errors import UsageError

runner = CliRunner()


@pytest.mark.parametrize("text, sizes", [("1000", [1000]), ("1_000,2000", [1000, 2000]), ("5, 3 ,", [5, 3]),
                                         (" 7 ,, 8", [7, 8])])
def test_frames_parse_to_counts_in_the_order_given(text: str, sizes: list[int]) -> None:
    assert _sizes(text) == sizes


@pytest.mark.parametrize("text, says", [("", "needs positive"), (",", "needs positive"), ("0", "needs positive"),
                                        ("5,-1", "needs positive"), ("1e6", "comma-separated"),
                                        ("a,b", "comma-separated")])
def test_bad_frames_are_usage_errors(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        _sizes(text)


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple]:
    from songseek.benchmarks import index_build, synthetic

    calls: list[tuple] = []

    def run_in_child(root: Path, n: int, factory: str, reader: str, queries: int, threads: int) -> SimpleNamespace:
        calls.append((root, n, factory, reader, queries, threads))
        return SimpleNamespace(frames=n, factory=factory, train_rows=n // 2, train_s=1.0, add_s=2.0, build_s=3.0,
                               index_mib=4.0, est_index_mib=5.0, rss_base_mib=6.0, rss_peak_mib=7.0,
                               beyond_index_mib=8.0, rss_file_mib=9.0, nprobe=10, query_p50_ms=1.25,
                               recall_at_100=0.5 + n / 1e6, recall_100_at_1000=0.75, load_avg=0.5)

    monkeypatch.setattr(synthetic, "preset_spec", lambda preset, n, dim, seed: ("spec", preset, n, dim, seed))
    monkeypatch.setattr(synthetic, "cached_frames", lambda spec, work: (spec, work))
    monkeypatch.setattr(index_build, "large_factory", lambda n, dim: f"LARGE{n}x{dim}")
    monkeypatch.setattr(index_build, "run_in_child", run_in_child)
    return calls


def test_each_size_runs_once_in_order_with_its_factory(children: list[tuple], tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "index-build", "--frames", "3000,1000", "--dim", "16", "--json",
                              "--work", str(tmp_path), "--seed", "4", "-q", "9", "--threads", "2",
                              "--reader", "mmap"])
    assert res.exit_code == 0, res.output
    root = (("spec", "clustered", 3000, 16, 4), tmp_path)  # one library of the largest size
    assert children == [(root, 3000, "LARGE3000x16", "mmap", 9, 2), (root, 1000, "LARGE1000x16", "mmap", 9, 2)]
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["frames"], r["factory"]) for r in rows] == [(3000, "LARGE3000x16"), (1000, "LARGE1000x16")]
    assert res.stderr == ""  # --json: nothing but the objects
    children.clear()
    res = runner.invoke(app, ["bench", "index-build", "--frames", "1000", "--index-factory", "Flat", "--json",
                              "--work", str(tmp_path)])
    assert res.exit_code == 0 and [c[2] for c in children] == ["Flat"]


def test_the_table_view_has_a_row_per_size(children: list[tuple], tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "index-build", "--frames", "2000,1000", "--dim", "8", "--work",
                              str(tmp_path)], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[0] == "library: 2000 frames × 8, clustered (built on first use, then reused)"
    assert "  2000 frames: LARGE2000x8 built in 3.0 s, peak RSS 7 MiB, beyond index 8 MiB, recall@100 0.502" \
        in res.stderr
    rows = [line.replace("│", " ").split() for line in res.stdout.splitlines() if "LARGE" in line]
    assert [r[0] for r in rows] == ["2000", "1000"]
    assert rows[0][:6] == ["2000", "LARGE2000x8", "1000", "1.0", "2.0", "3.0"]
    assert rows[1][-3:] == ["0.501", "0.750", "0.5"]
    assert res.stdout.rstrip().endswith("R100@1000 = exact top 100 found in FAISS's top 1000")


def test_bad_frames_exit_2_before_any_build(children: list[tuple], tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "index-build", "--frames", "0", "--work", str(tmp_path)])
    assert res.exit_code == 2 and children == []
    assert res.stderr.strip() == "error: --frames needs positive frame counts (got '0')"
