"""End to end on synthesised audio with the deterministic fake encoder: index, search, re-index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.query.search import Library
from songseek.indexers.pipeline import IndexConfig, index_paths
from tests.audio_helpers import tone_track, write_wav


@pytest.fixture
def music(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    write_wav(root / "a" / "low.wav", tone_track([110, 110, 110], 10, 0))
    write_wav(root / "a" / "mid.wav", tone_track([440, 440], 10, 1))
    write_wav(root / "b" / "high then low.wav", tone_track([3000, 3000, 3000, 110, 3000], 10, 2))
    write_wav(root / "b" / "short.wav", tone_track([880], 3.5, 3))
    return root


def test_index_then_search_by_audio_finds_the_section(music: Path, tmp_path: Path) -> None:
    lib_dir = tmp_path / "lib"
    report = index_paths([music], lib_dir, FakeEncoder(), IndexConfig(window_s=10, batch_size=3))
    assert (report.added, report.failed) == (4, 0)
    assert report.windows == 3 + 2 + 5 + 1
    lib = Library.open(lib_dir, encoder=FakeEncoder())
    assert lib.n_tracks == 4
    # Frames carry exact start/end seconds; the short track is one padded window of its real length.
    rows = {Path(r["path"]).name: r for r in lib.tracks.to_pylist()}
    short = rows["short.wav"]
    assert short["frame_count"] == 1 and short["duration_s"] == pytest.approx(3.5)
    starts = lib.store.start_s[rows["high then low.wav"]["frame_start"]:][:5]
    np.testing.assert_allclose(starts, [0, 10, 20, 30, 40])
    # A 110 Hz query finds the low track first, and in the mixed track the 30-40 s section.
    hits = lib.search(audio=tone_track([110], 10, 9), k=4, rerank="max")
    assert Path(hits[0].path).name == "low.wav"
    mixed = next(h for h in hits if Path(h.path).name == "high then low.wav")
    assert (mixed.segment.start_s, mixed.segment.end_s) == (30.0, 40.0)


def test_second_run_embeds_nothing_and_new_files_are_added(music: Path, tmp_path: Path) -> None:
    lib_dir = tmp_path / "lib"
    index_paths([music], lib_dir, FakeEncoder(), IndexConfig())
    again = index_paths([music], lib_dir, FakeEncoder(), IndexConfig())
    assert (again.added, again.unchanged, again.windows) == (0, 4, 0)
    write_wav(music / "c" / "new.wav", tone_track([220], 12, 5))
    third = index_paths([music], lib_dir, FakeEncoder(), IndexConfig())
    assert (third.added, third.unchanged) == (1, 4)
    assert Library.open(lib_dir).n_tracks == 5


def test_vectors_are_identical_across_batch_sizes(music: Path, tmp_path: Path) -> None:
    a = index_paths([music], tmp_path / "a", FakeEncoder(), IndexConfig(batch_size=1, workers=1))
    b = index_paths([music], tmp_path / "b", FakeEncoder(), IndexConfig(batch_size=7, workers=2))
    assert a.windows == b.windows
    la, lb = Library.open(tmp_path / "a"), Library.open(tmp_path / "b")
    for ra, rb in zip(la.tracks.to_pylist(), lb.tracks.to_pylist()):
        assert ra["track_id"] == rb["track_id"]
        np.testing.assert_allclose(la.store.vectors(ra["frame_start"], ra["frame_count"]),
                                   lb.store.vectors(rb["frame_start"], rb["frame_count"]), atol=1e-6)


def test_index_saves_nprobe_and_refuses_a_negative_one_before_writing(music: Path, tmp_path: Path) -> None:
    from songseek.engine.errors import UsageError
    from songseek.engine.storage.manifest import read_manifest

    lib = tmp_path / "lib"
    with pytest.raises(UsageError, match="nprobe must be 0"):
        index_paths([music], lib, FakeEncoder(), IndexConfig(nprobe=-1))
    assert not lib.exists()
    index_paths([music], lib, FakeEncoder(), IndexConfig(nprobe=12))
    assert read_manifest(lib).index_nprobe == 12
    index_paths([music], lib, FakeEncoder(), IndexConfig())  # not given: kept
    assert read_manifest(lib).index_nprobe == 12
    index_paths([music], lib, FakeEncoder(), IndexConfig(nprobe=0))
    assert read_manifest(lib).index_nprobe == 0


def test_check_unchanged_and_checked_windows_refuse_changed_or_empty_files(tmp_path: Path) -> None:
    from songseek.engine.errors import SongseekError
    from songseek.indexers.sources import SourceFile
    from songseek.indexers.stages import FileChangedError, check_unchanged, checked_windows

    p = tmp_path / "a.wav"
    p.write_bytes(b"x" * 10)
    st = p.stat()
    check_unchanged(p, st.st_size, st.st_mtime)
    for size, mtime in ((st.st_size + 1, st.st_mtime), (st.st_size, st.st_mtime + 1.0)):
        with pytest.raises(FileChangedError):
            check_unchanged(p, size, mtime)
    with pytest.raises(SongseekError, match="no audio samples"):
        list(checked_windows(SourceFile(p, st.st_size, st.st_mtime), iter([])))


def test_commit_stage_keeps_first_entries_counts_once_and_reports_totals(tmp_path: Path) -> None:
    """Retried windows and vectors (a Ray task run twice) neither overwrite nor count twice; a job is added
    only once every window has its vector; a failure reported twice counts once."""
    from types import SimpleNamespace

    from songseek.indexers.sources import SourceFile
    from songseek.indexers.stages import CommitStage, FileJob, IndexReport

    added: list = []
    failures: list = []
    writer = SimpleNamespace(tracks={}, add_track=lambda rec, v, s, e: added.append((rec, v, s, e)),
                             commit=lambda: None, record_failure=failures.append)
    progress = SimpleNamespace(advance=lambda **kw: None)
    jobs = [FileJob(SourceFile(tmp_path / f"{i}.wav", 10, 1.0), f"{i:064x}", "added") for i in range(2)]
    report = IndexReport()
    stage = CommitStage(writer, jobs, report, progress, 100, 1e9)  # type: ignore[arg-type]
    v0, v1 = np.ones(4, np.float32), np.full(4, 2.0, np.float32)
    stage.window(0, 0, 0.0, 10.0)
    stage.window(0, 0, 99.0, 99.0)  # retried: the first entry stays
    stage.vector(0, 0, v0)
    stage.vector(0, 0, v0)  # retried vector: still one of the two windows embedded
    stage.window(0, 1, 10.0, 15.5)
    stage.decoded(0, 2)
    stage.finish_ready()
    assert added == [] and stage.next_job == 0
    stage.vector(0, 1, v1)
    stage.finish_ready()
    assert len(added) == 1 and stage.next_job == 1
    rec, vecs, starts, ends = added[0]
    np.testing.assert_array_equal(vecs, np.stack([v0, v1]))
    assert starts.tolist() == [0.0, 10.0] and ends.tolist() == [10.0, 15.5] and rec.duration_s == 15.5
    assert (report.added, report.windows, report.audio_s) == (1, 2, 15.5)
    stage.fail(1, "DecodeError", "bad")
    stage.fail(1, "DecodeError", "bad again")
    stage.finish_ready()
    assert (report.failed, len(failures), len(report.failures)) == (1, 1, 1) and stage.all_done
