"""A library stays in its folder (docs/robustness.md, "Hostile input"): the lock is never followed through a
link, the manifest may only name plain files of the library, every value in it is checked, every committed
file carries a quick identity hash that readers check on open, and no manifest content ends in a traceback
(hypothesis mutates fields and file names)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from songseek.engine.encoders.base import l2_normalize
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import LibraryError, SongseekError
from songseek.engine.query.search import Library
from songseek.engine.query.stats import library_stats
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.repair import repair_library, verify_library
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")


def make(root: Path, n: int = 5, seed: int = 0, commits: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    with LibraryWriter(root, Manifest(encoder=FakeEncoder().info, window_s=10.0, hop_s=10.0)) as w:
        for i in range(n):
            frames = 1 + i % 3
            starts = np.arange(frames) * 10.0
            w.add_track(TrackRecord(track_id=f"t{i}", path=f"/music/{i}.wav", duration_s=10.0 * frames),
                        l2_normalize(rng.standard_normal((frames, 32)).astype(np.float32)), starts, starts + 10)
            if i % max(1, n // commits) == 0:
                w.commit()
        w.commit()
        w.update_index()
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("pristine") / "lib")


def copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


Q = l2_normalize(np.random.default_rng(9).standard_normal((2, 32)).astype(np.float32))


def ranking(root: Path) -> list[list[tuple[str, float]]]:
    lib = Library.open(root, encoder=FakeEncoder())
    return [[(h.track_id, round(h.score, 5)) for h in hits] for hits in lib.search_vectors(Q)]


# -- the lock ---------------------------------------------------------------------------------------------
def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (lib / ".lock").unlink()
    (lib / ".lock").symlink_to(victim)
    with pytest.raises(LibraryError, match=r"\.lock is a symbolic link, not a lock file"):
        LibraryWriter(lib)
    with pytest.raises(LibraryError, match="symbolic link"):
        repair_library(lib)
    assert victim.read_text() == "precious"
    (lib / ".lock").unlink()
    (lib / ".lock").symlink_to(tmp_path / "would-be-created")   # a dangling link is not followed either
    with pytest.raises(LibraryError, match="symbolic link"):
        LibraryWriter(lib)
    assert not (tmp_path / "would-be-created").exists()


def test_a_lock_that_is_a_fifo_or_a_folder_is_refused(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    (lib / ".lock").unlink()
    os.mkfifo(lib / ".lock")
    with pytest.raises(LibraryError, match="not a regular file"):
        LibraryWriter(lib)
    (lib / ".lock").unlink()
    (lib / ".lock").mkdir()
    with pytest.raises(LibraryError, match="is a folder, not a lock file"):
        LibraryWriter(lib)


# -- names and values in the manifest -----------------------------------------------------------------------
def edit(root: Path, **changes: Any) -> None:
    data = json.loads((root / "manifest.json").read_text())
    data.update(changes)
    (root / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("changes, message", [
    ({"tracks_file": "/etc/passwd"}, "tracks_file must be a plain tracks file name inside the library folder"),
    ({"tracks_file": "../other/tracks-000002.arrow"}, "tracks_file must be a plain tracks file name"),
    ({"index_file": "/tmp/other/index-000004.faiss"}, "index_file must be a plain index file name"),
    ({"frame_shards": ["frames-000001.arrow", "frames-000001.arrow"], "shard_rows": [1, 1]},
     "frame_shards names a shard twice"),
    ({"extra_tables": {"tags": "../../etc/shadow"}}, r"extra_tables\[tags\] must be a plain extra file name"),
    ({"failures_file": "manifest.json"}, "failures_file must be a plain failures file name"),
    ({"hop_s": 0}, r"hop_s must be a finite number in \(0, 86400\], not 0"),
    ({"hop_s": -10.0}, "hop_s must be a finite number"),
    ({"window_s": "ten"}, "window_s must be a finite number .*not \"ten\""),
    ({"index_frames": 10**15}, "index_frames must be an integer from 0 to"),
    ({"generation": 1e308}, "generation must be an integer"),
    ({"generation": True}, "generation must be an integer"),
    ({"shard_rows": [-1, 3]}, r"shard_rows\[\] must be an integer from 0"),
    ({"encoder": {"name": "fake", "checkpoint": "fake", "dim": 0, "sample_rate": 16000}}, "encoder.dim must be"),
    ({"checksums": {"frames-000001.arrow": "zz"}}, r"checksums\[frames-000001.arrow\] must be a hex sha256"),
])
def test_bad_manifest_values_and_names_are_one_line_naming_the_field(pristine: Path, tmp_path: Path,
                                                                      changes: dict[str, Any], message: str) -> None:
    lib = copy(pristine, tmp_path / "lib")
    edit(lib, **changes)
    with pytest.raises(LibraryError, match="damaged manifest \\(" + message) as err:
        Library.open(lib)
    assert "\n" not in str(err.value)


def test_index_frames_past_the_frames_and_nan_generation(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    m = read_manifest(lib)
    edit(lib, index_frames=m.n_frame_rows + 1)
    with pytest.raises(LibraryError, match=f"index_frames must be an integer from 0 to {m.n_frame_rows}"):
        Library.open(lib)
    edit(lib, index_frames=m.index_frames)
    text = json.dumps(json.loads((lib / "manifest.json").read_text()))
    (lib / "manifest.json").write_text(text.replace(f'"generation": {m.generation}', '"generation": NaN'))
    with pytest.raises(LibraryError, match="generation must be an integer"):
        Library.open(lib)


# -- identities: a swapped file is found on open, by info and by repair --check -------------------------------
def test_an_index_swapped_in_from_another_library_is_detected(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    other = make(tmp_path / "other", seed=1)   # same sizes, other vectors
    m, mo = read_manifest(lib), read_manifest(other)
    assert m.index_frames == mo.index_frames
    shutil.copy(other / mo.index_file, lib / m.index_file)
    with pytest.raises(LibraryError, match=f"{m.index_file}: missing or damaged index .*identity hash differs"):
        Library.open(lib, encoder=FakeEncoder()).search_vectors(Q)
    with pytest.raises(LibraryError, match="identity hash differs"):
        library_stats(Library.open(lib))   # what `songseek info` shows
    problems = verify_library(lib)
    assert any(p.startswith(f"{m.index_file}: checksum mismatch") for p in problems), problems
    report = repair_library(lib)
    assert report.tracks == 5 and ranking(lib) == ranking(pristine)


def test_a_table_swapped_for_an_older_one_is_detected(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    m = read_manifest(lib)
    older = next(p for p in m.previous_files if p.startswith("tracks-"))
    shutil.copy(lib / older, lib / m.tracks_file)
    with pytest.raises(LibraryError, match=f"{m.tracks_file}: missing or damaged library file"):
        Library.open(lib)
    assert any(p.startswith(f"{m.tracks_file}: checksum mismatch") for p in verify_library(lib))


def test_a_file_replaced_by_a_symlink_is_refused(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    m = read_manifest(lib)
    target = tmp_path / "elsewhere.arrow"
    shutil.move(lib / m.failures_file, target)
    (lib / m.failures_file).symlink_to(target)
    with pytest.raises(LibraryError, match="a symbolic link, not a file the library wrote"):
        library_stats(Library.open(lib))
    assert any("symbolic link" in p for p in verify_library(lib))


def test_shard_rows_out_of_range_are_repaired_not_sent_back_to_repair(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    m = read_manifest(lib)
    rows = list(m.shard_rows)
    rows[0] += 2
    edit(lib, shard_rows=rows, index_frames=0, index_file="")
    with pytest.raises(LibraryError, match="has .* rows, manifest says"):
        Library.open(lib)
    report = repair_library(lib)
    assert any("holds" in p and "the manifest says" in p for p in report.problems)
    assert verify_library(lib) == [] and Library.open(lib).n_tracks == report.tracks


def test_repair_that_cannot_fix_says_what_instead_of_repair(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    for p in lib.glob("tracks-*.arrow"):
        p.unlink()
    (lib / "manifest.json").write_text("{}")
    (lib / "tracks-000099.arrow").write_bytes(b"garbage")
    with pytest.raises(LibraryError) as err:
        repair_library(lib)
    assert "run `songseek repair" not in str(err.value) and "new library" in str(err.value)


# -- no manifest content ends in a traceback -------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
                    | st.text(max_size=12), lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=6)
NAMES = st.sampled_from(["", "/etc/passwd", "../x", ".lock", "manifest.json", "frames-000001.arrow",
                         "frames-000002.arrow", "tracks-000002.arrow", "tracks-000003.arrow", "failures-000002.arrow",
                         "index-000004.faiss", "index-000005.faiss", "extra-tags-000001.arrow", "frames-1.arrow",
                         "x\x1b[2J", "frames-000003.arrow\x00"])
FIELDS = ["encoder", "window_s", "hop_s", "schema_version", "metric", "index_factory", "generation", "frame_shards",
          "shard_rows", "tracks_file", "failures_file", "index_file", "index_description", "index_frames",
          "index_trained_on", "index_last_action", "index_nprobe", "checksums", "quick_hashes", "previous_files",
          "extra_tables", "created_at", "updated_at", "no_such_field"]
NAME_FIELDS = ["tracks_file", "failures_file", "index_file"]
PRISTINE_RANKING: list[list[list[tuple[str, float]]]] = []


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_manifest_mutation_gives_one_line_errors_or_correct_results(pristine: Path, tmp_path: Path,
                                                                       data: st.DataObject) -> None:
    if not PRISTINE_RANKING:
        PRISTINE_RANKING.append(ranking(pristine))
    lib = copy(pristine, tmp_path / "lib")
    manifest = json.loads((lib / "manifest.json").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["value", "name", "list-name", "encoder", "drop"]))
        if kind == "value":
            manifest[data.draw(st.sampled_from(FIELDS))] = data.draw(JSON)
        elif kind == "name":
            manifest[data.draw(st.sampled_from(NAME_FIELDS))] = data.draw(NAMES)
        elif kind == "list-name" and manifest.get("frame_shards"):
            shards = list(manifest["frame_shards"]) if isinstance(manifest["frame_shards"], list) else []
            if shards:
                shards[data.draw(st.integers(0, len(shards) - 1))] = data.draw(NAMES)
                manifest["frame_shards"] = shards
        elif kind == "encoder" and isinstance(manifest.get("encoder"), dict):
            manifest["encoder"][data.draw(st.sampled_from(["name", "dim", "sample_rate", "random_weights",
                                                           "native_window_s"]))] = data.draw(JSON)
        else:
            manifest.pop(data.draw(st.sampled_from(FIELDS)), None)
    (lib / "manifest.json").write_text(json.dumps(manifest))
    try:
        lib_ = Library.open(lib, encoder=FakeEncoder())
        hits = lib_.search_vectors(Q)
        library_stats(lib_)
    except SongseekError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:  # it opened: whatever it answers is a well-formed ranking of the library's own tracks
        for row in hits:
            assert {h.track_id for h in row} <= {f"t{i}" for i in range(5)}
            assert [h.rank for h in row] == list(range(1, len(row) + 1))
            assert all(np.isfinite(h.score) for h in row)
        m, p = lib_.manifest, read_manifest(pristine)
        if (m.hop_s, m.frame_shards, m.shard_rows, m.tracks_file) == (p.hop_s, p.frame_shards, p.shard_rows,
                                                                      p.tracks_file):
            # the same frames, tracks and fusion geometry: the same answers as the untouched library
            assert [[(h.track_id, round(h.score, 5)) for h in row] for row in hits] == PRISTINE_RANKING[0]
    try:
        verify_library(lib)
    except SongseekError as exc:
        assert "\n" not in str(exc)


def test_links_planted_under_temporary_names_are_not_written_through(pristine: Path, tmp_path: Path) -> None:
    lib = copy(pristine, tmp_path / "lib")
    m = read_manifest(lib)
    gen = m.generation + 1
    victims = []
    with LibraryWriter(lib) as w:  # planted after the writer opened (it clears leftovers on open)
        for name in ("manifest.json", f"tracks-{gen:06d}.arrow", f"failures-{gen:06d}.arrow",
                     f"frames-{gen:06d}.arrow"):
            victim = tmp_path / f"victim-{name}"
            victim.write_text("precious")
            (lib / f".{name}.tmp-{os.getpid()}").symlink_to(victim)
            victims.append(victim)
        w.add_track(TrackRecord(track_id="new", path="/music/new.wav", duration_s=10.0),
                    l2_normalize(np.ones((1, 32), np.float32)), np.zeros(1), np.full(1, 10.0))
        w.commit()
    assert all(v.read_text() == "precious" for v in victims)
    assert Library.open(lib).n_tracks == 6 and verify_library(lib) == []
