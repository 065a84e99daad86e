"""Extra tables (tags, mos, duplicates) and the failures table under the crash model: a replaced extra table is
kept for readers of the previous generation like a replaced tracks table, and a swapped failures table is
refused on read like every other library file (docs/robustness.md, "Crash model" and `songseek repair`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.errors import LibraryError
from songseek.engine.query import search as search_mod
from songseek.engine.query.search import Library
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.repair import repair_library, verify_library
from songseek.engine.storage.store import (
    Failure,
    TrackRecord,
    failures_table,
    read_failures,
    read_library_table,
    write_table_atomic,
)
from songseek.engine.storage.writer import LibraryWriter

DIM = 8
INFO = EncoderInfo(name="fake", checkpoint="fake", dim=DIM, sample_rate=16000)
IDS = ["t0", "t1", "t2"]


def tags(seed: int) -> pa.Table:
    return pa.table({"track_id": pa.array(IDS, pa.string()),
                     "tag_jazz": np.random.default_rng(seed).random(len(IDS)).astype(np.float32)})


def build(root: Path) -> None:
    """Three tracks, one recorded failure, a tags table and an index."""
    rng = np.random.default_rng(0)
    with LibraryWriter(root, Manifest(encoder=INFO, window_s=10.0, hop_s=10.0)) as w:
        for tid in IDS:
            vecs = l2_normalize(rng.standard_normal((3, DIM)).astype(np.float32))
            starts = np.arange(3) * 10.0
            w.add_track(TrackRecord(track_id=tid, path=f"/music/{tid}.wav", duration_s=30.0), vecs, starts,
                        starts + 10.0)
        w.record_failure(Failure("/music/bad.mp3", "DecodeError", "not audio", 1.0))
        w.put_table("tags", tags(0))
        w.commit()
        w.update_index()


def put_tags(root: Path, seed: int) -> None:
    """What `songseek tag` does: replace the tags table in one commit."""
    with LibraryWriter(root) as w:
        w.put_table("tags", tags(seed))
        w.commit()


def on_disk(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def kept(m: Manifest) -> set[str]:
    return {".lock", "manifest.json", *m.files(), *m.previous_files}


def test_a_reader_opened_before_a_tag_commit_still_reads_its_extra_table(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader (`songseek serve`, a search) has read the manifest when `songseek tag` commits a new tags
    table. Before: the commit deleted the old table at once: reading it gave `missing or damaged library
    file`, which Library.open hid by opening again at the new generation (at most 3 tries)."""
    root = tmp_path / "lib"
    build(root)
    old = read_manifest(root)
    real, calls = search_mod.read_library_table, [0]

    def read_between(r: Path, name: str, m: Manifest) -> pa.Table:
        if name.startswith("extra-") and not calls[0]:
            calls[0] += 1
            put_tags(root, 1)  # the writer commits after the reader read its manifest
        return real(r, name, m)

    monkeypatch.setattr(search_mod, "read_library_table", read_between)
    lib = Library.open(root)
    assert calls[0] == 1 and lib.manifest.generation == old.generation
    assert lib.extra_tables["tags"].equals(tags(0))  # the reader's generation, whole
    new = read_manifest(root)
    assert new.extra_tables["tags"] != old.extra_tables["tags"]
    assert old.extra_tables["tags"] in new.previous_files
    assert new.quick_hashes[old.extra_tables["tags"]] == old.quick_hashes[old.extra_tables["tags"]]
    # the reader of the previous manifest can read every table it names, identity-checked
    assert read_library_table(root, old.extra_tables["tags"], old).equals(tags(0))
    assert on_disk(root) == kept(new) and verify_library(root) == []


def test_a_replaced_extra_table_goes_when_it_is_replaced_again_and_nothing_else_goes(tmp_path: Path) -> None:
    """The rule of tracks, failures and index files: the newest superseded file of each kind is kept, so a
    replaced tags table outlives the commits that do not touch it and goes at the next `tag` run."""
    root = tmp_path / "lib"
    build(root)
    first = read_manifest(root).extra_tables["tags"]
    put_tags(root, 1)
    second = read_manifest(root).extra_tables["tags"]
    with LibraryWriter(root) as w:  # an index run: tracks/failures commit, index update; tags untouched
        w.record_failure(Failure("/music/worse.mp3", "DecodeError", "not audio", 2.0))
        w.commit()
        w.update_index()
    m = read_manifest(root)
    assert m.extra_tables["tags"] == second and first in m.previous_files and (root / first).exists()
    assert on_disk(root) == kept(m)
    put_tags(root, 2)
    m = read_manifest(root)
    assert not (root / first).exists()  # two tag commits later it is gone
    assert second in m.previous_files and (root / second).exists()
    assert on_disk(root) == kept(m)  # nothing else removed, nothing left over
    assert all((root / n).is_file() for n in (*m.files(), *m.previous_files))
    assert Library.open(root).extra_tables["tags"].equals(tags(2))
    # repair's fallback still parses: the tracks table's embedded manifest names the kept extra table
    embedded = json.loads(Library.open(root).tracks.schema.metadata[b"songseek.manifest"])
    assert second in embedded["previous_files"]


