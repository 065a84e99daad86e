"""CLI: `tag`, `outliers`, `mos train|predict`, and `bench tagging|anomaly|mos` through typer's CliRunner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from songseek.cli import analysis_cmds
from songseek.cli.bench_extra_cmds import register_bench
from songseek.cli.main import app
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table
from tests.analysis_helpers import build_library, noisy_copies, unit
from tests.library_helpers import library_rows

runner = CliRunner()
ENC = FakeEncoder()


@pytest.fixture
def lib_root(tmp_path: Path) -> Path:
    """Three clusters near "A jazz/rock/blues track" (8 tracks each) and one track near "noise" (t024)."""
    rng = np.random.default_rng(0)
    centers = ENC.embed_text(["A jazz track", "A rock track", "A blues track"])
    tracks = [noisy_copies(centers[i % 3], 3, 0.8, rng) for i in range(24)]
    tracks.append(noisy_copies(ENC.embed_text(["noise"])[0], 3, 0.6, rng))
    return build_library(tmp_path / "lib", tracks)


def naive_outliers(root: Path, k: int) -> list[tuple[str, float]]:
    """(track id, score) most anomalous first (ties: id), by plain loops: a track's vector is the unit mean
    of its windows; its score the mean Euclidean distance to its k nearest other tracks."""
    pooled = {}
    for row in library_rows(root).values():
        mean = [sum(col) / len(row["vectors"]) for col in zip(*row["vectors"].astype(float).tolist())]
        norm = sum(x * x for x in mean) ** 0.5
        pooled[row["track_id"]] = [x / norm for x in mean]
    scores = []
    for t, v in pooled.items():
        dists = sorted(sum((a - b) ** 2 for a, b in zip(v, w)) ** 0.5 for u, w in pooled.items() if u != t)
        scores.append((t, sum(dists[:k]) / k))
    return sorted(scores, key=lambda ts: (-ts[1], ts[0]))


def test_outliers_json_contract(lib_root: Path) -> None:
    r = runner.invoke(app, ["outliers", "--library", str(lib_root), "-k", "4", "--top", "5", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert isinstance(rows, list) and len(rows) == 5
    assert rows[0]["track_id"] == "t024" and rows[0]["path"] == "/music/t024.wav"
    assert [x["score"] for x in rows] == sorted((x["score"] for x in rows), reverse=True)
    want = naive_outliers(lib_root, k=4)[:5]
    assert [x["track_id"] for x in rows] == [t for t, _ in want]
    assert [x["score"] for x in rows] == pytest.approx([s for _, s in want], abs=1e-5)
    for x in rows:
        assert {"track_id", "path", "score", "reasons"} <= set(x)
        assert all({"descriptor", "difference"} <= set(rs) for rs in x["reasons"]) and len(x["reasons"]) == 3


def test_outliers_table_and_custom_descriptors(lib_root: Path, tmp_path: Path) -> None:
    d = tmp_path / "desc.txt"
    d.write_text("noise\nsilence\n")
    r = runner.invoke(app, ["outliers", "-l", str(lib_root), "--top", "2", "--descriptors", str(d)])
    assert r.exit_code == 0, r.output
    assert "t024" in r.stdout and "noise" in r.stdout


def test_outliers_errors_are_one_line(lib_root: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["outliers", "-l", str(lib_root), "-k", "100"])
    assert r.exit_code == 2 and "error:" in r.stderr and "-k 100" in r.stderr
    r = runner.invoke(app, ["outliers", "-l", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no library" in r.stderr


def test_outliers_on_precomputed_library_warns_and_skips_reasons(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = build_library(tmp_path / "pre", [unit(rng.standard_normal((2, 16))) for _ in range(6)], encoder=None)
    r = runner.invoke(app, ["outliers", "-l", str(root), "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert "no reasons" in r.stderr and all(x["reasons"] == [] for x in json.loads(r.stdout))


def test_tag_then_search_where(lib_root: Path, tmp_path: Path) -> None:
    labels = tmp_path / "genres.txt"
    labels.write_text("jazz\nrock\nblues\n")
    r = runner.invoke(app, ["tag", "-l", str(lib_root), "--labels", str(labels), "--json"])
    assert r.exit_code == 0, r.output
    [out] = json.loads(r.stdout)
    tops = {t["track_id"]: t["top"] for t in out["tracks"]}
    assert [tops[f"t{i:03d}"] for i in range(24)] == [("jazz", "rock", "blues")[i % 3] for i in range(24)]
    r = runner.invoke(app, ["search", "A jazz track", "-l", str(lib_root), "-k", "30", "--json",
                            "--where", "tag('jazz') > 0.5"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    tags = Library.open(lib_root).tables()["tags"]
    want = {t for t, s in zip(tags.column("track_id").to_pylist(), tags.column("tag_jazz").to_pylist()) if s > 0.5}
    assert {h["track_id"] for h in hits} == want and want
    r = runner.invoke(app, ["tag", "-l", str(lib_root), "--labels", "moods", "--template", "no placeholder"])
    assert r.exit_code == 2 and "placeholder" in r.stderr


def test_mos_train_and_predict(lib_root: Path, tmp_path: Path) -> None:
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("track_id,impression\n" + "".join(f"t{i:03d},{1 + (i % 3) * 1.5}\n" for i in range(24)))
    r = runner.invoke(app, ["mos", "train", "-l", str(lib_root), "--ratings", str(ratings), "--epochs", "30",
                            "--optimizer", "adam", "--lr", "0.003", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert Path(info["head"]) == lib_root / "mos-head.safetensors" and info["heads"] == ["impression"]
    r = runner.invoke(app, ["mos", "predict", "-l", str(lib_root), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 25 and [x["mos_impression"] for x in rows] == sorted((x["mos_impression"] for x in rows),
                                                                              reverse=True)
    assert "mos" in Library.open(lib_root).tables()
    r = runner.invoke(app, ["mos", "predict", "-l", str(lib_root), "--head", str(tmp_path / "none.safetensors")])
    assert r.exit_code == 2 and "no MOS head" in r.stderr


def _train_with_alignment(lib_root: Path, tmp_path: Path) -> None:
    ratings = tmp_path / "rated.csv"
    ratings.write_text("track_id,impression,alignment,prompt\n" + "".join(
        f"t{i:03d},{1 + (i % 3) * 1.5},{5 - (i % 3) * 1.5},A {('jazz', 'rock', 'blues')[i % 3]} track\n"
        for i in range(24)) + "x99,3,3,jazz\n")
    r = runner.invoke(app, ["mos", "train", "-l", str(lib_root), "--ratings", str(ratings), "--epochs", "5"])
    assert r.exit_code == 0, r.output
    assert "1 of 25 rows matched no track of the library (first: x99)" in r.stderr


def test_mos_predict_refuses_prompts_that_match_no_track_in_one_line(lib_root: Path, tmp_path: Path) -> None:
    _train_with_alignment(lib_root, tmp_path)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("track_id,prompt\nsong-1,A jazz track\nsong-2,A rock track\n")
    r = runner.invoke(app, ["mos", "predict", "-l", str(lib_root), "--prompts", str(prompts), "--json"])
    assert r.exit_code == 2 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert "none of its 2 rows matches a track of the library" in line and "first unmatched: song-1, song-2" in line
    assert "matched by track_id, else by path" in line and "SELECT track_id, path FROM tracks" in line
    assert "mos" not in Library.open(lib_root).tables()  # nothing written


def test_mos_predict_warns_how_many_prompts_matched(lib_root: Path, tmp_path: Path) -> None:
    _train_with_alignment(lib_root, tmp_path)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("track_id,path,prompt\nt000,,A jazz track\n,/music/t001.wav,A rock track\n"
                       "song-3,,A blues track\n")
    r = runner.invoke(app, ["mos", "predict", "-l", str(lib_root), "--prompts", str(prompts), "--json"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "1 of 3 rows matched no track of the library (first: song-3)" in r.stderr
    with_alignment = sorted(x["track_id"] for x in json.loads(r.stdout) if x["mos_alignment"] is not None)
    assert with_alignment == ["t000", "t001"]


def test_mos_predict_warns_when_the_head_cannot_use_prompts(lib_root: Path, tmp_path: Path) -> None:
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("track_id,impression\n" + "".join(f"t{i:03d},{1 + (i % 3) * 1.5}\n" for i in range(24)))
    r = runner.invoke(app, ["mos", "train", "-l", str(lib_root), "--ratings", str(ratings), "--epochs", "5"])
    assert r.exit_code == 0 and "warning" not in r.stderr
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("track_id,prompt\nt000,A jazz track\n")
    r = runner.invoke(app, ["mos", "predict", "-l", str(lib_root), "--prompts", str(prompts), "--json"])
    assert r.exit_code == 0, r.output
    assert "--prompts ignored: the head has no alignment part" in r.stderr
    assert all(x["mos_alignment"] is None for x in json.loads(r.stdout))


def bench_app() -> typer.Typer:
    root = typer.Typer()
    bench = typer.Typer()
    register_bench(bench)
    root.add_typer(bench, name="bench")
    return root


def test_bench_tagging_and_mos(lib_root: Path, tmp_path: Path) -> None:
    ds = tmp_path / "gtzan.csv"
    ds.write_text("track_id,label\n" + "".join(f"t{i:03d},{('jazz', 'rock', 'blues')[i % 3]}\n" for i in range(24)))
    r = runner.invoke(bench_app(), ["bench", "tagging", "--dataset", str(ds), "-l", str(lib_root), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"] == 1.0
    r = runner.invoke(bench_app(), ["bench", "tagging", "--dataset", str(ds), "-l", str(lib_root)])
    assert r.exit_code == 0 and "macro" in r.stdout
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("track_id,impression,system\n" + "".join(f"t{i:03d},{1 + (i % 3) * 1.5},S{i % 4}\n"
                                                               for i in range(24)))
    r = runner.invoke(bench_app(), ["bench", "mos", "--ratings", str(ratings), "-l", str(lib_root), "--epochs", "20",
                                    "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_test"] == 4 and set(out["utterance"]) == {"impression"} and "impression" in out["system"]


def test_bench_anomaly_reports_an_error_for_a_bad_layout(tmp_path: Path) -> None:
    r = runner.invoke(bench_app(), ["bench", "anomaly", "--dataset", str(tmp_path), "--encoder", "fake",
                                    "--work", str(tmp_path / "w")])
    assert r.exit_code == 2 and "DCASE" in r.stderr


def test_help_texts() -> None:
    for cmd in (["tag"], ["outliers"], ["mos", "train"], ["mos", "predict"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0 and "--library" in r.stdout


def _tagged_library(root: Path) -> Path:
    """Six tracks near "A jazz/rock track"; t000 carries artist and title tags, the others a path only."""
    rng = np.random.default_rng(3)
    centers = ENC.embed_text(["A jazz track", "A rock track"])
    rows = []
    for i in range(6):
        for f, v in enumerate(noisy_copies(centers[i % 2], 2, 0.5, rng)):
            row = {"track_id": f"t{i:03d}", "start_s": f * 10.0, "end_s": f * 10.0 + 10, "embedding": v.tolist(),
                   "path": f"/music/folder/track-{i}.wav"}
            if i == 0:
                row |= {"artist": "Miles Davis", "title": "So What"}
            rows.append(row)
    ingest_table(pa.Table.from_pylist(rows), root, encoder=ENC.info)
    return root


def test_tag_and_mos_predict_tables_name_the_tracks_under_a_header(tmp_path: Path) -> None:
    """Before: `tag` listed bare ids ("4c6f9eb8de3eb958\tr&b") and `mos predict` unlabelled columns
    ("3.16      -  147a8eca1537ea11"). Now each is a table with a header, naming a track by artist – title
    when the file is tagged, else by its path; --json is unchanged."""
    root = _tagged_library(tmp_path / "lib")
    labels = tmp_path / "genres.txt"
    labels.write_text("jazz\nrock\n")
    r = runner.invoke(app, ["tag", "-l", str(root), "--labels", str(labels)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("genres: 2 labels × 6 tracks")
    assert lines[1].split() == ["track", "┃", "top", "genres", "┃", "score"]
    assert "Miles Davis – So What" in r.stdout and "/music/folder/track-1.wav" in r.stdout
    assert "t000" not in r.stdout and "t001" not in r.stdout
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("track_id,impression\n" + "".join(f"t{i:03d},{1 + (i % 2) * 3}\n" for i in range(6)))
    r = runner.invoke(app, ["mos", "train", "-l", str(root), "--ratings", str(ratings), "--epochs", "5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["mos", "predict", "-l", str(root)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["impression", "┃", "alignment", "┃", "track"]
    assert "Miles Davis – So What" in r.stdout and "track-5.wav" in r.stdout and "t00" not in r.stdout
    r = runner.invoke(app, ["mos", "predict", "-l", str(root), "--json"])
    assert {x["track_id"] for x in json.loads(r.stdout)} == {f"t{i:03d}" for i in range(6)}


def test_mos_train_shows_progress_on_a_terminal_only(lib_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: `mos train` ran ~30 s without a sign of life. Now a rich bar of epochs on stderr where stderr
    is a terminal; a pipe (CliRunner's stderr is one) gets the result line only."""
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("track_id,impression\n" + "".join(f"t{i:03d},{1 + (i % 3) * 1.5}\n" for i in range(24)))
    args = ["mos", "train", "-l", str(lib_root), "--ratings", str(ratings), "--epochs", "7"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and r.stderr == "" and r.stdout.startswith("trained impression")
    screen = io.StringIO()
    monkeypatch.setattr(analysis_cmds, "_terminal_stderr",
                        lambda: Console(file=screen, force_terminal=True, width=100))
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and r.stdout.startswith("trained impression")
    assert "training epochs" in screen.getvalue() and "/7" in screen.getvalue() and "best L1" in screen.getvalue()


def test_every_option_of_every_command_says_what_it_does() -> None:
    """Before: `demo --checkpoint`, `mos train --batch-size` and a dozen bench options had an empty line in
    their --help."""
    def bare(command: object, path: list[str]) -> list[str]:
        subs = getattr(command, "commands", None)
        if subs is not None:
            return [b for name, sub in subs.items() for b in bare(sub, [*path, name])]
        return [f"{' '.join(path)} {p.opts[0]}" for p in getattr(command, "params", [])
                if p.param_type_name == "option" and not p.hidden and not p.help and p.name != "help"]

    assert bare(typer.main.get_command(app), []) == []


def test_bench_tagging_and_mos_name_the_first_unmatched_row_and_the_averaged_ones(lib_root: Path,
                                                                                   tmp_path: Path) -> None:
    ds = tmp_path / "gtzan.csv"
    ds.write_text("track_id,label\n" + "".join(f"t{i:03d},{('jazz', 'rock', 'blues')[i % 3]}\n" for i in range(24))
                  + "nosuch-1,jazz\nnosuch-2,rock\n")
    r = runner.invoke(bench_app(), ["bench", "tagging", "--dataset", str(ds), "-l", str(lib_root)])
    assert r.exit_code == 0, r.output
    assert "2 of 26 rows matched no track of the library (first: nosuch-1)" in r.stderr
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("track_id,impression,system\n" + "".join(f"t{i:03d},{1 + (i % 3) * 1.5},S{i % 4}\n"
                                                               for i in range(24))
                       + "t000,2.0,S0\nghost,3.0,S1\n")
    r = runner.invoke(bench_app(), ["bench", "mos", "--ratings", str(ratings), "-l", str(lib_root), "--epochs", "20"])
    assert r.exit_code == 0, r.output
    assert "1 of 26 rows matched no track of the library (first: ghost)" in r.stderr
    assert "note: 1 rows repeated a track (and prompt) and were averaged into it" in r.stderr
    r = runner.invoke(bench_app(), ["bench", "mos", "--ratings", str(ratings), "-l", str(lib_root), "--epochs", "20",
                                    "--json"])
    settings = json.loads(r.stdout)["settings"]
    assert (settings["unmatched"], settings["unmatched_rows"], settings["averaged"]) == (1, ["ghost"], 1)
