"""Incremental `songseek index`: only new or changed files are embedded; moves, removals, several sources."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import IncompatibleLibraryError, UsageError
from songseek.engine.query.search import Library
from songseek.engine.query.stats import library_stats
from songseek.engine.storage.manifest import read_manifest
from songseek.indexers.pipeline import IndexConfig, IndexReport, index_paths
from tests.library_helpers import library_rows

SR = 16000
pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")


def tone(path: Path, seconds: float, freq: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), SR)
    return path


def run(sources: list[Path], lib: Path, **kw: Any) -> IndexReport:
    kw.setdefault("workers", 2)
    return index_paths(sources, lib, FakeEncoder(), IndexConfig(**kw))


def counts(r: IndexReport) -> dict[str, int]:
    return {k: getattr(r, k) for k in ("added", "changed", "moved", "removed", "unchanged", "failed")}


by_path = library_rows


def test_second_run_embeds_only_what_changed(tmp_path: Path) -> None:
    a = tmp_path / "a"
    files = [tone(a / f"t{i}.wav", 4 + 6 * i, 200 + 100 * i, i) for i in range(5)]
    lib = tmp_path / "lib"
    r1 = run([a], lib)
    assert counts(r1) == dict(added=5, changed=0, moved=0, removed=0, unchanged=0, failed=0)
    assert r1.index_action == "rebuilt" and read_manifest(lib).index_last_action == "rebuilt"
    before = by_path(lib)

    r2 = run([a], lib)
    assert counts(r2) == dict(added=0, changed=0, moved=0, removed=0, unchanged=5, failed=0)
    assert r2.windows == 0 and r2.index_action == "unchanged"

    # one of each: changed content, touched (new mtime, same bytes), renamed, deleted, new
    tone(files[0], 4, 900, 99)                       # changed
    st = files[1].stat()
    os.utime(files[1], (st.st_atime, st.st_mtime + 100))  # touched
    moved = a / "sub" / "renamed.wav"
    moved.parent.mkdir()
    files[2].rename(moved)                           # moved
    files[3].unlink()                                # removed
    tone(a / "new.wav", 12, 700, 7)                  # added
    r3 = run([a], lib)
    assert counts(r3) == dict(added=1, changed=1, moved=1, removed=1, unchanged=2, failed=0)
    after = by_path(lib)
    # only the changed and the new file were embedded (1 + 2 windows)
    assert r3.windows == after[str(files[0])]["frame_count"] + after[str(a / "new.wav")]["frame_count"] == 3
    assert r3.index_action == "updated"              # flat index: new rows added, no rebuild
    info = CliRunner().invoke(app, ["info", "--library", str(lib), "--json"])
    assert info.exit_code == 0
    assert json.loads(info.stdout)["index_last_action"] == "updated" == read_manifest(lib).index_last_action
    # the moved track kept its id, vectors and added_at; only its path changed
    old, new = before[str(files[2])], after[str(moved)]
    assert (old["track_id"], old["added_at"], old["content_hash"]) == (new["track_id"], new["added_at"],
                                                                        new["content_hash"])
    np.testing.assert_array_equal(old["vectors"], new["vectors"])
    assert after[str(files[1])]["mtime"] == pytest.approx(st.st_mtime + 100)
    assert str(files[3]) not in after
    assert after[str(files[0])]["content_hash"] != before[str(files[0])]["content_hash"]
    stats = library_stats(Library.open(lib))
    assert stats.tracks == 5
    assert stats.dead_frames == before[str(files[0])]["frame_count"] + before[str(files[3])]["frame_count"]
    assert stats.index_frames == stats.frames + stats.dead_frames and stats.index_status.startswith("up to date")


def test_result_equals_a_fresh_build(tmp_path: Path) -> None:
    """After a series of incremental runs, every track's frames equal those of a one-shot build."""
    a = tmp_path / "a"
    files = [tone(a / f"t{i}.wav", 3 + 5 * i, 300 + 50 * i, i) for i in range(4)]
    lib = tmp_path / "lib"
    run([a], lib)
    tone(files[1], 9, 1234, 5)
    files[2].rename(a / "x.wav")
    run([a], lib)
    fresh = tmp_path / "fresh"
    run([a], fresh)
    inc, ref = by_path(lib), by_path(fresh)
    assert inc.keys() == ref.keys()
    for p in ref:
        assert inc[p]["content_hash"] == ref[p]["content_hash"]
        np.testing.assert_allclose(inc[p]["vectors"], ref[p]["vectors"], atol=1e-6)


