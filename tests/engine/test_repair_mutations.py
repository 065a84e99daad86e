"""engine/storage/repair.py: what a mutation sweep found unpinned (compaction's shard sizes, the dead-frame
count users see, ...), each checked against counts the test keeps itself and plain pyarrow reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.storage import repair as repair_mod
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.repair import repair_library, verify_library
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

DIM = 4
INFO = EncoderInfo(name="fake", checkpoint="fake", dim=DIM, sample_rate=16000)


def arrow(path: Path) -> list[dict]:
    with open(path, "rb") as fh:
        return ipc.open_file(fh).read_all().to_pylist()


def build(root: Path, sizes: dict[str, int], seed: int = 0, commit_every: int = 1) -> dict[str, np.ndarray]:
    """A library of tracks with the given frame counts, one commit (one shard) per ``commit_every`` tracks."""
    rng = np.random.default_rng(seed)
    out = {}
    with LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)) as w:
        for i, (tid, n) in enumerate(sizes.items()):
            vecs = l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32))
            starts = np.arange(n) * 10.0
            w.add_track(TrackRecord(track_id=tid, path=f"/m/{tid}.wav"), vecs, starts, starts + 10.0)
            out[tid] = vecs
            if (i + 1) % commit_every == 0:
                w.commit()
        w.commit()
        w.update_index()
    return out


def live(root: Path) -> dict[str, np.ndarray]:
    """track id → its frames, read with plain pyarrow from the shards the manifest names."""
    m = read_manifest(root)
    rows = []
    for s in m.frame_shards:
        rows += arrow(root / s)
    return {t["track_id"]: np.array([r["vector"] for r in rows[t["frame_start"]:t["frame_start"] + t["frame_count"]]],
                                    np.float32)
            for t in arrow(root / m.tracks_file)
            if all(r["track_id"] == t["track_id"] for r in rows[t["frame_start"]:t["frame_start"] + t["frame_count"]])}


def test_compaction_cuts_a_shard_once_it_reaches_compact_shard_rows(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole tracks go to a shard until it holds at least COMPACT_SHARD_ROWS frames; the next track starts a
    new one. Reference: that greedy rule run over the track sizes in frame order."""
    sizes = {"a": 2, "b": 2, "c": 3, "d": 1, "e": 2, "f": 2}
    root = tmp_path / "lib"
    vecs = build(root, sizes)
    monkeypatch.setattr(repair_mod, "COMPACT_SHARD_ROWS", 4)
    want, cur = [], 0
    for n in sizes.values():
        cur += n
        if cur >= 4:
            want.append(cur)
            cur = 0
    if cur:
        want.append(cur)
    assert want == [4, 4, 4]
    report = repair_library(root, compact=True)
    m = read_manifest(root)
    assert list(m.shard_rows) == want
    assert [len(arrow(root / s)) for s in m.frame_shards] == want
    got = live(root)
    assert got.keys() == vecs.keys() and all(np.array_equal(got[t], vecs[t]) for t in vecs)
    assert report.compacted and report.dead_frames_removed == 0 and report.frames == sum(sizes.values())
    assert verify_library(root) == []


