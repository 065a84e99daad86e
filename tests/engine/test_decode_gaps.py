"""engine/audio/decode.py: the pre-roll before a seek (a mutation sweep left it open). A decode from
``start_s`` of a compressed file gives exactly the samples a full decode has from that offset: MP3's bit
reservoir and overlapped transform (and Opus's) need the frames before the seek point, which the pre-roll
decodes and drops. Without it the first frames after the seek come out wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.audio.decode import decode
from tests.audio_helpers import sweep, write_audio


@pytest.mark.parametrize(("ext", "sample_rate"), [("mp3", 44_100), ("opus", 48_000)])
def test_a_seeked_decode_equals_the_full_decode_from_that_offset(tmp_path: Path, ext: str,
                                                                   sample_rate: int) -> None:
    rng = np.random.default_rng(11)
    seconds = 6.0
    x = 0.4 * sweep(seconds, sample_rate) + 0.05 * rng.standard_normal(int(seconds * sample_rate))
    path = write_audio(tmp_path / f"t.{ext}", x.astype(np.float32), sample_rate)
    full = decode(path, sample_rate)  # the naive reference: decode everything, then slice
    for start_s in (1.3, 2.71, 4.0, float(rng.uniform(0.6, 5.0))):
        part = decode(path, sample_rate, start_s)
        first = int(round(start_s * sample_rate))
        assert len(part) == len(full) - first, (ext, start_s)
        np.testing.assert_array_equal(part, full[first:], err_msg=f"{ext} from {start_s} s")
        bounded = decode(path, sample_rate, start_s, start_s + 0.25)
        np.testing.assert_array_equal(bounded, full[first:first + int(round(0.25 * sample_rate))])
