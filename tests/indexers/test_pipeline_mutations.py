"""Indexing details the main pipeline tests leave open (found by a mutation sweep): the hop, a sibling folder
whose name extends a source's, the encoder-name check for precomputed libraries, the --nprobe note, the first
empty commit of a new library and the failure records of unreadable paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import songseek.indexers.pipeline as pipeline
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import IncompatibleLibraryError
from songseek.engine.query.search import Library
from songseek.engine.storage.manifest import read_manifest
from songseek.indexers.pipeline import IndexConfig, IndexReport, check_encoder_name, index_paths
from songseek.indexers.sources import ScanResult
from tests.indexers.test_incremental import tone

SR = 16000
pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")


def run(sources: list[Path], lib: Path, **kw: Any) -> IndexReport:
    return index_paths(sources, lib, FakeEncoder(), IndexConfig(**kw))


def frame_starts(lib: Path) -> dict[str, list[float]]:
    library = Library.open(lib)
    return {row["path"]: library.store.start_s[row["frame_start"]:row["frame_start"] + row["frame_count"]].tolist()
            for row in library.tracks.to_pylist()}


def test_a_hop_unlike_the_window_is_saved_used_and_accepted_again(tmp_path: Path) -> None:
    f = tone(tmp_path / "a" / "x.wav", 9.0, 300)
    lib = tmp_path / "lib"
    assert run([tmp_path / "a"], lib, window_s=4.0, hop_s=2.0).added == 1
    m = read_manifest(lib)
    assert (m.window_s, m.hop_s) == (4.0, 2.0)
    starts = frame_starts(lib)[str(f)]
    assert starts[:4] == [0.0, 2.0, 4.0, 6.0]
    assert all(b - a == 2.0 for a, b in zip(starts, starts[1:]))
    r = run([tmp_path / "a"], lib, window_s=4.0, hop_s=2.0)  # the same settings: nothing to do, no refusal
    assert (r.unchanged, r.added) == (1, 0)
    with pytest.raises(IncompatibleLibraryError, match=r"uses --window 4.0 --hop 2.0"):
        run([tmp_path / "a"], lib, window_s=4.0)  # hop = window now: refused


def test_prune_leaves_a_sibling_folder_whose_name_extends_the_sources(tmp_path: Path) -> None:
    """`/x/music` is not a folder above `/x/music2/...`: indexing music alone must not prune music2's tracks."""
    a, a2 = tmp_path / "music", tmp_path / "music2"
    tone(a / "keep.wav", 3, 300)
    gone = tone(a2 / "gone.wav", 3, 500, 1)
    tone(a2 / "other.wav", 3, 700, 2)
    lib = tmp_path / "lib"
    assert run([a, a2], lib).added == 3
    gone.unlink()
    r = run([a], lib)
    assert (r.removed, r.unchanged) == (0, 1)
    assert str(gone) in frame_starts(lib)  # pruned only by a run over music2
    assert run([a2], lib).removed == 1


def test_an_encoder_name_is_checked_against_the_manifest_except_for_precomputed_vectors(tmp_path: Path) -> None:
    import pyarrow as pa

    from songseek.indexers.ingest import ingest_table

    lib = tmp_path / "vectors"
    rng = np.random.default_rng(0)
    ingest_table(pa.Table.from_pylist([{"track_id": "a", "start_s": 0.0, "end_s": 10.0,
                                        "embedding": rng.standard_normal(32).tolist()}]), lib)
    check_encoder_name(read_manifest(lib), "fake", lib)  # any encoder of the dimension: checked once loaded
    tone(tmp_path / "a" / "x.wav", 3, 300)
    run([tmp_path / "a"], tmp_path / "fake")
    check_encoder_name(read_manifest(tmp_path / "fake"), "fake", tmp_path / "fake")
    with pytest.raises(IncompatibleLibraryError, match=r"was built with another encoder: 'fake' \(checkpoint fake\), "
                                                       r"not 'clap'"):
        check_encoder_name(read_manifest(tmp_path / "fake"), "clap", tmp_path / "fake")


