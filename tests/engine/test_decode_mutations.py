"""Truncation checks of WAV against its header, on files written byte by byte here: the header's own length
is read past odd-sized chunks, a streamed header (0xFFFFFFFF) declares nothing, and a decode may end short
by up to max(1 s, 5 %) before it is an error (the decoded samples are compared with the int16 values
written, x / 32768). Bad packets: up to 10, or 5 % of a file's packets, are skipped; more is corrupt, naming
the first, as a plain PyAV loop over the packets finds them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.audio.decode import decode, decode_stream
from songseek.engine.errors import DecodeError, UsageError

RATE = 8000


def _samples(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, int(seconds * RATE)).astype(np.int16)


def _wav(path: Path, x: np.ndarray, declared_bytes: int | None = None, odd_chunk: bool = False) -> Path:
    """A mono 16-bit WAV: RIFF, fmt, optionally a 5-byte LIST chunk (padded to 6), then data whose size field
    says ``declared_bytes`` (default: the bytes written)."""
    data = x.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, 2 * RATE, 2, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if odd_chunk:
        chunks += b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0"
    size = len(data) if declared_bytes is None else declared_bytes
    chunks += b"data" + struct.pack("<I", size) + data
    riff = 0xFFFFFFFF if size == 0xFFFFFFFF else 4 + len(chunks)
    path.write_bytes(b"RIFF" + struct.pack("<I", riff) + b"WAVE" + chunks)
    return path


@pytest.mark.parametrize("odd_chunk", [False, True])
def test_a_whole_wav_decodes_to_its_samples(tmp_path: Path, odd_chunk: bool) -> None:
    x = _samples(3.0)
    audio = decode(_wav(tmp_path / "w.wav", x, odd_chunk=odd_chunk), RATE)
    np.testing.assert_array_equal(audio, x.astype(np.float32) / 32768)


def test_a_wav_cut_short_behind_an_odd_sized_chunk_is_truncated(tmp_path: Path) -> None:
    """The header says 12 s; 6 s of data are there. The LIST chunk before the data is 5 bytes and a pad byte:
    a reader that skips 5 misreads the data chunk's header and finds no length to compare."""
    x = _samples(12.0)
    path = _wav(tmp_path / "cut.wav", x[:6 * RATE], declared_bytes=2 * len(x), odd_chunk=True)
    with pytest.raises(DecodeError, match=r"truncated or corrupt: decoding stopped at 6\.0 s of the 12\.0 s"):
        decode(path, RATE)


def test_a_streamed_wav_that_declares_no_length_decodes_whole(tmp_path: Path) -> None:
    """Writers that stream a WAV cannot know its length and leave 0xFFFFFFFF in the size fields."""
    x = _samples(4.0, seed=1)
    path = _wav(tmp_path / "stream.wav", x, declared_bytes=0xFFFFFFFF)
    audio = np.concatenate(list(decode_stream(path, RATE)))
    np.testing.assert_array_equal(audio, x.astype(np.float32) / 32768)


@pytest.mark.parametrize(("seconds", "present", "ok"), [
    (12.0, 11.05, True),   # 0.95 s short: under the 1 s floor
    (12.0, 10.9, False),   # 1.1 s short: over max(1 s, 0.6 s)
    (40.0, 38.1, True),    # 1.9 s short: under 5 % (2 s)
    (40.0, 37.8, False),   # 2.2 s short: over 5 %
])
def test_a_wav_may_end_short_by_max_of_a_second_and_5_percent(tmp_path: Path, seconds: float, present: float,
                                                               ok: bool) -> None:
    x = _samples(seconds, seed=2)
    n = int(present * RATE)
    path = _wav(tmp_path / "short.wav", x[:n], declared_bytes=2 * len(x))
    if ok:
        np.testing.assert_array_equal(decode(path, RATE), x[:n].astype(np.float32) / 32768)
    else:
        with pytest.raises(DecodeError, match=f"stopped at {present:.1f} s of the {seconds:.1f} s"):
            decode(path, RATE)


def _damaged_m4a(path: Path, seconds: float, spots: int) -> tuple[int, int, float]:
    """An AAC-in-MP4 sweep with ``spots`` runs of 40 random bytes over its middle 60 %; returns what a plain
    PyAV loop finds: (packets, packets that fail to decode, time of the first that fails)."""
    import av

    from tests.audio_helpers import sweep, write_audio

    write_audio(path, np.stack([sweep(seconds, 44_100)] * 2), 44_100)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for at in np.linspace(len(data) * 0.2, len(data) * 0.8, spots).astype(int):
        data[at:at + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    packets = bad = 0
    first = -1.0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.audio[0]):
            packets += bool(packet.size or packet.dts is not None)
            try:
                packet.decode()
            except av.error.FFmpegError:
                bad += 1
                first = float(packet.pts * packet.time_base) if first < 0 else first  # type: ignore[operator]
    return packets, bad, first


