"""`songseek repair`: verify checksums, recover a damaged manifest / tracks / failures table / shard /
index, compact dead frames; every damaged library says what is wrong in one line and how to fix it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import LibraryError
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.query.stats import library_stats
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.writer import acquire_lock
from songseek.indexers.pipeline import IndexConfig, index_paths

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")
SR = 16000
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    if "torch" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torch", None)  # the fake encoder needs none; saves seconds


def build(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    music, lib = tmp_path / "music", tmp_path / "lib"
    music.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        t = np.arange(int(SR * (4 + 5 * i))) / SR
        x = 0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(music / f"t{i}.wav", x.astype(np.float32), SR)
    index_paths([music], lib, FakeEncoder(), IndexConfig(commit_every_files=2, workers=1))
    return music, lib


def snapshot(lib: Path) -> dict[str, np.ndarray]:
    library = Library.open(lib)
    return {r["path"]: np.array(library.store.vectors(r["frame_start"], r["frame_count"]))
            for r in library.tracks.to_pylist()}


def cli(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.output


def error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_healthy_library_verifies_and_repair_changes_nothing_but_the_index(tmp_path: Path) -> None:
    _, lib = build(tmp_path)
    before = snapshot(lib)
    code, out = cli("repair", "--library", str(lib), "--check")
    assert code == 0 and "all files verify" in out
    code, out = cli("repair", "--library", str(lib), "--json")
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and report["problems"] == [] and report["dropped_tracks"] == 0 and report["index"] == "Flat"
    after = snapshot(lib)
    assert after.keys() == before.keys() and all(np.array_equal(after[p], before[p]) for p in before)


def test_flipped_byte_in_a_shard_is_found_and_its_tracks_reembedded(tmp_path: Path) -> None:
    music, lib = build(tmp_path)
    ref = snapshot(lib)
    m = read_manifest(lib)
    assert len(m.frame_shards) >= 3
    shard = lib / m.frame_shards[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF                            # silent damage: Arrow still reads it
    shard.write_bytes(bytes(data))
    with pytest.raises(LibraryError, match="not the file this library committed"):
        Library.open(lib)              # a shard this small lies wholly inside its quick identity hash
    code, out = cli("repair", "--library", str(lib), "--check")
    assert code == 1 and f"damaged: {shard.name}: checksum mismatch" in out
    code, out = cli("repair", "--library", str(lib))
    assert code == 0 and "dropped 2 tracks" in out and "compacted" in out
    assert len(snapshot(lib)) == len(ref) - 2
    assert cli("repair", "--library", str(lib), "--check")[0] == 0
    r = index_paths([music], lib, FakeEncoder(), IndexConfig())   # the dropped files come back
    assert r.added == 2
    got = snapshot(lib)
    assert got.keys() == ref.keys() and all(np.allclose(got[p], ref[p], atol=1e-6) for p in ref)
    assert library_stats(Library.open(lib)).dead_frames == 0


def test_missing_index_then_repair(tmp_path: Path) -> None:
    _, lib = build(tmp_path)
    m = read_manifest(lib)
    (lib / m.index_file).unlink()
    code, out = cli("search", "x", "--library", str(lib), "--rerank", "max")
    assert code == 2
    line = error_line(out)
    assert m.index_file in line and "missing or damaged index" in line and f"songseek repair --library {lib}" in line
    code, out = cli("repair", "--library", str(lib))
    assert code == 0 and f"damaged: {m.index_file}: missing" in out
    code, out = cli("search", "x", "--library", str(lib), "--rerank", "max", "--json")
    assert code == 0 and len(json.loads(next(ln for ln in out.splitlines() if ln.startswith("[")))) == 6


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage-json"])
def test_damaged_manifest_is_rebuilt_from_the_tracks_table(tmp_path: Path, damage: str) -> None:
    _, lib = build(tmp_path)
    ref = snapshot(lib)
    path = lib / "manifest.json"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "delete":
        path.unlink()
    else:
        path.write_text(json.dumps({"schema_version": 1, "encoder": "nonsense"}))
    code, out = cli("info", "--library", str(lib))
    assert code == 2
    assert "repair --library" in error_line(out) or "not a songseek library" in error_line(out)
    code, out = cli("repair", "--library", str(lib))
    assert code == 0 and "rebuilt manifest.json from the manifest embedded in tracks-" in out, out
    got = snapshot(lib)
    assert got.keys() == ref.keys() and all(np.array_equal(got[p], ref[p]) for p in ref)
    code, out = cli("info", "--library", str(lib), "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["index_status"].startswith("up to date")


def test_damaged_tracks_and_failures_tables(tmp_path: Path) -> None:
    music, lib = build(tmp_path)
    (music / "bad.mp3").write_text("not audio")
    sf.write(music / "late.wav", np.zeros(SR * 3, np.float32), SR)
    index_paths([music], lib, FakeEncoder(), IndexConfig())        # one more commit: keeps a previous table
    ref = snapshot(lib)
    m = read_manifest(lib)
    (lib / m.tracks_file).write_bytes(b"garbage")
    (lib / m.failures_file).write_bytes(b"garbage")
    code, out = cli("info", "--library", str(lib))
    assert code == 2 and f"{m.tracks_file}: missing or damaged library file" in error_line(out)
    code, out = cli("repair", "--library", str(lib))
    assert code == 0, out
    assert "used the previous tracks table" in out and "dropped the damaged failures table" in out
    got = snapshot(lib)
    assert set(got) == set(ref) - {str(music / "late.wav")}          # the last commit's file is lost ...
    r = index_paths([music], lib, FakeEncoder(), IndexConfig())
    assert (r.added, r.failed) == (1, 1)                               # ... and re-embedded; bad.mp3 retried
    assert snapshot(lib).keys() == ref.keys()


def test_a_swapped_failures_table_is_one_line_and_repair_rebuilds_it_empty(tmp_path: Path) -> None:
    """A failures table that Arrow reads fine but is not the one committed (copied from the previous
    generation): refused like any library file; repair rebuilds it empty and the next index run finds the
    failure again (docs/robustness.md, `songseek repair`)."""
    music, lib = build(tmp_path)
    (music / "bad.mp3").write_text("not audio")
    index_paths([music], lib, FakeEncoder(), IndexConfig())
    old = read_manifest(lib).failures_file
    (music / "worse.mp3").write_text("not audio either")
    index_paths([music], lib, FakeEncoder(), IndexConfig())         # keeps `old` as the previous table
    m = read_manifest(lib)
    assert old in m.previous_files and (lib / old).read_bytes() != (lib / m.failures_file).read_bytes()
    (lib / m.failures_file).write_bytes((lib / old).read_bytes())  # a valid table, not this generation's
    for command in (["info"], ["index", str(music)], ["failures"], ["sql", "SELECT count(*) FROM failures"]):
        code, out = cli(*command, "--library", str(lib))
        line = error_line(out)
        assert code == 2 and f"{m.failures_file}: missing or damaged library file (not the file this library " \
            f"committed: its identity hash differs); run `songseek repair --library {lib}`" in line, out
    code, out = cli("repair", "--library", str(lib))
    assert code == 0 and f"damaged: {m.failures_file}: checksum mismatch" in out
    assert "dropped the damaged failures table: failed files are retried next run" in out
    code, out = cli("failures", "--library", str(lib), "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == []
    r = index_paths([music], lib, FakeEncoder(), IndexConfig())
    assert (r.added, r.failed, r.unchanged) == (0, 2, 6)               # both retried and recorded again
    code, out = cli("failures", "--library", str(lib), "--json")
    assert sorted(f["path"] for f in json.loads(out.strip().splitlines()[-1])) == [str(music / "bad.mp3"),
                                                                                    str(music / "worse.mp3")]


def test_compact_removes_dead_frames_and_keeps_results(tmp_path: Path) -> None:
    music, lib = build(tmp_path)
    sf.write(music / "t0.wav", np.ones(SR * 25, np.float32) * 0.1, SR)   # changed: old frames die
    (music / "t1.wav").unlink()                                          # removed: frames die
    index_paths([music], lib, FakeEncoder(), IndexConfig())
    before = snapshot(lib)
    dead = library_stats(Library.open(lib)).dead_frames
    assert dead > 0
    q = np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)
    opts = SearchOptions(k=5, rerank="max", exact=True)
    hits_before = [[(h.path, round(h.score, 5)) for h in hs] for hs in Library.open(lib).search_vectors(q, opts)]
    code, out = cli("repair", "--library", str(lib), "--compact")
    assert code == 0 and f"compacted ({dead} dead frames removed)" in out
    stats = library_stats(Library.open(lib))
    assert stats.dead_frames == 0 and stats.index_frames == stats.frames
    after = snapshot(lib)
    assert after.keys() == before.keys() and all(np.array_equal(after[p], before[p]) for p in before)
    hits_after = [[(h.path, round(h.score, 5)) for h in hs] for hs in Library.open(lib).search_vectors(q, opts)]
    assert hits_after == hits_before
    assert len(read_manifest(lib).frame_shards) == 1
    assert index_paths([music], lib, FakeEncoder(), IndexConfig()).unchanged == len(before)


def test_repair_refusals(tmp_path: Path) -> None:
    _, lib = build(tmp_path, n=2)
    fd = acquire_lock(lib)
    try:
        code, out = cli("repair", "--library", str(lib))
        assert code == 2 and "is being written by songseek pid" in error_line(out)
    finally:
        import os

        os.close(fd)
    data = json.loads((lib / "manifest.json").read_text())
    (lib / "manifest.json").write_text(json.dumps({**data, "schema_version": 7}))
    code, out = cli("repair", "--library", str(lib))
    assert code == 2 and "newer than this songseek's" in error_line(out) and "upgrade songseek" in out
    code, out = cli("repair", "--library", str(tmp_path / "nothing"))
    assert code == 2 and "no library at" in error_line(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = cli("repair", "--library", str(empty))
    assert code == 2 and "is not a songseek library" in error_line(out) and not (empty / ".lock").exists()
    (empty / "tracks-000003.arrow").write_bytes(b"junk")
    code, out = cli("repair", "--library", str(empty))
    assert code == 2 and "no tracks table holds a usable copy" in error_line(out)


def test_repair_of_an_ingested_library_says_to_ingest_again_not_to_index(tmp_path: Path) -> None:
    """`songseek index` cannot re-embed precomputed vectors (it refuses such a library without --encoder)."""
    import pyarrow.parquet as pq

    from tests.library_helpers import vector_table

    pq.write_table(vector_table(3, 8, seed=2, min_frames=2, max_frames=4), tmp_path / "v.parquet")
    lib = tmp_path / "lib"
    assert cli("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))[0] == 0
    shard = lib / read_manifest(lib).frame_shards[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, out = cli("repair", "--library", str(lib))
    assert code == 0 and "dropped 3 tracks whose frames were lost or inconsistent; ingest their vectors again " \
        f"(`songseek ingest FILE --library {lib}`)" in out and "songseek index" not in out, out
    assert cli("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))[0] == 0
    assert Library.open(lib).n_tracks == 3