@pytest.mark.parametrize("name", ["extra-tags-000002.arrow", "extra-Tags-000002.arrow", "extra-../x-000002.arrow",
                                  "/etc/passwd", "manifest.json", "frames-000001.arrow"])
def test_kept_extra_tables_get_the_name_check_of_previous_files(tmp_path: Path, name: str) -> None:
    root = tmp_path / "lib"
    build(root)
    data = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**data, "previous_files": [name]}))
    if name == "extra-tags-000002.arrow":
        assert read_manifest(root).previous_files == (name,)
        return
    with pytest.raises(LibraryError, match=r"previous_files\[\] must be a plain tracks/failures/index/extra "
                                           r"file name inside the library folder.*run `songseek repair"):
        read_manifest(root)


def swap_failures(root: Path) -> Manifest:
    """Replace the committed failures table by another that Arrow reads fine (a copy from elsewhere)."""
    m = read_manifest(root)
    write_table_atomic(root / m.failures_file, failures_table([Failure("/elsewhere/x.mp3", "X", "not ours", 0.0)]))
    return m


def test_a_swapped_failures_table_is_refused_with_the_repair_line(tmp_path: Path) -> None:
    """Before: `songseek failures` read the failures table without the identity check (no read_failures),
    and listed the swapped-in rows."""
    root = tmp_path / "lib"
    build(root)
    assert read_failures(root, read_manifest(root)).column("path").to_pylist() == ["/music/bad.mp3"]
    m = swap_failures(root)
    want = (rf"{m.failures_file}: missing or damaged library file \(not the file this library committed: its "
            rf"identity hash differs\); run `songseek repair --library {root}`")
    with pytest.raises(LibraryError, match=want):
        read_failures(root, m)
    with pytest.raises(LibraryError, match=want):
        LibraryWriter(root)  # `songseek index` opens the library the same way
    (root / m.failures_file).unlink()
    with pytest.raises(LibraryError, match=rf"{m.failures_file}: missing or damaged library file"):
        read_failures(root, m)


def test_repair_rebuilds_a_swapped_failures_table_empty(tmp_path: Path) -> None:
    """Repair's choice: an empty failures table, not the previous one (which may list files indexed since
    and lacks the last commit's failures); the next index run retries the failed files and records them."""
    root = tmp_path / "lib"
    build(root)
    put_tags(root, 1)  # a previous failures table exists, and is not used
    m = swap_failures(root)
    assert any(p.startswith(f"{m.failures_file}: checksum mismatch") for p in verify_library(root))
    report = repair_library(root)
    assert report.problems == [f for f in report.problems if f.startswith(m.failures_file)]
    assert "dropped the damaged failures table: failed files are retried next run" in report.actions
    assert report.dropped_tracks == 0 and report.tracks == len(IDS)
    after = read_manifest(root)
    assert read_failures(root, after).num_rows == 0 and verify_library(root) == []
    assert Library.open(root).extra_tables["tags"].equals(tags(1))  # the extra tables are kept as they were


def test_repair_drops_a_damaged_extra_table_and_keeps_the_rest(tmp_path: Path) -> None:
    """Extra tables are identity-checked on open (Library, LibraryWriter.get_table); repair drops a damaged
    one (the command that wrote it writes it again) and keeps tracks, frames and the other tables."""
    root = tmp_path / "lib"
    build(root)
    with LibraryWriter(root) as w:
        w.put_table("mos", pa.table({"track_id": pa.array(IDS), "mos_impression": [4.0, 2.0, 3.0]}))
        w.commit()
    m = read_manifest(root)
    (root / m.extra_tables["tags"]).write_bytes(b"garbage")
    with pytest.raises(LibraryError, match=rf"{m.extra_tables['tags']}: missing or damaged library file"):
        Library.open(root)
    report = repair_library(root)
    assert "dropped the damaged extra table 'tags'; write it again (e.g. `songseek tag`)" in report.actions
    lib = Library.open(root)
    assert set(lib.extra_tables) == {"mos"} and lib.n_tracks == len(IDS)
    assert read_failures(root, lib.manifest).column("path").to_pylist() == ["/music/bad.mp3"]
    assert verify_library(root) == [] and on_disk(root) == kept(read_manifest(root))
