"""A track's stored duration is the decoded length (threads and Ray stages), and a symlink that cannot be
followed is named as one (found on real recordings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songseek.engine.encoders.base import Encoder
from songseek.engine.encoders.fake import FakeEncoder
from songseek.indexers.pipeline import IndexConfig, index_paths
from songseek.indexers.ray_runner import DecodeSpec, EmbedActor, absorb_vectors, decode_task
from songseek.indexers.stages import CommitStage
from tests.audio_helpers import REAL_AUDIO
from tests.library_helpers import library_rows

SR = 16000
pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")


def _tone(path: Path, seconds: float) -> Path:
    t = np.arange(int(round(seconds * SR))) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    return path


def _in_process_ray(commit: CommitStage, encoder: Encoder, window_s: float, hop_s: float,
                    config: IndexConfig) -> None:
    """The Ray driver's decode task and actor, run in this process (no cluster)."""
    spec = DecodeSpec(encoder.info.sample_rate, window_s, hop_s, config.batch_size)
    actor = EmbedActor(lambda device: FakeEncoder(), "cpu", encoder.info)
    for i, job in enumerate(commit.jobs):
        batch = {"job": np.array([i]), "path": np.array([job.path], dtype=object),
                 "size": np.array([job.source.size]), "mtime": np.array([job.source.mtime])}
        for block in decode_task(batch, spec):
            absorb_vectors(commit, actor(block), encoder.info.dim)
        commit.finish_ready()


Driver = Callable[[CommitStage, Encoder, float, float, IndexConfig], None] | None


@pytest.mark.parametrize("driver", [None, _in_process_ray], ids=["threads", "ray-stages"])
@pytest.mark.parametrize(("seconds", "window", "hop"), [(20.5, 10.0, 10.0), (20.5, 10.0, 5.0), (23.0, 2.0, 6.0)])
def test_a_tracks_duration_is_its_length_not_the_end_of_its_last_window(
        tmp_path: Path, seconds: float, window: float, hop: float, driver: Driver) -> None:
    # A 20.5 s file at 10 s windows: its 0.5 s tail is too short to index (windowing.MIN_TAIL_FRACTION), and
    # the tracks table said duration_s=20.0: `--where "duration_s > 20.2"` missed it, `info` under-counted
    # audio hours, and the same file read 20.0 s in one library and 20.5 s in another (other windows).
    # With hop > window, windows leave gaps and the last one can end well before the file does.
    f = _tone(tmp_path / "music" / "a.wav", seconds)
    index_paths([f.parent], tmp_path / "lib", FakeEncoder(), IndexConfig(window_s=window, hop_s=hop),
                driver=driver)
    row = library_rows(tmp_path / "lib")[str(f)]
    assert row["duration_s"] == pytest.approx(seconds, abs=1e-6)


def test_real_recordings_keep_their_length_whatever_the_window(tmp_path: Path) -> None:
    if not REAL_AUDIO.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-data tests skipped")
    src = tmp_path / "music"
    src.mkdir()
    for name in ("sorohanro_-_solo-trumpet-06.ogg", "456440__inspectorj__bird-whistling-robin-single-13.ogg"):
        (src / name).write_bytes((REAL_AUDIO / name).read_bytes())
    lengths = []
    for window in (1.0, 2.5, 5.0):  # at 2.5 and 5 s the tails (0.2 s, 0.3 s) are not indexed
        lib = tmp_path / f"lib{window:g}"
        index_paths([src], lib, FakeEncoder(), IndexConfig(window_s=window, hop_s=window))
        lengths.append({Path(p).name: r["duration_s"] for p, r in library_rows(lib).items()})
    assert lengths[0] == pytest.approx(lengths[1], abs=1e-6) and lengths[1] == pytest.approx(lengths[2], abs=1e-6)


@pytest.mark.parametrize(("name", "target", "reason"), [("dangling.wav", "gone.wav", "No such file or directory"),
                                                         ("self.wav", "self.wav", "Too many levels of symbolic links")])
def test_a_symlink_that_cannot_be_followed_is_named_as_one_with_the_fix(tmp_path: Path, name: str, target: str,
                                                                         reason: str) -> None:
    # `ls` shows the file, and the failure said only "No such file or directory": say it is a link, to what,
    # and what to do about it
    src = tmp_path / "music"
    _tone(src / "ok.wav", 1.0)
    (src / name).symlink_to(target)
    r = index_paths([src], tmp_path / "lib", FakeEncoder(), IndexConfig())
    assert (r.added, r.failed) == (1, 1)
    msg = r.failures[0].message
    assert msg == (f"{src / name}: {reason}: a symbolic link to {target} that cannot be followed; "
                   "fix or remove the link"), msg