def test_the_nprobe_note_is_given_for_a_flat_index_only_when_a_positive_nprobe_is_asked(tmp_path: Path) -> None:
    tone(tmp_path / "a" / "x.wav", 3, 300)
    lib = tmp_path / "lib"
    r = run([tmp_path / "a"], lib, nprobe=3)
    assert read_manifest(lib).index_nprobe == 3
    assert [n for n in r.notes if "--nprobe" in n] == [
        f"--nprobe 3 is saved; it takes effect once the index is IVF (now "
        f"{read_manifest(lib).index_description or 'none'}: no lists to probe)"]
    tone(tmp_path / "a" / "y.wav", 3, 500, 1)
    r = run([tmp_path / "a"], lib, nprobe=0)  # 0: the automatic rule, nothing to note
    assert read_manifest(lib).index_nprobe == 0 and not [n for n in r.notes if "--nprobe" in n]


def test_a_new_library_opens_empty_even_when_the_run_dies_before_its_first_file(tmp_path: Path) -> None:
    tone(tmp_path / "a" / "x.wav", 3, 300)

    def dies(*args: Any) -> None:
        raise RuntimeError("the machine lost power")

    lib = tmp_path / "lib"
    with pytest.raises(RuntimeError):
        index_paths([tmp_path / "a"], lib, FakeEncoder(), IndexConfig(), driver=dies)
    assert Library.open(lib).n_tracks == 0


