"""Decoding: every format PyAV writes, 8-192 kHz, 1-8 channels, segments, timestamps, broken files."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import tracemalloc
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
import soxr

from songseek.engine.audio.decode import AUDIO_EXTENSIONS, AudioInfo, decode, decode_stream, probe
from songseek.engine.audio.windowing import iter_windows, window_bounds
from songseek.engine.errors import DecodeError, UsageError
from tests.audio_helpers import (
    Marker,
    best_lag,
    real_audio,
    require_real_audio,
    sine,
    sweep,
    with_markers,
    write_audio,
)

SR = 48_000
# extension -> (codec name probe reports, source rate, lossless)
FORMAT_CASES = {
    "wav": ("pcm_s16le", 44_100, True),
    "flac": ("flac", 44_100, True),
    "aiff": ("pcm_s16be", 44_100, True),
    "mp3": ("mp3", 44_100, False),
    "ogg": ("vorbis", 44_100, False),
    "opus": ("opus", 48_000, False),
    "m4a": ("aac", 44_100, False),
    "webm": ("opus", 48_000, False),
}


def _stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x])


def _reference(x: np.ndarray, rate: int, out_rate: int = SR) -> np.ndarray:
    return x if rate == out_rate else soxr.resample(x, rate, out_rate, "HQ").astype(np.float32)


def test_audio_extensions():
    assert AUDIO_EXTENSIONS == frozenset({".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4",
                                          ".wav", ".aif", ".aiff", ".aifc", ".wma", ".webm", ".mka", ".mkv",
                                          ".wv"})


@pytest.mark.parametrize("ext", list(FORMAT_CASES))
def test_format_roundtrip(tmp_path, ext):
    codec, rate, lossless = FORMAT_CASES[ext]
    source = sweep(3.0, rate, 200, 4000)
    path = write_audio(tmp_path / f"sweep.{ext}", _stereo(source), rate)
    info = probe(path)
    assert isinstance(info, AudioInfo)
    assert (info.sample_rate, info.channels, info.codec) == (rate, 2, codec)
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    audio = decode(path, SR)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(3 * SR, abs=0.05 * SR)
    lag, corr = best_lag(_reference(source, rate), audio, max_lag=96)
    assert abs(lag) <= (0 if lossless else 48)  # lossy codecs: aligned within 1 ms
    assert corr > (0.9999 if lossless else 0.98)


@pytest.mark.parametrize(("ext", "codec"), [("wma", "wmav2"), ("aac", "aac")])
def test_containerless_and_legacy_formats(tmp_path, ext, codec):
    """Raw ADTS AAC keeps the encoder's ~23 ms priming (no edit list says to drop it) and FFmpeg's WMA
    round trip shifts by ~46 ms: content and length are right, timestamps are good to 60 ms only."""
    source = sweep(3.0, 44_100, 200, 4000)
    path = write_audio(tmp_path / f"legacy.{ext}", _stereo(source), 44_100)
    info = probe(path)
    assert (info.codec, info.channels, info.sample_rate) == (codec, 2, 44_100)
    audio = decode(path, SR)
    assert len(audio) == pytest.approx(3 * SR, abs=0.1 * SR)
    lag, corr = best_lag(_reference(source, 44_100), audio, max_lag=int(0.06 * SR))
    assert abs(lag) < 0.06 * SR and corr > 0.98


@pytest.mark.parametrize(("source_rate", "out_rate"),
                         [(8_000, 48_000), (192_000, 48_000), (48_000, 8_000), (48_000, 16_000),
                          (44_100, 192_000), (22_050, 22_050)])
@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_sample_rates(tmp_path, ext, source_rate, out_rate):
    freq = 1_000.0
    path = write_audio(tmp_path / f"tone.{ext}", sine(2.0, source_rate, freq, amp=0.5), source_rate)
    assert probe(path).sample_rate == source_rate
    audio = decode(path, out_rate)
    assert abs(len(audio) - 2 * out_rate) <= 2
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = np.argmax(spectrum) * out_rate / len(audio)
    assert peak_hz == pytest.approx(freq, abs=1.0)
    rms = float(np.sqrt(np.mean(audio[out_rate // 10:-out_rate // 10] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("ext", "channels"),
                         [("wav", 1), ("wav", 2), ("wav", 6), ("wav", 8), ("flac", 6), ("flac", 8),
                          ("aiff", 8), ("opus", 6), ("opus", 8), ("m4a", 6)])
def test_channels_are_averaged(tmp_path, ext, channels):
    rate = 48_000
    rng = np.random.default_rng(channels)
    amps = rng.uniform(0.05, 0.2, size=channels)
    freqs = rng.choice([300.0, 500.0, 700.0, 1100.0], size=channels)
    x = np.stack([sine(1.5, rate, f, a) for f, a in zip(freqs, amps, strict=True)])
    path = write_audio(tmp_path / f"multi.{ext}", x, rate)
    assert probe(path).channels == channels
    audio = decode(path, rate)  # no resampling: compare with the mean of the channels directly
    expected = x.mean(axis=0)
    if FORMAT_CASES[ext][2]:
        assert len(audio) == len(expected)
        np.testing.assert_allclose(audio, expected, atol=2e-4)
    else:
        lag, corr = best_lag(expected, audio, max_lag=96)
        assert abs(lag) <= 48 and corr > 0.97


def test_decode_stream_blocks_are_exact(tmp_path):
    path = write_audio(tmp_path / "a.flac", sweep(3.0, 44_100), 44_100)
    blocks = list(decode_stream(path, SR, block_s=0.37))
    block_n = round(0.37 * SR)
    assert all(len(b) == block_n for b in blocks[:-1]) and 0 < len(blocks[-1]) <= block_n
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), decode(path, SR))


def _write_long_wav(path: Path, minutes: float, rate: int) -> int:
    n = int(minutes * 60 * rate)
    chunk = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(rate * 10) / rate)).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        for _ in range(n // (rate * 10)):
            w.writeframes(chunk)
    return n


def test_long_file_streams_with_flat_memory(tmp_path):
    """20 minutes decode in bounded blocks; traced allocations stay far below the decoded size."""
    path = tmp_path / "long.wav"
    n_in = _write_long_wav(path, 20, 8_000)
    out_rate, block_s = 16_000, 30.0
    tracemalloc.start()
    try:
        total = 0
        for block in decode_stream(path, out_rate, block_s=block_s):
            assert len(block) <= block_s * out_rate * 1.1 + 16
            total += len(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(total - 2 * n_in) <= 4
    decoded_bytes = total * 4
    assert peak < 40e6 < decoded_bytes  # the 77 MB of output was never held at once


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg", "opus", "m4a", "webm", "wma", "aac"])
def test_segment_matches_stream(tmp_path, ext):
    rate = FORMAT_CASES[ext][1] if ext in FORMAT_CASES else 44_100
    path = write_audio(tmp_path / f"s.{ext}", _stereo(sweep(12.0, rate, 100, 6000)), rate)
    full = np.concatenate(list(decode_stream(path, SR)))
    for start, end in [(4.25, 7.5), (0.2, 1.0), (9.0, 11.9)]:
        seg = decode(path, SR, start, end)
        ref = full[round(start * SR):round(end * SR)]
        assert len(seg) == len(ref)
        lag, corr = best_lag(ref, seg, max_lag=96)
        if ext in ("webm", "wma"):  # Matroska and ASF timestamps are in whole milliseconds
            assert abs(lag) <= 48 and corr > 0.98
        else:
            assert lag == 0
            np.testing.assert_allclose(seg[500:-500], ref[500:-500], atol=1e-3)


def test_segment_arguments(tmp_path):
    path = write_audio(tmp_path / "s.wav", sine(3.0, SR), SR)
    assert len(decode(path, SR, 2.0, 10.0)) == SR  # past the end: what there is
    assert len(decode(path, SR, 1.0)) == 2 * SR
    for start, end in [(5.0, None), (-1.0, 2.0), (2.0, 2.0), (2.0, 1.0)]:
        with pytest.raises(UsageError):
            decode(path, SR, start, end)
    with pytest.raises(UsageError, match="past the end of the audio"):
        decode(path, SR, 5.0, 6.0)
    # under half a sample: no sample to give, though the segment starts inside the audio (it read "past the end")
    with pytest.raises(UsageError, match=f"the segment 1-1.00001 s holds no whole sample at {SR} Hz"):
        decode(path, SR, 1.0, 1.0 + 0.4 / SR)
    assert len(decode(path, SR, 1.0, 1.0 + 0.6 / SR)) == 1  # half a sample or more rounds to one
    with pytest.raises(UsageError):
        decode(path, 0)
    with pytest.raises(UsageError):
        decode_stream(path, SR, block_s=0)


def test_nan_inf_and_overs_are_cleaned(tmp_path):
    x = sine(0.5, SR, 440, 0.5)
    x[100], x[200], x[300], x[400], x[500] = np.nan, np.inf, -np.inf, 1.5, -3.0
    path = write_audio(tmp_path / "f.wav", x, SR, codec="pcm_f32le")
    audio = decode(path, SR)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert audio[100] == audio[200] == audio[300] == 0.0
    assert (audio[400], audio[500]) == (1.0, -1.0)
    np.testing.assert_array_equal(audio[600:], x[600:])
    resampled = decode(path, 16_000)  # the resampler must not spread NaN
    assert np.isfinite(resampled).all() and np.abs(resampled).max() <= 1.0


def _matched_peaks(window: np.ndarray, template: np.ndarray, threshold: float) -> list[int]:
    """Sample offsets where ``template`` best matches ``window`` (local maxima of the correlation)."""
    n = len(window) + len(template)
    last = len(window) - len(template) + 1  # whole bursts only
    corr = np.fft.irfft(np.fft.rfft(window, n) * np.conj(np.fft.rfft(template, n)), n)[:last]
    corr /= float(template @ template)
    peaks = []
    i = 0
    while i < len(corr):
        if corr[i] > threshold:
            j = min(len(corr), i + len(template))
            peaks.append(i + int(np.argmax(corr[i:j])))
            i = j
        else:
            i += 1
    return peaks


@pytest.mark.parametrize("ext", ["wav", "mp3", "ogg", "m4a"])
def test_window_timestamps_on_real_codecs(tmp_path, ext):
    """Tone bursts at known times are found at (t - start) in each 10 s window (5 s hop) of the decoded file."""
    rate = 44_100
    rng = np.random.default_rng(7)
    times = np.sort(rng.uniform(0.1, 23.0, size=10))
    times = times[np.concatenate([[True], np.diff(times) > 0.2])]
    times = times[(times % 5.0 > 0.1) & (times % 5.0 < 4.9)]  # no burst straddles a window edge
    assert len(times) >= 5
    markers = [Marker(float(t), freq_hz=2_000.0, length_s=0.05) for t in times]
    x = with_markers(24.0, rate, markers)
    path = write_audio(tmp_path / f"m.{ext}", _stereo(x), rate)
    template = with_markers(0.05, SR, [Marker(0.0, 2_000.0, 0.05)])
    tolerance = 4  # samples at 48 kHz (measured: within 1 sample for PCM, MP3, Vorbis and AAC alike)
    seen = 0
    windows = list(iter_windows(decode_stream(path, SR, block_s=7.0), SR, 10.0, 5.0, pad="zero"))
    bounds = np.array([(s, e) for _, s, e in windows])
    np.testing.assert_allclose(bounds, window_bounds(bounds[-1, 1], 10.0, 5.0))
    assert bounds[-1, 0] == 15.0 and bounds[-1, 1] == pytest.approx(24.0, abs=0.05)  # the tail is kept
    for samples, start, end in windows:
        expected = [round((t - start) * SR) for t in times if start <= t and t + 0.05 <= end]
        found = _matched_peaks(samples, template, threshold=0.5)
        assert len(found) == len(expected), (start, found, expected)
        for f, e in zip(found, expected, strict=True):
            assert abs(f - e) <= tolerance
        seen += len(found)
    assert seen >= len(times)


# ---------------------------------------------------------------- real recordings (../shared/data)

README_LENGTHS = {
    "Kevin_MacLeod_-_Vibe_Ace": 61.5,
    "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy": 119.9,
    "Karissa_Hobbs_-_Lets_Go_Fishin": 133.0,
    "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra)": 45.8,
    "sorohanro_-_solo-trumpet-06": 5.3,
}


def test_real_files_probe_and_decode():
    require_real_audio()
    for stem, length in README_LENGTHS.items():
        info = probe(real_audio(stem))
        assert info.duration_s == pytest.approx(length, abs=0.06), stem
        assert info.codec == "vorbis" and info.sample_rate == 44_100 and info.channels == 2
    for stem in ["Kevin_MacLeod_-_Vibe_Ace", "sorohanro_-_solo-trumpet-06"]:
        path = real_audio(stem)
        audio = decode(path, SR)
        assert len(audio) == pytest.approx(probe(path).duration_s * SR, abs=2)
        assert 0.01 < float(np.sqrt(np.mean(audio**2))) < 0.5 and np.abs(audio).max() <= 1.0
    speech = probe(real_audio("198-209-0000"))
    assert (speech.sample_rate, speech.channels) == (16_000, 1)


# ---------------------------------------------------------------- broken inputs


def _one_line_naming(exc: pytest.ExceptionInfo[DecodeError], path: Path, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


def _all_entry_points_fail(path: Path, *words: str) -> None:
    for call in (lambda: probe(path), lambda: decode_stream(path, SR), lambda: decode(path, SR)):
        with pytest.raises(DecodeError) as exc:
            call()
        _one_line_naming(exc, path, *words)


def _png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" + b"\x80" * 12) * 1) + chunk(b"IEND", b""))


def test_missing_directory_empty_text_image(tmp_path):
    _all_entry_points_fail(tmp_path / "nope.mp3", "no such file")
    _all_entry_points_fail(tmp_path, "directory")
    empty = tmp_path / "empty.mp3"
    empty.touch()
    _all_entry_points_fail(empty, "empty file")
    text = tmp_path / "notes.mp3"
    text.write_text("these are my notes, not an mp3\n" * 40)
    _all_entry_points_fail(text, "not readable as audio")
    image = tmp_path / "cover.mp3"
    image.write_bytes(_png_bytes())
    _all_entry_points_fail(image, "no audio stream")


def test_truncated_files(tmp_path):
    x = _stereo(sweep(12.0, 44_100))
    flac = write_audio(tmp_path / "t.flac", x, 44_100)
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with pytest.raises(DecodeError) as exc:  # FLAC declares its length: a short decode is an error
        decode(flac, SR)
    _one_line_naming(exc, flac, "truncated", "of the 12.0 s")
    with pytest.raises(DecodeError):
        list(decode_stream(flac, SR))
    m4a = write_audio(tmp_path / "t.m4a", x, 44_100)  # the index (moov) is at the end: cannot open
    m4a.write_bytes(m4a.read_bytes()[: m4a.stat().st_size // 2])
    _all_entry_points_fail(m4a, "truncated")
    # WAV and AIFF: FFmpeg caps a WAV's declared length at the bytes present (not an AIFF's); decode reads the
    # header itself, which still says 12 s, for both
    for ext in ("wav", "aiff"):
        cut = write_audio(tmp_path / f"t.{ext}", x, 44_100)
        whole = len(decode(cut, SR))
        cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 4])
        with pytest.raises(DecodeError) as exc:
            decode(cut, SR)
        _one_line_naming(exc, cut, "truncated", "of the 12.0 s")
        assert whole == pytest.approx(12 * SR, abs=2)  # the whole file decoded without a complaint
    mp3 = write_audio(tmp_path / "t.mp3", x, 44_100)  # MP3 carries no exact length: decodes what is there
    mp3.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    assert len(decode(mp3, SR)) == pytest.approx(6 * SR, rel=0.05)


def test_garbage_after_the_header_is_corrupt(tmp_path):
    path = write_audio(tmp_path / "g.flac", _stereo(sweep(20.0, 44_100)), 44_100)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 10
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError) as exc:
        decode(path, SR)
    _one_line_naming(exc, path, "corrupt")


def test_damaged_and_truncated_copies_of_a_real_ogg(tmp_path):
    require_real_audio()
    original = real_audio("Kevin_MacLeod_-_Vibe_Ace")
    data = original.read_bytes()
    head = tmp_path / "head.ogg"
    head.write_bytes(data[:3000])  # headers only
    _all_entry_points_fail(head, "not readable as audio")
    half = tmp_path / "half.ogg"  # Ogg's length comes from its last page: a cut file is just shorter
    half.write_bytes(data[: len(data) // 2])
    audio = decode(half, SR)
    assert len(audio) == pytest.approx(probe(half).duration_s * SR, abs=2)
    assert 20 * SR < len(audio) < 40 * SR
    damaged = bytearray(data)  # 20 kB of noise in the middle: those pages are skipped, the rest decodes
    mid = len(data) // 2
    damaged[mid:mid + 20_000] = np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.ogg"
    path.write_bytes(bytes(damaged))
    assert len(decode(path, SR)) / SR == pytest.approx(61.46, rel=0.05)
    assert original.read_bytes() == data


def test_unreadable_file():
    """Root reads anything, so as root the check runs in a forked child that drops to user nobody."""
    if not hasattr(os, "geteuid") or not hasattr(os, "fork"):
        pytest.skip("no POSIX permissions on this platform")
    folder = Path(tempfile.mkdtemp(prefix="songseek-perm-"))
    try:
        os.chmod(folder, 0o755)
        path = write_audio(folder / "locked.wav", sine(0.5, SR), SR)
        os.chmod(path, 0)
        if os.geteuid() != 0:
            _all_entry_points_fail(path, "permission denied")
            return
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            try:
                os.close(read_end)
                os.setgid(65534)
                os.setuid(65534)
                lines = []
                for call in (lambda: probe(path), lambda: decode_stream(path, SR), lambda: decode(path, SR)):
                    try:
                        call()
                        lines.append("no error")
                    except DecodeError as exc:
                        lines.append(f"DecodeError {exc}")
                    except BaseException as exc:  # noqa: BLE001 - reported to the parent
                        lines.append(f"{type(exc).__name__} {exc}")
                os.write(write_end, "\n".join(lines).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            lines = pipe.read().splitlines()
        os.waitpid(pid, 0)
        assert len(lines) == 3, lines
        for line in lines:
            assert line.startswith("DecodeError ") and "permission denied" in line and str(path) in line, line
    finally:
        shutil.rmtree(folder, ignore_errors=True)