def test_the_dead_frames_a_repair_reports_exclude_the_frames_of_a_damaged_shard(tmp_path: Path) -> None:
    """Dead frames are the frames of replaced tracks; the frames lost with a damaged shard are not counted
    as removed dead frames. Counted by hand: 3 shards of 2+3 frames each; track b replaced (3 dead frames,
    in shard 1), shard 2 (tracks c and d, 5 frames) damaged."""
    root = tmp_path / "lib"
    sizes = {"a": 2, "b": 3, "c": 2, "d": 3}
    vecs = build(root, sizes, commit_every=2)  # shards: [a, b], [c, d]
    rng = np.random.default_rng(9)
    with LibraryWriter(root) as w:
        nb = l2_normalize(rng.standard_normal((4, DIM)).astype(np.float32))
        w.add_track(TrackRecord(track_id="b", path="/m/b.wav"), nb, np.arange(4) * 10.0, np.arange(4) * 10.0 + 10.0)
        w.commit()
        m = w.manifest
    assert list(m.shard_rows) == [5, 5, 4]
    shard = root / m.frame_shards[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = repair_library(root)
    assert report.dropped_tracks == 2 and report.compacted
    assert report.dead_frames_removed == 3      # b's old frames; c and d's 5 frames were lost, not dead
    assert report.frames == 2 + 4 and report.tracks == 2
    got = live(root)
    assert got.keys() == {"a", "b"}
    np.testing.assert_array_equal(got["a"], vecs["a"])
    np.testing.assert_array_equal(got["b"], nb)
    assert sum(read_manifest(root).shard_rows) == 6
    assert "compacted (3 dead frames removed)" in report.summary()
    assert "1 damaged file(s) repaired" in report.summary()


@pytest.mark.parametrize("tid, start, count", [
    ("a", 0, 3),   # runs past the end of its shard (a's shard holds a, a, b, b, b: the 3rd frame is b's)
    ("b", 2, 4),   # runs from its own shard into the next one (b's 3 frames + c's first)
    ("a", 0, 0),   # no frames at all
    ("c", 6, 2),   # inside one shard, but c's 2nd frame and d's frame
])
def test_tracks_that_point_at_frames_not_their_own_are_found_and_dropped(tmp_path: Path, tid: str, start: int,
                                                                           count: int) -> None:
    """Shards, written by hand-counted layout: [a a b b b] [c c d]. One track's (frame_start, frame_count) is
    damaged (the table's checksum is right: damage written by a buggy writer). verify names it; repair drops
    that track only, and the others keep their frames."""
    root = tmp_path / "lib"
    rng = np.random.default_rng(3)
    vecs = {}
    with LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)) as w:
        for group in (("a", 2), ("b", 3)), (("c", 2), ("d", 1)):
            for t, n in group:
                vecs[t] = l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32))
                w.add_track(TrackRecord(track_id=t, path=f"/m/{t}.wav"), vecs[t], np.arange(n) * 10.0,
                            np.arange(n) * 10.0 + 10.0)
            w.commit()
        assert {t: (r["frame_start"], r["frame_count"]) for t, r in w.tracks.items()} == {
            "a": (0, 2), "b": (2, 3), "c": (5, 2), "d": (7, 1)}
        w.tracks[tid]["frame_start"], w.tracks[tid]["frame_count"] = start, count
        w.update_path(tid, f"/m/{tid}.wav", 0.0)  # marks the writer dirty: the damaged row is committed
        w.commit()
    assert verify_library(root) == [f"{read_manifest(root).tracks_file}: 1 tracks point at frames that are not theirs"]
    report = repair_library(root)
    assert report.dropped_tracks == 1 and report.tracks == 3
    got = live(root)
    assert got.keys() == {"a", "b", "c", "d"} - {tid}
    assert all(np.array_equal(got[t], vecs[t]) for t in got)
    assert verify_library(root) == []


def _edit(root: Path, **changes: object) -> None:
    import json

    data = json.loads((root / "manifest.json").read_text())
    data.update(changes)
    (root / "manifest.json").write_text(json.dumps(data))


def test_check_names_a_file_the_manifest_has_no_checksum_for(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    build(root, {"a": 2, "b": 1})
    m = read_manifest(root)
    name = m.frame_shards[0]
    _edit(root, checksums={k: v for k, v in m.checksums.items() if k != name})
    assert verify_library(root) == [f"{name}: the manifest records no checksum for it (not a file this library "
                                    "committed)"]


def test_check_names_a_shard_whose_rows_differ_from_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    build(root, {"a": 2, "b": 3})
    m = read_manifest(root)
    _edit(root, shard_rows=[2, 1], index_file="", index_frames=0)
    assert verify_library(root) == [f"{m.frame_shards[1]}: holds 3 frames, the manifest says 1"]
    report = repair_library(root)  # the shard matches the tracks table's record: the manifest was wrong
    assert report.dropped_tracks == 0 and live(root).keys() == {"a", "b"}
    assert verify_library(root) == []


def test_a_lost_manifest_is_rebuilt_from_the_newest_tracks_table(tmp_path: Path) -> None:
    """Two tracks tables are on disk (the last commit's and the one it superseded); both embed a manifest
    whose files verify. The newest wins, so no committed track is lost."""
    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 1, "c": 3})  # one commit per track
    m = read_manifest(root)
    older = [n for n in m.previous_files if n.startswith("tracks-")]
    assert older and (root / older[0]).exists()
    (root / "manifest.json").unlink()
    report = repair_library(root)
    assert report.manifest_recovered_from == m.tracks_file
    got = live(root)
    assert got.keys() == {"a", "b", "c"} and all(np.array_equal(got[t], vecs[t]) for t in vecs)


