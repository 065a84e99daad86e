"""`bench index-speed --ray` on a few short files with the fake encoder: both sides index every window and
build equal libraries; the figures are consistent with each other (the times themselves are not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from songseek.benchmarks import ray_speed
from songseek.benchmarks.ray_speed import run_ray_index_speed
from songseek.engine.encoders.fake import FakeEncoder
from songseek.indexers.ray_runner import EncoderSpec, RayOptions
from tests.indexers.ray_helpers import make_music


@pytest.mark.usefixtures("ray_cluster")
def test_ray_index_speed_reports_both_sides_on_the_same_windows(tmp_path: Path) -> None:
    make_music(tmp_path / "music", [12.0, 5.0, 21.0])
    r = run_ray_index_speed([tmp_path / "music"], FakeEncoder(), EncoderSpec("fake"), RayOptions(workers=1),
                            batch_size=4, window_s=5.0, work=tmp_path)
    assert (r.files, r.windows) == (3, 3 + 1 + 5)          # ceil(seconds / window) per file
    assert r.same_tracks_and_frames and r.cluster_cpus == 2.0 and r.ray_address == "local"
    assert r.ratio == pytest.approx(r.threads_s / r.ray_s)
    assert r.ray_windows_per_s == pytest.approx(r.windows / r.ray_s)
    assert r.threads_windows_per_s == pytest.approx(r.windows / r.threads_s)


@pytest.mark.usefixtures("ray_cluster")
def test_a_ray_the_benchmark_started_is_shut_down_when_it_returns(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_music(tmp_path / "music", [5.0])
    calls: list[str] = []

    def connect(address: str) -> bool:  # as if the call started Ray (the session's runs in this process)
        calls.append("connect")
        return True

    monkeypatch.setattr(ray_speed, "connect", connect)
    monkeypatch.setattr(ray_speed, "disconnect", lambda: calls.append("disconnect"))
    run_ray_index_speed([tmp_path / "music"], FakeEncoder(), EncoderSpec("fake"), RayOptions(workers=1),
                        batch_size=4, window_s=5.0, work=tmp_path)
    assert calls == ["connect", "disconnect"]