def test_several_sources_feed_one_library_and_prune_stays_in_its_sources(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    fa = [tone(a / f"a{i}.wav", 3, 200 + 30 * i, i) for i in range(3)]
    fb = [tone(b / f"b{i}.wav", 3, 900 + 30 * i, 10 + i) for i in range(2)]
    lib = tmp_path / "lib"
    assert run([a], lib).added == 3
    assert counts(run([b], lib)) == dict(added=2, changed=0, moved=0, removed=0, unchanged=0, failed=0)
    assert Library.open(lib).n_tracks == 5                # indexing b left a's tracks alone
    fb[0].unlink()
    assert run([a], lib).removed == 0                      # b is not a source of this run: not pruned
    assert run([a, b], lib).removed == 1
    # a file moved from one source folder to the other is a move when both are indexed together
    fa[0].rename(b / "from_a.wav")
    r = run([a, b], lib)
    assert (r.moved, r.removed, r.added) == (1, 0, 0)
    # --no-prune keeps tracks of deleted files
    fa[1].unlink()
    assert run([a], lib, prune=False).removed == 0
    assert str(fa[1]) in by_path(lib)
    assert run([a], lib).removed == 1


def test_prune_skips_a_source_folder_that_looks_unmounted(tmp_path: Path) -> None:
    a = tmp_path / "mnt"
    tone(a / "x.wav", 3, 300)
    tone(a / "y.wav", 3, 400)
    lib = tmp_path / "lib"
    run([a], lib)
    shutil.rmtree(a)
    a.mkdir()                                              # an empty mount point
    r = run([a], lib)
    assert r.removed == 0 and Library.open(lib).n_tracks == 2
    assert any("no audio file found under" in n for n in r.notes)
    assert run([a], lib, prune_empty=True).removed == 2    # `--prune` given explicitly


def test_same_content_at_two_paths_gives_two_tracks(tmp_path: Path) -> None:
    a = tmp_path / "a"
    f = tone(a / "one.wav", 3, 300)
    shutil.copy(f, a / "two.wav")
    lib = tmp_path / "lib"
    assert run([a], lib).added == 2
    tracks = by_path(lib)
    assert len({t["track_id"] for t in tracks.values()}) == 2
    assert run([a], lib).unchanged == 2


def test_each_copy_of_one_file_moves_with_its_own_id(tmp_path: Path) -> None:
    """Both copies moved, one at a time: both are moves (ids, vectors and added_at kept), never re-embedded."""
    a = tmp_path / "a"
    f = tone(a / "one.wav", 3, 300)
    shutil.copy(f, a / "two.wav")
    lib = tmp_path / "lib"
    run([a], lib)
    ids = {p: t["track_id"] for p, t in by_path(lib).items()}
    (a / "one.wav").rename(a / "one-moved.wav")
    assert counts(run([a], lib)) == dict(added=0, changed=0, moved=1, removed=0, unchanged=1, failed=0)
    (a / "two.wav").rename(a / "two-moved.wav")
    assert counts(run([a], lib)) == dict(added=0, changed=0, moved=1, removed=0, unchanged=1, failed=0)
    assert {t["track_id"] for t in by_path(lib).values()} == set(ids.values())


def test_bad_window_or_hop_is_refused_before_a_library_is_written(tmp_path: Path) -> None:
    a = tmp_path / "a"
    tone(a / "x.wav", 3, 300)
    for bad in (float("nan"), float("inf"), 0.0, 100_000.0):
        with pytest.raises(UsageError, match=r"--window must be a number of seconds in \(0, 600\]"):
            run([a], tmp_path / "lib", window_s=bad)
        with pytest.raises(UsageError, match="--hop must be"):
            run([a], tmp_path / "lib", hop_s=bad)
    assert not (tmp_path / "lib").exists()


def test_a_folder_named_through_dotdot_or_a_symlink_is_the_same_folder(tmp_path: Path) -> None:
    a = tmp_path / "a"
    tone(a / "x.wav", 3, 300)
    (tmp_path / "b").mkdir()
    (tmp_path / "alias").symlink_to(a, target_is_directory=True)
    lib = tmp_path / "lib"
    assert run([a], lib).added == 1
    for same in (tmp_path / "b" / ".." / "a", tmp_path / "alias"):
        assert counts(run([same], lib)) == dict(added=0, changed=0, moved=0, removed=0, unchanged=1, failed=0)
    assert list(by_path(lib)) == [str(a / "x.wav")]


def test_window_mismatch_refused(tmp_path: Path) -> None:
    a = tmp_path / "a"
    tone(a / "x.wav", 3, 300)
    lib = tmp_path / "lib"
    run([a], lib)
    with pytest.raises(IncompatibleLibraryError, match="uses --window 10.0 --hop 10.0") as err:
        run([a], lib, window_s=5.0)
    # a Python caller is told its own spelling too (before: CLI options only)
    assert "IndexConfig(window_s=10.0, hop_s=10.0)" in str(err.value)


def test_new_library_is_committed_before_any_file(tmp_path: Path) -> None:
    """The first thing a new library gets is an empty commit: it opens (empty) whatever happens next
    (here its only file fails; a folder with no audio file at all is refused before anything is written)."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "broken.wav").write_bytes(b"not a wav")
    lib = tmp_path / "lib"
    r = run([a], lib)
    assert (counts(r)["added"], counts(r)["failed"]) == (0, 1)
    assert read_manifest(lib).tracks_file and Library.open(lib).search_vectors(np.ones((1, 32)), None) == [[]]


def test_layout_is_independent_of_threads_and_lookahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files finish in scan order: the frame layout is the same with 1 or 3 decoder threads, and with the
    decoders held to one file ahead of the first unfinished one."""
    from songseek.indexers import pipeline

    a = tmp_path / "a"
    for i in range(8):
        tone(a / f"t{i}.wav", 25 if i == 0 else 3, 200 + 40 * i, i)   # a long file first
    run([a], tmp_path / "one", workers=1)
    monkeypatch.setattr(pipeline, "MAX_FILES_AHEAD", 1)
    run([a], tmp_path / "three", workers=3, batch_size=3)
    one, three = by_path(tmp_path / "one"), by_path(tmp_path / "three")
    assert [(p, r["frame_start"]) for p, r in sorted(one.items())] == \
           [(p, r["frame_start"]) for p, r in sorted(three.items())]
    assert [p for p, _ in sorted(one.items(), key=lambda kv: kv[1]["frame_start"])] == sorted(one)


def test_a_tracked_file_overwritten_with_garbage_leaves_search_and_says_so(tmp_path: Path) -> None:
    """Its old vectors describe audio the file no longer holds: the track is removed (counted, with a note)
    and the failure recorded; a fixed file comes back as added. A new garbage file removes nothing."""
    a = tmp_path / "a"
    keep, spoilt = tone(a / "keep.wav", 12, 300, 1), tone(a / "spoilt.wav", 12, 900, 2)
    lib = tmp_path / "lib"
    run([a], lib)
    garbage = np.random.default_rng(3).bytes(40_000)
    spoilt.write_bytes(garbage)
    (a / "new.wav").write_bytes(garbage[::-1])
    r = run([a], lib)
    assert counts(r) == dict(added=0, changed=0, moved=0, removed=1, unchanged=1, failed=2)
    assert r.removed_failed == 1
    assert r.summary().startswith("added 0, changed 0, moved 0, removed 1 (1 whose file changed and now fails), "
                                  "unchanged 1, failed 2")
    assert r.notes == ["1 track(s) left search: the file changed and the new content failed to index (listed "
                       "above and by songseek failures); fix or replace the file and index again"]
    assert list(by_path(lib)) == [str(keep)]
    old_audio = tone(tmp_path / "query" / "old-spoilt.wav", 12, 900, 2)  # what spoilt.wav used to hold
    hits = Library.open(lib, encoder=FakeEncoder()).search(audio=old_audio, k=5)
    assert [h.path for h in hits] == [str(keep)]  # no stale hit for content that no longer exists
    assert {f.path for f in r.failures} == {str(spoilt), str(a / "new.wav")}
    again = run([a], lib)  # unchanged garbage: skipped as a known failure, nothing more removed
    assert (again.removed, again.removed_failed, again.skipped_failed, again.notes) == (0, 0, 2, [])
    tone(spoilt, 12, 900, 2)
    assert counts(run([a], lib))["added"] == 1 and str(spoilt) in by_path(lib)


def test_a_non_audio_file_as_source_is_refused_before_the_library_opens(tmp_path: Path) -> None:
    readme = tmp_path / "README.txt"
    readme.write_text("not music\n")
    for source in (readme, tmp_path / "missing.wav"):
        with pytest.raises(UsageError, match=f"^{source} (is not an audio format songseek reads|does not exist)"):
            run([source], tmp_path / "lib")
    assert not (tmp_path / "lib").exists()  # a new library is not even created


def test_rehash_finds_an_edit_that_kept_size_and_mtime(tmp_path: Path) -> None:
    a = tmp_path / "a"
    files = [tone(a / f"t{i}.wav", 6, 200 + 100 * i, i) for i in range(3)]
    lib = tmp_path / "lib"
    run([a], lib)
    before = by_path(lib)
    st = files[0].stat()
    tone(files[0], 6, 900, 99)                       # same length: same size
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))  # as a tag editor set to keep file times
    assert files[0].stat().st_size == st.st_size
    assert counts(run([a], lib)) == dict(added=0, changed=0, moved=0, removed=0, unchanged=3, failed=0)
    assert by_path(lib)[str(files[0])]["content_hash"] == before[str(files[0])]["content_hash"]  # not seen
    r = run([a], lib, rehash=True)
    assert counts(r) == dict(added=0, changed=1, moved=0, removed=0, unchanged=2, failed=0)
    after = by_path(lib)
    assert after[str(files[0])]["content_hash"] != before[str(files[0])]["content_hash"]
    assert r.windows == after[str(files[0])]["frame_count"]  # only the edited file was embedded
    generation = read_manifest(lib).generation
    assert counts(run([a], lib, rehash=True))["unchanged"] == 3
    assert read_manifest(lib).generation == generation  # nothing changed: nothing committed


def test_a_bad_index_factory_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    a = tmp_path / "a"
    tone(a / "t.wav", 6, 300)
    lib = tmp_path / "lib"
    with pytest.raises(UsageError, match="bad index factory 'Bogus,Flat'"):
        run([a], lib, index_factory="Bogus,Flat")
    assert not lib.exists()
    run([a], lib)
    generation = read_manifest(lib).generation
    with pytest.raises(UsageError, match="bad index factory"):
        run([a], lib, index_factory="Flat,Nonsense")
    assert read_manifest(lib).generation == generation and read_manifest(lib).index_factory == "auto"


def test_cli_rehash(tmp_path: Path) -> None:
    a = tmp_path / "a"
    f = tone(a / "t.wav", 6, 300)
    lib = tmp_path / "lib"
    args = ["index", str(a), "--library", str(lib), "--encoder", "fake", "--json"]
    assert CliRunner().invoke(app, args).exit_code == 0
    st = f.stat()
    tone(f, 6, 800, 5)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert json.loads(CliRunner().invoke(app, args).stdout)["changed"] == 0
    r = CliRunner().invoke(app, [*args, "--rehash"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["changed"] == 1
