"""`songseek bench retrieval` / `bench planted` with CliRunner: the --json contract, reports, errors."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from songseek.cli.bench_retrieval_cmds import register_bench
from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import library_rows, vector_table
from tests.metric_reference import naive_ap_at_10

CONTRACT = ("R@1", "R@5", "R@10", "R@20", "R@100", "mAP@10", "MedR")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()
    bench = typer.Typer()
    root.add_typer(bench, name="bench")
    register_bench(bench)
    return root


@pytest.fixture(scope="module")
def lib_and_queries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    table = vector_table(30, 8, seed=1, max_frames=8)
    ingest_table(table, tmp / "lib")
    rng = np.random.default_rng(0)
    ids = sorted(set(table.column("track_id").to_pylist()))
    q = tmp / "queries.parquet"
    pq.write_table(pa.table({
        "vector": rng.standard_normal((12, 8)).astype(np.float32).tolist(),
        "relevant": [list(rng.choice(ids, size=1 + i % 2, replace=False)) for i in range(12)],
        "start_s": [0.0] * 12,
        "end_s": [20.0] * 12,
    }), q)
    return tmp / "lib", q


def naive_metrics(lib: Path, queries: Path) -> dict[str, dict[str, float]]:
    """A plain-loop reference for the "mean" and "max" modes over every track (30 tracks: exhaustive): a
    track's score is the mean (or max) of its frames' dot products with the query; R@K = share of queries
    whose best-ranked relevant track is in the top K; AP@10 = sum over the top 10 of precision at each
    relevant hit / number of relevant tracks; MedR = the median first rank; for max, IoU>=0.5 of the
    best-ranked relevant track's best frame with the query's span."""
    frames = {row["track_id"]: (row["vectors"], lib_frame_times(lib, row))
              for row in library_rows(lib).values()}
    table = pq.read_table(queries).to_pylist()
    out: dict[str, dict[str, float]] = {}
    for mode in ("mean", "max"):
        firsts, aps, hits = [], [], []
        for row in table:
            qv = [float(x) for x in row["vector"]]
            score = {}
            for tid, (vecs, _) in frames.items():
                dots = [sum(a * b for a, b in zip(v.tolist(), qv)) for v in vecs]
                score[tid] = sum(dots) / len(dots) if mode == "mean" else max(dots)
            order = sorted(score, key=lambda t: -score[t])
            rel = set(row["relevant"])
            positions = [i + 1 for i, t in enumerate(order) if t in rel]
            firsts.append(positions[0])
            aps.append(naive_ap_at_10(order, rel))
            if mode == "max":
                best = order[positions[0] - 1]
                vecs, times = frames[best]
                f = max(range(len(vecs)), key=lambda j: sum(a * b for a, b in zip(vecs[j].tolist(), qv)))
                (s0, e0), (s1, e1) = times[f], (row["start_s"], row["end_s"])
                inter = max(0.0, min(e0, e1) - max(s0, s1))
                hits.append(inter / (max(e0, e1) - min(s0, s1)) >= 0.5)
        m = {f"R@{k}": sum(r <= k for r in firsts) / len(firsts) for k in (1, 5, 10, 20, 100)}
        m["mAP@10"] = sum(aps) / len(aps)
        m["MedR"] = float(statistics.median(firsts))
        if mode == "max":
            m["IoU>=0.5"] = sum(hits) / len(hits)
        out[mode] = m
    return out


def lib_frame_times(lib: Path, row: dict) -> list[tuple[float, float]]:
    store = Library.open(lib).store
    first, count = row["frame_start"], row["frame_count"]
    return [(float(store.start_s[i]), float(store.end_s[i])) for i in range(first, first + count)]


def test_queries_json_contract(app: typer.Typer, lib_and_queries: tuple[Path, Path]) -> None:
    lib, q = lib_and_queries
    res = CliRunner().invoke(app, ["bench", "retrieval", "--library", str(lib), "--queries", str(q),
                                   "--rerank", "fusion,mean,max", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"fusion", "mean", "max", "settings"}
    for mode in ("fusion", "mean", "max"):
        m = out[mode]
        assert all(k in m for k in CONTRACT)
        assert all(0.0 <= m[k] <= 1.0 for k in CONTRACT if k != "MedR")
        assert 1.0 <= m["MedR"] <= 30
        assert m["R@1"] <= m["R@5"] <= m["R@10"] <= m["R@20"] <= m["R@100"] == 1.0
        assert "IoU>=0.5" in m
    for mode, want in naive_metrics(lib, q).items():  # the numbers themselves, not only their range
        assert {k: out[mode][k] for k in want} == pytest.approx(want, abs=1e-9), mode
    s = out["settings"]
    assert s["modes"] == ["fusion", "mean", "max"] and s["n_queries"] == 12 and s["encoder"] == "precomputed"
    assert len(s["queries_sha256"]) == 64 and s["window_s"] == 10.0 and "songseek_version" in s


def test_report_and_subset(app: typer.Typer, lib_and_queries: tuple[Path, Path], tmp_path: Path) -> None:
    lib, q = lib_and_queries
    res = CliRunner().invoke(app, ["bench", "retrieval", "--library", str(lib), "--queries", str(q),
                                   "--rerank", "mean,none", "--subset", "5", "--seed", "3", "--ci",
                                   "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "text_to_audio" in res.stdout  # the human table
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.json", "report.md", "recall_at_k_text_to_audio.png", "rank_hist_text_to_audio.png"} <= names
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["results"]["text_to_audio"]["mean"]["n_queries"] == 5
    assert doc["settings"]["subset"] == {"requested": 5, "size": 5, "seed": 3, "population": 12}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| subset.seed | 3 |" in md and "| subset.population | 12 |" in md
    assert doc["results"]["text_to_audio"]["none"]["ci"]["R@1"] is not None
    assert (tmp_path / "rep" / "recall_at_k_text_to_audio.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, needle", [
    (["--rerank", "fusion,bogus"], "--rerank"),
    (["--rerank", ""], "--rerank"),
    (["--temperature", "0"], "temperature"),
    # --candidates below 1 is refused by the option's range (tests/cli/test_cli_errors.py, through songseek's app)
])
def test_bad_options_exit_2_with_one_line(app: typer.Typer, lib_and_queries: tuple[Path, Path],
                                          args: list[str], needle: str) -> None:
    lib, q = lib_and_queries
    res = CliRunner().invoke(app, ["bench", "retrieval", "--library", str(lib), "--queries", str(q), *args])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_needs_one_source(app: typer.Typer, lib_and_queries: tuple[Path, Path]) -> None:
    lib, q = lib_and_queries
    res = CliRunner().invoke(app, ["bench", "retrieval", "--queries", str(q)])
    assert res.exit_code == 2 and "--library" in res.stderr
    res = CliRunner().invoke(app, ["bench", "retrieval", "--library", str(lib)])
    assert res.exit_code == 2 and "either" in res.stderr


def test_dataset_run_with_fake_encoder(app: typer.Typer, tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    sr = 16000
    rows = []
    for i, freq in enumerate((200, 700, 2500)):
        t = np.arange(int(12 * sr)) / sr
        sf.write(tmp_path / f"s{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
        rows.append({"path": f"s{i}.wav", "captions": [f"tone number {i}", f"sine {freq} hertz"]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["bench", "retrieval", "--dataset", str(manifest), "--encoder", "fake",
                                   "--window", "4", "--rerank", "fusion,mean", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"fusion", "mean", "audio_to_text", "settings"}
    assert all(k in out["audio_to_text"]["fusion"] for k in CONTRACT)
    assert out["settings"]["captions"] == 6 and out["settings"]["encoder"] == "fake"
    assert (tmp_path / "m.jsonl.songseek" / "manifest.json").is_file()
    # reuse: the library's own encoder and window are taken when none is given
    res = CliRunner().invoke(app, ["bench", "retrieval", "--dataset", str(manifest), "--rerank", "max",
                                   "--subset", "2", "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["settings"]["window_s"] == 4.0 and again["settings"]["items_evaluated"] == 2
    assert again["settings"]["dataset"] == "m[2@seed0]"
    assert again["settings"]["subset"] == {"requested": 2, "size": 2, "seed": 0, "population": 3}
    assert out["settings"]["subset"] is None
    # the reused library holds the third track too: one extra candidate, said on stderr and in settings
    assert again["settings"]["distractor_tracks"] == 1 and out["settings"]["distractor_tracks"] == 0
    assert "1 track(s) of the library are in no dataset item" in res.stderr
    # a missing file is counted and named, not silently dropped
    manifest.write_text(manifest.read_text() + json.dumps({"path": "gone.wav", "caption": "lost"}) + "\n")
    res = CliRunner().invoke(app, ["bench", "retrieval", "--dataset", str(manifest), "--rerank", "max", "--json"])
    assert res.exit_code == 0, res.output
    assert "1 audio files missing" in res.stderr and "gone.wav" in res.stderr
    assert json.loads(res.stdout)["settings"]["missing_audio"] == 1


def test_planted_json(app: typer.Typer, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "planted", "--tracks", "20", "--dim", "16", "--seed", "1",
                                   "--rerank", "fusion,mean", "--work", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"whole_track", "section", "section_long", "fusion_vs_mean", "settings"}
    assert all(k in out["section"]["fusion"] for k in (*CONTRACT, "IoU>=0.5", "mIoU"))
    assert out["settings"]["planted"]["n_tracks"] == 20 and out["settings"]["n_queries"]["whole_track"] == 20
    assert any(p.name.endswith(".songseek") for p in tmp_path.iterdir())
    res = CliRunner().invoke(app, ["bench", "planted", "--tracks", "20", "--method", "magic"])
    assert res.exit_code == 2 and "method must be one of" in res.stderr


def test_the_rerank_parameters_are_the_librarys_as_search_uses_them(app: typer.Typer, tmp_path: Path) -> None:
    """10 s windows every 5 s: the 30 s segment is 5 frames; --kernel changes only the kernel."""
    table = vector_table(10, 8, seed=2, min_frames=8, max_frames=12, hop=5.0)
    table = table.set_column(table.schema.get_field_index("end_s"), "end_s",
                             pa.array([s + 10.0 for s in table.column("start_s").to_pylist()]))
    ingest_table(table, tmp_path / "lib")
    q = tmp_path / "q.parquet"
    ids = sorted(set(table.column("track_id").to_pylist()))
    pq.write_table(pa.table({"vector": np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32).tolist(),
                             "relevant": [[i] for i in ids[:4]]}), q)
    for extra, kernel in (([], None), (["--kernel", "2"], 2.0)):
        res = CliRunner().invoke(app, ["bench", "retrieval", "--library", str(tmp_path / "lib"), "--queries", str(q),
                                       "--rerank", "mean", "--json", *extra])
        assert res.exit_code == 0, res.output
        fusion = json.loads(res.stdout)["settings"]["fusion"]
        assert fusion["segment_kernel"] == 5
        # every other parameter is the library's own, as search uses it (before: only the kernel was looked at)
        want = dataclasses.asdict(Library.open(tmp_path / "lib").rerank_settings().params)
        assert fusion == (want if kernel is None else {**want, "kernel": kernel})


def test_planted_arrays_runs_with_its_default_modes(app: typer.Typer, tmp_path: Path) -> None:
    # the engine's default list (auto, hedge, ...) is not scored by --method arrays: its own default applies
    res = CliRunner().invoke(app, ["bench", "planted", "--tracks", "12", "--dim", "16", "--method", "arrays",
                                   "--engine-check", "4", "--work", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["section"]) == {"none", "mean", "max", "fusion"}


def test_a_long_engine_planted_run_says_so_before_it_starts() -> None:
    from songseek.cli.bench_retrieval_cmds import planted_start_note

    note = planted_start_note(2000, "engine", 1)
    assert note is not None and "roughly 30 min" in note and "--method arrays" in note
    assert "roughly 8 min" in (planted_start_note(1000, "engine", 1) or "")  # 30 × (1/2)² = 7.5
    assert "roughly 15 min" in (planted_start_note(2000, "engine", 2) or "")
    assert planted_start_note(2000, "arrays", 1) is None and planted_start_note(100, "engine", 1) is None


def test_relevant_ids_the_library_lacks_are_named_in_a_note(app: typer.Typer, lib_and_queries: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    lib, q = lib_and_queries
    table = pq.read_table(q).to_pylist()
    table[0]["relevant"] = [*table[0]["relevant"], "typo-1"]  # still has a real one: scored on it
    table[3]["relevant"] = [*table[3]["relevant"], "typo-2", "typo-2"]
    pq.write_table(pa.Table.from_pylist(table), tmp_path / "q.parquet")
    res = CliRunner().invoke(app, ["bench", "retrieval", "--library", str(lib), "--queries",
                                   str(tmp_path / "q.parquet"), "--rerank", "mean", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)["settings"]
    assert (s["unknown_relevant_ids"], s["unknown_relevant_examples"]) == (2, ["typo-1", "typo-2"])
    assert f"note: 2 relevant id(s) of the queries are not tracks of {lib} (first: typo-1, typo-2)" in res.stderr
    clean = CliRunner().invoke(app, ["bench", "retrieval", "--library", str(lib), "--queries", str(q),
                                     "--rerank", "mean", "--json"])
    assert "relevant id(s)" not in clean.stderr


def test_musiccaps_whole_youtube_audio_is_said_and_musiccaps_full_reads_the_spans(app: typer.Typer,
                                                                                     tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    sr, audio = 16000, tmp_path / "audio"
    audio.mkdir()
    rows = ["ytid,start_s,end_s,caption,is_audioset_eval"]
    for i, freq in enumerate((200, 700, 2500)):  # whole "YouTube audio" of 40 s, the clip at 10-20 s
        t = np.arange(40 * sr) / sr
        sf.write(audio / f"yt{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
        rows.append(f"yt{i},10,20,a steady tone number {i},True")
    csv = tmp_path / "musiccaps.csv"
    csv.write_text("\n".join(rows) + "\n")
    args = ["bench", "retrieval", "--dataset", str(csv), "--audio-dir", str(audio), "--encoder", "fake",
            "--window", "5", "--rerank", "max", "--json"]
    res = CliRunner().invoke(app, [*args, "--layout", "musiccaps"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["settings"]["clips_longer_than_30s"] == 3
    assert "3 MusicCaps file(s) are longer than 30 s" in res.stderr and "--layout musiccaps-full" in res.stderr
    res = CliRunner().invoke(app, [*args, "--layout", "musiccaps-full"])
    assert res.exit_code == 0, res.output
    settings = json.loads(res.stdout)["settings"]
    assert settings["clips_longer_than_30s"] == 0 and "longer than 30 s" not in res.stderr
    assert settings["spans_without_windows"] == {"audio_to_text": 0}  # each item is its 10-20 s span
