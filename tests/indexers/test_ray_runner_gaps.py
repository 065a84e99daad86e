"""indexers/ray_runner.py: the memory a decode task declares to Ray (a mutation sweep left its arithmetic
open). Through the public driver (ray_driver under index_paths, on the session's local Ray): the decode
stage asks for two blocks of ``batch_size`` float32 windows plus the worker's own 192 MiB, counted here
from the arrays' sizes, and the run still indexes every file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from songseek.engine.encoders.fake import FakeEncoder
from songseek.indexers.pipeline import IndexConfig, index_paths
from songseek.indexers.ray_runner import EncoderSpec, RayOptions, ray_driver
from tests.indexers.ray_helpers import assert_same_library, make_music

WORKER_BYTES = 192 * 1024 * 1024  # a Python worker with PyAV, numpy and pyarrow loaded (ray_runner's figure)


def _naive_decode_bytes(window_s: float, sample_rate: int, rows: int) -> int:
    """Two blocks of ``rows`` windows (one being filled, one going out) of float32 samples, plus the worker."""
    window = np.zeros(int(np.floor(window_s * sample_rate + 0.5)), np.float32)  # a window's samples, rounded
    block = np.zeros((rows, len(window)), np.float32)
    return block.nbytes + block.nbytes + WORKER_BYTES


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize(("window_s", "hop_s", "rows"), [(4.0, 2.0, 3), (2.00004, 1.0, 5)])
def test_the_decode_stage_declares_two_blocks_of_windows_and_the_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window_s: float, hop_s: float, rows: int) -> None:
    import ray.data

    asked: list[dict[str, Any]] = []
    real = ray.data.Dataset.map_batches

    def recording(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append({"fn": getattr(fn, "__name__", ""), **kwargs})
        return real(self, fn, *args, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "map_batches", recording)
    src = tmp_path / "music"
    make_music(src, [5.0, 9.0], seed=int(window_s * rows))
    config = IndexConfig(window_s=window_s, hop_s=hop_s, batch_size=rows, commit_every_files=1)
    r = index_paths([src], tmp_path / "ray", FakeEncoder(), config,
                    driver=ray_driver(EncoderSpec("fake"), RayOptions(workers=1)))
    assert (r.added, r.failed) == (2, 0)
    decode = [a for a in asked if a["fn"] == "decode_task"]
    assert len(decode) == 1
    sample_rate = FakeEncoder().info.sample_rate
    assert decode[0]["memory"] == _naive_decode_bytes(window_s, sample_rate, rows)
    index_paths([src], tmp_path / "local", FakeEncoder(), config)
    assert_same_library(tmp_path / "ray", tmp_path / "local")
