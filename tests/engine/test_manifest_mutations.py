"""engine/storage/manifest.py: every rule of a valid manifest (docs/robustness.md, "Hostile input") that a
mutation sweep found unpinned, each as one damaged value against the rule it breaks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.errors import IncompatibleLibraryError, LibraryError
from songseek.engine.storage.manifest import MAX_ROWS, MAX_SECONDS, Manifest, check_compatible

INFO = EncoderInfo(name="fake", checkpoint="fake", dim=8, sample_rate=16000)
WHERE = Path("/lib/manifest.json")


def good() -> dict[str, Any]:
    """A committed-looking manifest: two shards, tracks, failures, an index over every frame."""
    m = Manifest(encoder=INFO, window_s=10.0, hop_s=10.0, generation=4,
                 frame_shards=("frames-000001.arrow", "frames-000003.arrow"), shard_rows=(5, 7),
                 tracks_file="tracks-000004.arrow", failures_file="failures-000004.arrow",
                 index_file="index-000004.faiss", index_description="Flat", index_frames=12, index_trained_on=12,
                 index_last_action="rebuilt", checksums={"tracks-000004.arrow": "a" * 64},
                 quick_hashes={"tracks-000004.arrow": "b" * 32}, previous_files=("tracks-000003.arrow",),
                 extra_tables={"tags": "extra-tags-000002.arrow"}, created_at=1.0e9, updated_at=1.5e9)
    return json.loads(json.dumps(m.to_json()))


def parse(**changes: Any) -> Manifest:
    data = good()
    data.update(changes)
    return Manifest.from_json(data, WHERE)


def test_the_reference_manifest_parses_back_to_itself() -> None:
    m = parse()
    assert m.to_json() == good()
    assert m.files() == ["frames-000001.arrow", "frames-000003.arrow", "tracks-000004.arrow", "failures-000004.arrow",
                         "index-000004.faiss", "extra-tags-000002.arrow"]


def _encoder(**changes: Any) -> dict[str, Any]:
    enc = dict(good()["encoder"])
    enc.update(changes)
    return enc


@pytest.mark.parametrize("changes, message", [
    ({"shard_rows": [5]}, "frame_shards names 2 shards but shard_rows gives 1 row counts"),
    ({"shard_rows": [True, 7]}, r"shard_rows\[\] must be an integer from 0 to"),
    ({"shard_rows": [MAX_ROWS, 1], "index_frames": 0, "index_file": ""},
     f"shard_rows add up to {MAX_ROWS + 1} frames, more than {MAX_ROWS}"),
    ({"extra_tables": {"tracks": "extra-tracks-000002.arrow"}}, "extra_tables has a bad table name \"tracks\""),
    ({"extra_tables": {"index": "extra-index-000002.arrow"}}, "extra_tables has a bad table name \"index\""),
    ({"index_last_action": "deleted"}, "index_last_action must be rebuilt or updated, not \"deleted\""),
    ({"metric": "l2"}, "metric must be inner_product, not \"l2\""),
    ({"tracks_file": ""}, "frame_shards are named but tracks_file is empty"),
    ({"index_frames": 0}, "index_file is named but index_frames is 0"),
    ({"index_frames": 13}, "index_frames must be an integer from 0 to 12, not 13"),
    ({"window_s": math.nan}, r"window_s must be a finite number in \(0, 86400\], not nan"),
    ({"hop_s": math.inf}, r"hop_s must be a finite number in \(0, 86400\], not inf"),
    ({"window_s": MAX_SECONDS + 1}, r"window_s must be a finite number in \(0, 86400\]"),
    ({"created_at": math.nan}, "created_at must be a finite number"),
    ({"index_factory": "F" * 201}, "index_factory must be text of at most 200 characters"),
    ({"songseek_version": "1" * 101}, "songseek_version must be text of at most 100 characters"),
    ({"checksums": {"tracks-000004.arrow": "A" * 64}}, r"checksums\[tracks-000004.arrow\] must be a hex sha256"),
    ({"quick_hashes": {"tracks-000004.arrow": "b" * 31}}, r"quick_hashes\[tracks-000004.arrow\] must be a 32-digit"),
    ({"previous_files": ["frames-000001.arrow"]}, r"previous_files\[\] must be a plain tracks/failures/index/extra"),
    ({"encoder": _encoder(random_weights="yes")}, "encoder.random_weights must be true or false, not \"yes\""),
    ({"encoder": _encoder(name="")}, "encoder.name must be a non-empty name"),
    ({"encoder": {k: v for k, v in _encoder().items() if k != "sample_rate"}},
     "encoder.sample_rate must be an integer from 0 to 1000000, not null"),
    ({"encoder": _encoder(dim=65_537)}, "encoder.dim must be an integer from 1 to 65536, not 65537"),
])
def test_a_manifest_value_that_breaks_its_rule_is_refused_naming_the_field(changes: dict[str, Any],
                                                                          message: str) -> None:
    with pytest.raises(LibraryError, match=r"/lib/manifest.json: damaged manifest \(" + message) as err:
        parse(**changes)
    assert "run `songseek repair --library /lib`" in str(err.value)


@pytest.mark.parametrize("changes", [
    {"generation": 0}, {"index_frames": 12}, {"window_s": MAX_SECONDS, "hop_s": 1e-9}, {"shard_rows": [0, 7],
                                                                                        "index_frames": 7},
    {"encoder": _encoder(dim=1, sample_rate=0)}, {"index_last_action": ""}, {"index_last_action": "updated"},
])
def test_the_edges_of_each_range_are_accepted(changes: dict[str, Any]) -> None:
    m = parse(**changes)
    for key, value in changes.items():
        got = m.encoder.__dict__ if key == "encoder" else getattr(m, key)
        assert (got == value or list(got) == value) if key != "encoder" else all(got[k] == v for k, v in value.items())


def test_a_newer_schema_is_refused_as_incompatible_not_damaged() -> None:
    with pytest.raises(IncompatibleLibraryError, match="uses library schema 2, newer than this songseek's 1"):
        parse(schema_version=2)
    assert parse(schema_version=1).schema_version == 1


def test_a_precomputed_library_takes_any_encoder_of_its_dimension_only() -> None:
    lib = Manifest(encoder=EncoderInfo(name="precomputed", checkpoint="", dim=8, sample_rate=0), window_s=10.0,
                   hop_s=10.0)
    check_compatible(lib, INFO, Path("/lib"))  # same dim: fine
    with pytest.raises(IncompatibleLibraryError, match="holds 8-d precomputed vectors; encoder other makes 16-d ones"):
        check_compatible(lib, EncoderInfo(name="other", checkpoint="x", dim=16, sample_rate=16000), Path("/lib"))


@pytest.mark.parametrize("field, value", [("sample_rate", 48000), ("checkpoint_sha256", "f" * 64)])
def test_another_sample_rate_or_checkpoint_hash_is_another_encoder(field: str, value: object) -> None:
    lib = Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)
    other = EncoderInfo(**{**INFO.__dict__, field: value})
    label = field.replace("_", " ")
    with pytest.raises(IncompatibleLibraryError, match=f"built with another encoder: {label} "):
        check_compatible(lib, other, Path("/lib"))


def test_a_later_commit_keeps_the_identity_a_file_was_committed_with(tmp_path: Path) -> None:
    """write_manifest carries the quick hash of a file committed earlier instead of hashing it again: a shard
    damaged after its commit stays refused after later commits (it used to be re-blessed by a rehash)."""
    import numpy as np

    from songseek.engine.encoders.base import l2_normalize
    from songseek.engine.hashing import quick_hash
    from songseek.engine.query.search import Library
    from songseek.engine.storage.manifest import read_manifest
    from songseek.engine.storage.store import TrackRecord
    from songseek.engine.storage.writer import LibraryWriter

    root = tmp_path / "lib"
    rng = np.random.default_rng(4)

    def add(w: LibraryWriter, tid: str) -> None:
        w.add_track(TrackRecord(track_id=tid, path=f"/m/{tid}.wav"),
                    l2_normalize(rng.standard_normal((2, 8)).astype(np.float32)), np.array([0.0, 10.0]),
                    np.array([10.0, 20.0]))

    with LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)) as w:
        add(w, "a")
        w.commit()
    first = read_manifest(root).frame_shards[0]
    committed = quick_hash(root / first)
    data = bytearray((root / first).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / first).write_bytes(bytes(data))
    with LibraryWriter(root) as w:  # opening a writer reads tracks and failures, not the shards
        add(w, "b")
        w.commit()
    m = read_manifest(root)
    assert m.quick_hashes[first] == committed != quick_hash(root / first)
    with pytest.raises(LibraryError, match=f"{first}: missing or damaged library file \\(not the file this library"):
        Library.open(root)


def test_a_folder_holding_only_a_lock_file_is_no_library(tmp_path: Path) -> None:
    """What an older run that gave up left: `no library at` (create one), not `not a songseek library`."""
    from songseek.engine.storage.manifest import read_manifest

    root = tmp_path / "lib"
    root.mkdir()
    (root / ".lock").write_text("songseek pid 1")
    with pytest.raises(LibraryError, match=f"no library at {root}: create one with `songseek index DIR"):
        read_manifest(root)
    (root / "notes.txt").write_text("x")
    with pytest.raises(LibraryError, match=f"{root} is not a songseek library \\(no manifest.json\\)"):
        read_manifest(root)