def test_up_to_ten_bad_packets_are_skipped_even_in_a_short_file(tmp_path: Path) -> None:
    packets, bad, _ = _damaged_m4a(tmp_path / "short.m4a", 2.0, 8)
    assert 0.05 * packets < bad <= 10  # over 5 %, but no more than 10: skipped
    assert 1.5 < len(decode(tmp_path / "short.m4a", RATE)) / RATE < 2.1


def test_over_five_percent_bad_packets_is_corrupt_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "long.m4a"
    packets, bad, first = _damaged_m4a(path, 20.0, 80)
    assert 10 < bad and 0.05 * packets < bad < 0.5 * packets and first > 1.0
    with pytest.raises(DecodeError, match=f"corrupt: {bad} of {packets} packets fail to decode") as exc:
        decode(path, RATE)
    said = float(str(exc.value).split("the first at ")[1].split(" s")[0])
    assert abs(said - first) <= 0.1


def test_an_empty_segment_is_a_bad_segment_not_one_past_the_end(tmp_path: Path) -> None:
    path = _wav(tmp_path / "w.wav", _samples(3.0))
    with pytest.raises(UsageError, match=r"bad segment start_s=1\.0, end_s=1\.0: need 0 <= start < end"):
        decode(path, RATE, 1.0, 1.0)
    np.testing.assert_array_equal(decode(path, RATE, 1.0, 1.0 + 1 / RATE), _samples(3.0)[RATE:RATE + 1] / 32768)


def test_stream_blocks_are_rounded_not_cut_to_whole_samples(tmp_path: Path) -> None:
    x = _samples(0.5, seed=4)
    blocks = list(decode_stream(_wav(tmp_path / "w.wav", x), RATE, block_s=0.0011))  # 8.8 samples: 9
    assert {len(b) for b in blocks[:-1]} == {9} and len(blocks[-1]) == len(x) % 9
    np.testing.assert_array_equal(np.concatenate(blocks), x.astype(np.float32) / 32768)


def test_a_wav_with_no_samples_is_undecodable_not_an_empty_segment(tmp_path: Path) -> None:
    path = _wav(tmp_path / "empty.wav", np.zeros(0, np.int16))
    with pytest.raises(DecodeError, match="no decodable audio in the file"):
        decode(path, RATE)
    with pytest.raises(DecodeError, match="no decodable audio in the file"):
        list(decode_stream(path, RATE))


@pytest.mark.parametrize("start_s", [0.50007, 1.23459, 2.0001])
def test_a_seek_starts_at_the_sample_nearest_start_s(tmp_path: Path, start_s: float) -> None:
    """start_s·rate is not a whole sample: the segment starts at round(start_s·rate), as plain slicing of
    the whole file would (the fallback path for files without timestamps does exactly that)."""
    x = _samples(3.0, seed=5)
    path = _wav(tmp_path / "w.wav", x)
    first = int(round(start_s * RATE))
    assert first == int(start_s * RATE) + 1  # rounding up: a cut that truncates starts one sample early
    np.testing.assert_array_equal(decode(path, RATE, start_s), x[first:].astype(np.float32) / 32768)


def test_a_last_stream_block_of_one_sample_is_kept(tmp_path: Path) -> None:
    x = _samples(0.5, seed=6)[:4 * 100 + 1]  # four blocks of 100 samples and one sample over
    blocks = list(decode_stream(_wav(tmp_path / "w.wav", x), RATE, block_s=100 / RATE))
    assert [len(b) for b in blocks] == [100, 100, 100, 100, 1]
    np.testing.assert_array_equal(np.concatenate(blocks), x.astype(np.float32) / 32768)


def test_a_sample_rate_change_mid_stream_resamples_each_part_at_its_own_rate() -> None:
    """A stream that changes rate (8 kHz, then 16 kHz) to 16 kHz: the 8 kHz part is doubled in length by its
    own resampler (flushed at the change), the 16 kHz part passes through sample for sample."""
    import soxr

    from songseek.engine.audio.decode import _resampled

    rng = np.random.default_rng(7)
    t = np.arange(4000) / 8000
    low = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 0.5 s at 8 kHz, under one soxr chunk
    high = rng.uniform(-0.5, 0.5, 3000).astype(np.float32)
    out = np.concatenate(list(_resampled(iter([(low, 8000), (high, 16000)]), 16000)))
    want_low = soxr.resample(low, 8000, 16000, quality="HQ")
    assert len(out) == len(want_low) + len(high) == 2 * len(low) + len(high)
    np.testing.assert_array_equal(out[len(want_low):], high)
    np.testing.assert_allclose(out[:len(want_low)], want_low, atol=1e-3)
