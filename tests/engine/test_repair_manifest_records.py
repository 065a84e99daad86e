"""engine/storage/repair.py: a manifest.json that records a wrong checksum or row count for an intact frame
shard. The shard verifies against the copy of the manifest embedded in the (verifying) tracks table, so the
manifest is what is damaged: repair must keep the shard and its tracks, not drop them and delete the file
(which lost every track of an intact shard, for a library of precomputed vectors for good)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.repair import repair_library, verify_library
from tests.engine.test_repair_mutations import build, live


def _edit_manifest(root: Path, **changes: object) -> None:
    data = json.loads((root / "manifest.json").read_text())
    data.update(changes)
    (root / "manifest.json").write_text(json.dumps(data))


def _assert_all_kept(root: Path, vecs: dict[str, np.ndarray]) -> None:
    got = live(root)
    assert got.keys() == vecs.keys()
    for tid, want in vecs.items():
        np.testing.assert_array_equal(got[tid], want)
    assert verify_library(root) == []


def test_a_wrong_checksum_in_the_manifest_keeps_the_intact_shard_and_its_tracks(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 3, "c": 1}, seed=11)
    m = read_manifest(root)
    shard = m.frame_shards[1]  # track b
    sums = dict(m.checksums)
    sums[shard] = "0" * 64
    _edit_manifest(root, checksums=sums)
    assert any(shard in p for p in verify_library(root))  # --check still reports the bad record
    report = repair_library(root)
    assert report.dropped_tracks == 0
    assert any("manifest.json" in p and shard in p for p in report.problems)
    assert (root / shard).exists() or not report.compacted
    _assert_all_kept(root, vecs)


def test_a_wrong_row_count_in_the_manifest_keeps_the_intact_shard_and_its_tracks(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 3, "c": 4}, seed=12)
    m = read_manifest(root)
    rows = list(m.shard_rows)
    rows[-1] -= 1  # the last shard (track c, 4 frames) recorded as 3: still a readable manifest
    _edit_manifest(root, shard_rows=rows, index_frames=sum(rows), index_trained_on=min(m.index_trained_on,
                                                                                          sum(rows)))
    report = repair_library(root)
    assert report.dropped_tracks == 0
    assert report.frames == sum(len(v) for v in vecs.values())
    _assert_all_kept(root, vecs)


def test_a_shard_that_fails_both_records_is_still_dropped(tmp_path: Path) -> None:
    """The fallback only vouches for a file that matches the tracks table's copy: real damage still drops."""
    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 3, "c": 1}, seed=13)
    shard = read_manifest(root).frame_shards[1]
    raw = bytearray((root / shard).read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (root / shard).write_bytes(bytes(raw))
    report = repair_library(root)
    assert report.dropped_tracks == 1
    got = live(root)
    assert got.keys() == {"a", "c"}
    for tid in got:
        np.testing.assert_array_equal(got[tid], vecs[tid])


def test_repair_names_a_manifest_without_a_schema_version_in_one_whole_sentence(tmp_path: Path) -> None:
    """The reason repair prints drops the advice to run repair: it used to leave half of it behind
    (`damaged: manifest.json: manifest has no schema_version; if this is a songseek library,`)."""
    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 1}, seed=14)
    _edit_manifest(root, schema_version="2.0")
    report = repair_library(root)
    assert report.problems == ["manifest.json: manifest has no schema_version"]
    _assert_all_kept(root, vecs)