def test_repair_commits_a_generation_above_every_numbered_file_in_the_folder(tmp_path: Path) -> None:
    """Leftovers with higher numbers (a crashed writer's, or files of a lost newer manifest) must not be
    reused or outnumbered: a reader that saw generation 55 has to see the repair as a newer one."""
    import re
    import shutil

    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 1})
    m = read_manifest(root)
    shutil.copy(root / m.frame_shards[0], root / "frames-000040.arrow")
    shutil.copy(root / m.tracks_file, root / "extra-tags-000055.arrow")
    numbers = [int(x.group(1)) for p in root.iterdir() if (x := re.search(r"-(\d{6,})\.(arrow|faiss)$", p.name))]
    assert max(numbers) == 55 > m.generation
    report = repair_library(root)
    assert report.generation_after > 55 and read_manifest(root).generation == report.generation_after
    got = live(root)
    assert got.keys() == vecs.keys() and all(np.array_equal(got[t], vecs[t]) for t in vecs)
    assert verify_library(root) == []


def test_repair_removes_the_old_files_before_it_builds_the_new_index(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On a nearly full disk the superseded files (the old index above all) go before the new index is
    written: when write_index runs, the folder holds only what the new manifest names."""
    from songseek.engine.storage.writer import LOCK_NAME

    root = tmp_path / "lib"
    build(root, {"a": 2, "b": 1, "c": 2})
    old_index = read_manifest(root).index_file
    assert old_index and (root / old_index).exists()
    seen: list[set[str]] = []
    real = repair_mod.write_index

    def spy(r: Path, m: Manifest, *args: object, **kwargs: object) -> object:
        seen.append({p.name for p in r.iterdir()} - {"manifest.json", LOCK_NAME} - set(m.files())
                    - set(m.previous_files))
        return real(r, m, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(repair_mod, "write_index", spy)
    repair_library(root)
    assert seen == [set()]
    assert old_index not in {p.name for p in root.iterdir()} or old_index == read_manifest(root).index_file


def test_the_repair_summary_line(tmp_path: Path) -> None:
    from songseek.engine.storage.repair import RepairReport

    r = RepairReport(path="/lib", generation_after=7, files_checked=5, problems=["x: missing", "y: missing"],
                     dropped_tracks=1, compacted=True, dead_frames_removed=4, tracks=3, frames=12, index="Flat")
    assert r.summary() == ("/lib: 2 damaged file(s) repaired; checked 5 files; 3 tracks, 12 frames; dropped 1 "
                           "tracks; compacted (4 dead frames removed); index Flat; generation 7")
    clean = RepairReport(path="/lib", generation_after=2, files_checked=4, tracks=3, frames=12)
    assert clean.summary() == ("/lib: no damage found; checked 4 files; 3 tracks, 12 frames; dropped 0 tracks; "
                               "index none; generation 2")


def test_a_library_without_checksums_is_checked_by_its_identity_hashes(tmp_path: Path) -> None:
    """A manifest that records no checksums (an older library) is not "every file unknown": its files pass
    on their identity (quick) hashes, and a file whose quick hash differs is named."""
    root = tmp_path / "lib"
    build(root, {"a": 2, "b": 1})
    m = read_manifest(root)
    assert m.quick_hashes
    _edit(root, checksums={})
    assert verify_library(root) == []
    name = m.frame_shards[0]
    _edit(root, quick_hashes={**m.quick_hashes, name: "0" * 32})
    assert verify_library(root) == [f"{name}: identity hash mismatch (replaced or overwritten since its commit)"]
