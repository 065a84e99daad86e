"""`songseek duplicates --json` (the contract), --not-duplicate, info, search --collapse-duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from songseek.cli.duplicates_cmd import member_format
from songseek.cli.main import app
from songseek.engine.analysis.duplicates import Member
from tests.analysis_helpers import build_library, duplicate_tracks
from tests.library_helpers import library_rows

runner = CliRunner()


def test_duplicates_json_contract_marks_and_info(tmp_path: Path) -> None:
    root = build_library(tmp_path / "lib", duplicate_tracks())
    res = runner.invoke(app, ["duplicates", "--library", str(root)])
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("1 group; ")  # before: "1 groups"
    res = runner.invoke(app, ["duplicates", "--library", str(root), "--json"])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.stdout)
    assert isinstance(groups, list) and len(groups) == 1
    g = groups[0]
    assert g["level"] in (1, 2, 3)
    assert sorted(m["track_id"] for m in g["members"]) == ["t000", "t001", "t002"]
    assert all(m["path"] == f"/music/{m['track_id']}.wav" for m in g["members"])
    assert {"offset_s", "span_a", "span_b", "window_agreement", "duration_ratio"} <= set(g["pairs"][0])
    assert all(-1.0 <= p["pooled_cosine"] <= 1.0 for p in g["pairs"])  # a copy's was 1.0000001
    check_pairs_against_the_planted_alignment(root, g["pairs"])
    info = json.loads(runner.invoke(app, ["info", "--library", str(root), "--json"]).stdout)
    assert info["duplicates"]["groups"] == 1 and info["duplicates"]["tracks"] == 3
    res = runner.invoke(app, ["duplicates", "--library", str(root), "--json", "--not-duplicate", "t000", "t002"])
    assert sorted(m["track_id"] for m in json.loads(res.stdout)[0]["members"]) == ["t000", "t001"]
    again = json.loads(runner.invoke(app, ["duplicates", "--library", str(root), "--json"]).stdout)
    assert sorted(m["track_id"] for m in again[0]["members"]) == ["t000", "t001"]
    bad = runner.invoke(app, ["duplicates", "--library", str(root), "--not-duplicate", "t000", "zz"])
    assert bad.exit_code == 2 and "no track 'zz'" in bad.output
    bad = runner.invoke(app, ["duplicates", "--library", str(root), "--min-level", "4"])
    assert bad.exit_code == 2 and "--min-level must be 1, 2, 3" in bad.output


# The planted truth of duplicate_tracks (10 s windows, hop 10 s): t001 = t000 without its first window, so
# t001 at time t is t000 at t + 10 (offset -10, the whole of t001); t002 = t000's windows 0-5 then 10-15,
# two equal 60 s runs (the earliest is reported: offset 0); t001's windows 9-14 are t000's 10-15 = t002's 6-11.
PLANTED = {("t000", "t001"): (-10.0, (10.0, 160.0), (0.0, 150.0)),
           ("t000", "t002"): (0.0, (0.0, 60.0), (0.0, 60.0)),
           ("t001", "t002"): (-30.0, (90.0, 150.0), (60.0, 120.0))}


def check_pairs_against_the_planted_alignment(root: Path, pairs: list[dict]) -> None:
    """Each pair's offset and spans against the planted alignment; its pooled cosine, duration ratio and
    window agreement against plain loops over the stored window vectors."""
    vecs = {Path(p).stem: row["vectors"].astype(float).tolist() for p, row in library_rows(root).items()}

    def dot(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v))

    def pooled(t: str) -> list[float]:
        m = [sum(col) / len(vecs[t]) for col in zip(*vecs[t])]
        n = dot(m, m) ** 0.5
        return [x / n for x in m]

    assert {(p["a"], p["b"]) for p in pairs} == set(PLANTED)
    for p in pairs:
        a, b = p["a"], p["b"]
        offset, span_a, span_b = PLANTED[(a, b)]
        assert (p["offset_s"], tuple(p["span_a"]), tuple(p["span_b"])) == (offset, span_a, span_b), p
        na, nb = len(vecs[a]), len(vecs[b])
        assert p["duration_ratio"] == pytest.approx(min(na, nb) / max(na, nb))
        assert p["pooled_cosine"] == pytest.approx(min(1.0, dot(pooled(a), pooled(b))), abs=1e-5)
        windows_a = range(int(span_a[0] // 10), int(span_a[1] // 10))
        along = [dot(vecs[a][i], vecs[b][i + int(offset // 10)]) for i in windows_a]
        assert p["window_agreement"] == pytest.approx(sum(along) / len(along), abs=1e-5)


def _groups(root: Path, *opts: str) -> list[tuple[int, list[str]]]:
    res = runner.invoke(app, ["duplicates", "--library", str(root), "--json", *opts])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.stdout)  # the whole of stdout is one JSON array
    assert isinstance(groups, list)
    for g in groups:
        assert g["level"] in (1, 2, 3) and len(g["members"]) >= 2
        assert all(isinstance(m["track_id"], str) and isinstance(m["path"], str) for m in g["members"])
    return [(g["level"], sorted(m["track_id"] for m in g["members"])) for g in groups]


def test_min_level_keeps_the_matches_at_least_that_strict(tmp_path: Path) -> None:
    # t000~t001 are one recording (level 1), t002 is an edit of both (level 2), t003..t007 are other songs.
    root = build_library(tmp_path / "lib", duplicate_tracks())
    everything = [(2, ["t000", "t001", "t002"])]
    assert _groups(root) == everything
    assert _groups(root, "--min-level", "master") == everything
    assert _groups(root, "--min-level", "2") == everything
    assert _groups(root, "--min-level", "1") == [(1, ["t000", "t001"])]
    assert _groups(root, "--min-level", "recording") == [(1, ["t000", "t001"])]
    assert _groups(root, "--max-level", "1") == [(1, ["t000", "t001"])]  # the old name, the same meaning
    grouped = {t for _, ids in _groups(root) for t in ids}
    assert not grouped & {f"t{i:03d}" for i in range(3, 8)}  # tracks without a duplicate are in no group


def test_at_80_columns_each_path_stays_on_one_line(tmp_path: Path) -> None:
    """The path column got what the id and format columns left: at 80 columns 20 cells, so every path was
    cut into pieces over several lines. Now a path that does not fit beside them goes on its own line."""
    tracks = duplicate_tracks()
    ids = [f"{i:016x}-fc15a5" for i in range(len(tracks))]  # the length of a copy's id in an indexed library
    root = build_library(tmp_path / "lib", tracks, ids=ids)
    res = runner.invoke(app, ["duplicates", "--library", str(root)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), res.stdout
    for tid in ids[:3]:
        assert any(line.strip() == f"/music/{tid}.wav" for line in lines), res.stdout
        assert any(tid in line and "format unknown" in line for line in lines), res.stdout  # id, format: one line
    wide = runner.invoke(app, ["duplicates", "--library", str(root)], env={"COLUMNS": "200"}).stdout
    assert any(line.startswith(" keep ") and line.rstrip().endswith("/music/0000000000000000-fc15a5.wav")
               for line in wide.splitlines()), wide  # where there is room, one line per member as before


def test_a_member_without_audio_facts_reads_format_unknown() -> None:
    audio = Member("t1", "/m/a.flac", 0, True, "flac", True, 901.4, 44100, 61.25, 3)
    assert member_format(audio) == "flac 901 kbit/s 44100 Hz 61.2 s"
    ingested = Member("t2", "", 1, False, "wav", False, 0.0, 0, 30.0, 0)  # vectors only: no file was read
    assert member_format(ingested) == "format unknown 30.0 s"