def test_an_unreadable_path_from_the_scan_is_a_failure_of_its_error_class(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tone(tmp_path / "a" / "x.wav", 3, 300)
    hidden = tmp_path / "a" / "locked"
    real = pipeline.scan

    def scan(sources: list[Path]) -> ScanResult:
        found = real(sources)
        found.unreadable.append((hidden, f"PermissionError: [Errno 13] Permission denied: '{hidden}'"))
        return found

    monkeypatch.setattr(pipeline, "scan", scan)
    r = run([tmp_path / "a"], tmp_path / "lib")
    assert (r.added, r.failed) == (1, 1)
    (f,) = r.failures
    assert (f.path, f.error_class) == (str(hidden), "PermissionError")
    assert f.message == f"{hidden}: [Errno 13] Permission denied: '{hidden}'"


def test_tracks_in_a_subfolder_the_scan_cannot_list_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that cannot be listed this time (permissions, a flaky mount) hides its files from the scan:
    they still exist, so their tracks stay."""
    a = tmp_path / "a"
    tone(a / "top.wav", 3, 300)
    inner = [tone(a / "sub" / f"s{i}.wav", 3, 400 + 100 * i, i) for i in range(2)]
    lib = tmp_path / "lib"
    assert run([a], lib).added == 3
    real = pipeline.scan

    def scan(sources: list[Path]) -> ScanResult:
        found = real(sources)
        found.files[:] = [f for f in found.files if f.path.parent != a / "sub"]
        found.unreadable.append((a / "sub", f"PermissionError: [Errno 13] Permission denied: '{a / 'sub'}'"))
        return found

    monkeypatch.setattr(pipeline, "scan", scan)
    r = run([a], lib)
    assert (r.removed, r.unchanged, r.failed) == (0, 1, 1)
    assert sorted(frame_starts(lib)) == sorted(str(p) for p in [a / "top.wav", *inner])


def test_the_failure_record_of_a_deleted_file_goes_and_one_hidden_by_the_scan_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.indexers.ray_helpers import snapshot

    a = tmp_path / "a"
    tone(a / "ok.wav", 3, 300)
    (a / "broken.wav").write_bytes(b"not a wav")
    (a / "sub").mkdir()
    (a / "sub" / "bad.wav").write_bytes(b"not a wav either")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "elsewhere.wav").write_bytes(b"nor this")
    lib = tmp_path / "lib"
    assert run([a], lib).failed == 2
    assert run([tmp_path / "b"], lib, prune=False).failed == 1
    want = {str(a / "broken.wav"), str(a / "sub" / "bad.wav"), str(tmp_path / "b" / "elsewhere.wav")}
    assert set(snapshot(lib).failures) == want
    real = pipeline.scan

    def scan(sources: list[Path]) -> ScanResult:  # sub cannot be listed this time
        found = real(sources)
        found.files[:] = [f for f in found.files if f.path.parent != a / "sub"]
        found.unreadable.append((a / "sub", "PermissionError: [Errno 13] Permission denied"))
        return found

    monkeypatch.setattr(pipeline, "scan", scan)
    (a / "broken.wav").unlink()
    (tmp_path / "b" / "elsewhere.wav").unlink()  # b is no source of this run: its record stays
    run([a], lib)
    assert set(snapshot(lib).failures) == {str(a / "sub" / "bad.wav"), str(tmp_path / "b" / "elsewhere.wav"),
                                           str(a / "sub")}


def test_a_source_folder_that_looks_unmounted_keeps_its_failure_records_too(tmp_path: Path) -> None:
    from tests.indexers.ray_helpers import snapshot

    a, m = tmp_path / "a", tmp_path / "mnt"
    tone(a / "ok.wav", 3, 300)
    m.mkdir()
    (m / "broken.wav").write_bytes(b"not a wav")
    lib = tmp_path / "lib"
    assert run([a, m], lib).failed == 1
    (m / "broken.wav").unlink()  # the drive's folder is empty now: unmounted, as far as a scan can tell
    r = run([a, m], lib)
    assert set(snapshot(lib).failures) == {str(m / "broken.wav")}
    assert run([a, m], lib, prune_empty=True).failed == 0 and snapshot(lib).failures == {}
    assert r.removed == 0


def test_a_file_that_changed_size_but_kept_its_mtime_is_embedded_again(tmp_path: Path) -> None:
    import os

    f = tone(tmp_path / "a" / "x.wav", 3.0, 300)
    lib = tmp_path / "lib"
    run([tmp_path / "a"], lib, window_s=1.0)
    before = os.stat(f)
    tone(f, 5.0, 300)  # a longer take written over it by a tool that keeps file times
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(f).st_mtime_ns == before.st_mtime_ns and os.stat(f).st_size != before.st_size
    r = run([tmp_path / "a"], lib, window_s=1.0)
    assert (r.changed, r.unchanged) == (1, 0)
    assert len(frame_starts(lib)[str(f)]) == 5  # 5 s in 1 s windows


def test_a_known_failure_replaced_with_the_same_size_and_mtime_is_retried(tmp_path: Path) -> None:
    """Size and mtime can come back (a restore keeping file times; a chmod changes neither): the change
    time still moves, so the file is tried again instead of being skipped as a known failure."""
    import os
    import time

    a = tmp_path / "a"
    tone(a / "ok.wav", 3, 300)
    good = tone(tmp_path / "good.wav", 3, 500, 1).read_bytes()
    f = a / "x.wav"
    f.write_bytes(bytes(len(good)))  # garbage of the very same size
    lib = tmp_path / "lib"
    assert run([a], lib).failed == 1
    assert run([a], lib).skipped_failed == 1  # unchanged: skipped
    before = os.stat(f)
    time.sleep(0.05)
    f.write_bytes(good)
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(f).st_size, os.stat(f).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    r = run([a], lib)
    assert (r.added, r.skipped_failed, r.failed) == (1, 0, 0)


def test_retry_failed_tries_a_known_failure_again(tmp_path: Path) -> None:
    a = tmp_path / "a"
    tone(a / "ok.wav", 3, 300)
    (a / "broken.wav").write_bytes(b"not a wav")
    lib = tmp_path / "lib"
    assert run([a], lib).failed == 1
    r = run([a], lib, retry_failed=True)
    assert (r.failed, r.skipped_failed, r.unchanged) == (1, 0, 1)


def test_a_file_that_cannot_be_hashed_is_a_failure_skipped_until_it_changes(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a"
    tone(a / "ok.wav", 3, 300)
    locked = tone(a / "locked.wav", 3, 500, 1)
    real = pipeline.file_sha256

    def sha(path: Path) -> str:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(pipeline, "file_sha256", sha)
    lib = tmp_path / "lib"
    r = run([a], lib)
    assert (r.added, r.failed) == (1, 1)
    assert (r.failures[0].error_class, r.failures[0].message) == (
        "PermissionError", f"{locked}: cannot read the file (Permission denied)")
    r = run([a], lib)
    assert (r.skipped_failed, r.failed) == (1, 0)  # unchanged since: not read again


def test_a_touched_file_keeps_its_track_and_the_library_learns_its_new_mtime(tmp_path: Path) -> None:
    import os

    f = tone(tmp_path / "a" / "x.wav", 3, 300)
    lib = tmp_path / "lib"
    run([tmp_path / "a"], lib)
    os.utime(f, (1_600_000_000.0, 1_600_000_000.0))
    r = run([tmp_path / "a"], lib)
    assert (r.unchanged, r.changed, r.added) == (1, 0, 0)
    assert Library.open(lib).tracks.to_pylist()[0]["mtime"] == os.stat(f).st_mtime == 1_600_000_000.0
