"""A messy collection, synthesized: every common container, sample format and layout decodes to the
known signal (length, rate conversion, channel mean, scale), or fails with one line naming the file."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import av
import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
from mutagen.id3 import APIC, ID3, TDRC, TIT2

from songseek.engine.audio.decode import MIN_SAMPLE_RATE, decode, decode_stream, probe
from songseek.engine.errors import DecodeError
from songseek.indexers.sources import scan
from tests.audio_helpers import best_lag, sine, write_audio

SR = 48_000
AMP = 0.5
RMS = AMP / np.sqrt(2)


def _rms(audio: np.ndarray) -> float:
    core = audio[len(audio) // 20:-len(audio) // 20]  # codecs ramp in and out
    return float(np.sqrt(np.mean(core.astype(np.float64) ** 2)))


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


# soundfile format, subtype, channels: PCM that libsndfile also reads, our naive reference
PCM_CASES = [
    ("WAV", "PCM_U8", 1), ("WAV", "PCM_U8", 2), ("WAV", "PCM_16", 1), ("WAV", "PCM_24", 2),
    ("WAV", "PCM_32", 1), ("WAV", "FLOAT", 6), ("WAV", "DOUBLE", 1), ("WAVEX", "PCM_24", 6),
    ("WAVEX", "FLOAT", 2), ("FLAC", "PCM_16", 2), ("FLAC", "PCM_24", 1), ("FLAC", "PCM_24", 6),
    ("AIFF", "PCM_16", 1), ("AIFF", "PCM_24", 2), ("AIFF", "FLOAT", 1),  # AIFF + FLOAT is an AIFC file
]


@pytest.mark.parametrize(("fmt", "subtype", "channels"), PCM_CASES)
def test_pcm_equals_a_naive_reader(tmp_path: Path, fmt: str, subtype: str, channels: int) -> None:
    """Sample for sample the mean of the channels as libsndfile reads them; every channel differs, so a
    wrong channel count, order-dependent scale or u8 offset shows."""
    rate = 44_100
    x = np.stack([sine(1.0, rate, 440.0 * (c + 1), AMP / (c + 1)) for c in range(channels)], axis=1)
    ext = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "AIFF": "aifc" if subtype == "FLOAT" else "aiff"}[fmt]
    path = tmp_path / f"pcm.{ext}"
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.duration_s) == (rate, channels, 1.0)
    audio = decode(path, rate)
    reference = sf.read(path, dtype="float64", always_2d=True)[0].mean(axis=1)
    assert len(audio) == len(reference) == rate
    np.testing.assert_allclose(audio, reference, atol=1e-6)
    np.testing.assert_allclose(audio, x.mean(axis=1), atol=2.0 / 128 if subtype == "PCM_U8" else 1e-4)


def _write_id3_mp3(path: Path, x: np.ndarray, rate: int) -> Path:
    sf.write(path, np.stack([x, x], axis=1), rate, format="MP3", bitrate_mode="VARIABLE")
    tags = ID3()
    tags.add(TIT2(encoding=3, text="Ünïcødé ♫"))
    tags.add(TDRC(encoding=3, text="2001-05-03"))
    tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=b"\xff\xd8\xff\xe0" + bytes(300_000)))
    tags.save(path)
    return path


def _write_with_video(path: Path, container: str, vcodec: str, acodec: str, x: np.ndarray, rate: int,
                      second_audio: np.ndarray | None = None) -> Path:
    """A video stream first (what a music video or screen recording has), then the audio stream(s)."""
    with av.open(str(path), "w", format=container) as out:
        video: Any = out.add_stream(vcodec, rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        tracks = [x] if second_audio is None else [x, second_audio]
        streams: list[Any] = [out.add_stream(acodec, rate=rate, layout="stereo") for _ in tracks]
        for i in range(int(len(x) / rate * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 9 % 255, np.uint8), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for stream, signal in zip(streams, tracks, strict=True):
            for i in range(0, len(signal), 1024):
                block = np.ascontiguousarray(np.stack([signal[i:i + 1024]] * 2))
                audio = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                audio.sample_rate, audio.pts = rate, i
                for packet in stream.encode(audio):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def _make(kind: str, tmp_path: Path, x: np.ndarray, rate: int) -> Path:
    stereo = np.stack([x, x])
    if kind == "mp3 cbr":
        return write_audio(tmp_path / "cbr.mp3", stereo, rate)
    if kind == "mp3 vbr id3 cover":
        return _write_id3_mp3(tmp_path / "vbr.mp3", x, rate)
    if kind == "ogg vorbis":
        return write_audio(tmp_path / "v.ogg", stereo, rate)
    if kind == "opus":
        return write_audio(tmp_path / "o.opus", stereo, rate)
    if kind == "m4a aac":
        return write_audio(tmp_path / "a.m4a", stereo, rate)
    if kind == "m4a alac":
        return write_audio(tmp_path / "alac.m4a", stereo, rate, codec="alac", container_format="ipod")
    if kind == "wavpack":
        return write_audio(tmp_path / "a.wv", stereo, rate, codec="wavpack", container_format="wv")
    if kind == "mka flac":
        return write_audio(tmp_path / "a.mka", stereo, rate, codec="flac", container_format="matroska")
    if kind == "mp4 video+aac":
        return _write_with_video(tmp_path / "v.mp4", "mp4", "mpeg4", "aac", x, rate)
    if kind == "mkv video+aac":
        return _write_with_video(tmp_path / "v.mkv", "matroska", "mpeg4", "aac", x, rate)
    if kind == "webm video+opus":
        return _write_with_video(tmp_path / "v.webm", "webm", "libvpx", "libopus", x, rate)
    raise AssertionError(kind)


# kind -> (source rate, lossless)
CODEC_CASES = {
    "mp3 cbr": (44_100, False), "mp3 vbr id3 cover": (44_100, False), "ogg vorbis": (44_100, False),
    "opus": (48_000, False), "m4a aac": (44_100, False), "m4a alac": (44_100, True), "wavpack": (44_100, True),
    "mka flac": (44_100, True), "mp4 video+aac": (48_000, False), "mkv video+aac": (48_000, False),
    "webm video+opus": (48_000, False),
}


@pytest.mark.parametrize("kind", list(CODEC_CASES))
def test_codecs_and_containers_give_the_known_sine(tmp_path: Path, kind: str) -> None:
    """Length, pitch and level of a 3 s 440 Hz sine survive each codec and the conversion to 48 kHz mono;
    a video stream or a cover picture in the file changes nothing."""
    rate, lossless = CODEC_CASES[kind]
    x = sine(3.0, rate, 440.0, AMP)
    path = _make(kind, tmp_path, x, rate)
    audio = decode(path, SR)
    assert len(audio) == pytest.approx(3 * SR, abs=0.03 * SR)
    assert _peak_hz(audio, SR) == pytest.approx(440.0, abs=1.0)
    assert _rms(audio) == pytest.approx(RMS, rel=1e-3 if lossless else 0.06)  # LAME's CBR is ~5 % quieter
    if lossless:
        lag, corr = best_lag(sine(3.0, SR, 440.0, AMP), audio, max_lag=48)
        assert lag == 0 and corr > 0.9999


def test_new_extensions_are_found_by_the_scan(tmp_path: Path) -> None:
    """AIFC, Matroska (audio or with video) and WavPack were skipped without a word when indexing a folder."""
    x = sine(1.0, 44_100, 440.0, AMP)
    names = ["a.aifc", "b.mka", "c.mkv", "d.wv", "e.AIFC"]
    sf.write(tmp_path / names[0], x, 44_100, format="AIFF", subtype="FLOAT")
    write_audio(tmp_path / names[1], x, 44_100, codec="flac", container_format="matroska")
    _write_with_video(tmp_path / names[2], "matroska", "mpeg4", "aac", sine(1.0, SR, 440.0, AMP), SR)
    write_audio(tmp_path / names[3], x, 44_100, codec="wavpack", container_format="wv")
    shutil.copy(tmp_path / names[0], tmp_path / names[4])
    assert sorted(f.path.name for f in scan([tmp_path]).files) == sorted(names)
    for name in names:
        assert _rms(decode(tmp_path / name, SR)) == pytest.approx(RMS, rel=0.02), name


def test_an_extension_that_lies_decodes_by_content(tmp_path: Path) -> None:
    x = sine(2.0, 44_100, 440.0, AMP)
    sf.write(tmp_path / "flac.mp3", x, 44_100, format="FLAC")
    sf.write(tmp_path / "wav.flac", x, 44_100, format="WAV")
    write_audio(tmp_path / "mp3.wav", x, 44_100, codec="libmp3lame", container_format="mp3")
    assert probe(tmp_path / "flac.mp3").codec == "flac"
    for name in ("flac.mp3", "wav.flac"):
        np.testing.assert_allclose(decode(tmp_path / name, 44_100), x, atol=1e-4)
    assert _rms(decode(tmp_path / "mp3.wav", 44_100)) == pytest.approx(RMS, rel=0.06)


def test_dc_offset_clipping_and_silence_are_kept_as_they_are(tmp_path: Path) -> None:
    rate = 16_000
    x = sine(2.0, rate, 440.0, AMP)
    sf.write(tmp_path / "dc.wav", x + 0.3, rate, subtype="PCM_16")
    sf.write(tmp_path / "clip.flac", np.clip(3 * x, -1, 1), rate, subtype="PCM_24")
    sf.write(tmp_path / "silence.flac", np.zeros(2 * rate, np.float32), rate)
    dc = decode(tmp_path / "dc.wav", rate)
    assert float(dc.mean()) == pytest.approx(0.3, abs=1e-3)  # not high-passed: the file's own signal
    clip = decode(tmp_path / "clip.flac", 44_100)  # resampled: overshoot stays within [-1, 1]
    assert np.abs(clip).max() <= 1.0 and np.abs(clip).max() > 0.99
    silence = decode(tmp_path / "silence.flac", SR)
    assert len(silence) == 2 * SR and not silence.any()


def test_the_first_audio_stream_is_decoded_not_a_mix_of_all(tmp_path: Path) -> None:
    path = _write_with_video(tmp_path / "two.mkv", "matroska", "mpeg4", "aac", sine(2.0, SR, 440.0, AMP), SR,
                             second_audio=sine(2.0, SR, 1_000.0, 0.2))
    audio = decode(path, SR)
    assert _peak_hz(audio, SR) == pytest.approx(440.0, abs=1.0)
    assert _rms(audio) == pytest.approx(RMS, rel=0.02)


def test_a_xing_header_that_lies_about_the_length_does_not_change_the_decode(tmp_path: Path) -> None:
    """The decoded length is what the frames hold, whatever the LAME/Xing header claims. FFmpeg trims the
    encoder's padding where the header says the stream ends, so the lie costs up to ~25 ms (a padding left
    in, or cut from the middle), never the rest of the file."""
    x = sine(4.0, 44_100, 440.0, AMP)
    honest = write_audio(tmp_path / "honest.mp3", np.stack([x, x]), 44_100)
    data = honest.read_bytes()
    at = data.find(b"Xing") if b"Xing" in data else data.find(b"Info")
    assert at > 0
    frames = struct.unpack(">I", data[at + 8:at + 12])[0]
    for factor in (0.25, 10):
        liar = tmp_path / f"liar{factor}.mp3"
        liar.write_bytes(data[:at + 8] + struct.pack(">I", int(frames * factor)) + data[at + 12:])
        assert probe(liar).duration_s == pytest.approx(4.0 * factor, rel=0.1)  # the header's claim
        assert len(decode(liar, SR)) == pytest.approx(4 * SR, abs=0.03 * SR)


def _raw_wav(path: Path, rate: int, samples: int) -> Path:
    data = (np.random.default_rng(0).standard_normal(samples) * 3000).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt + b"data"
                     + struct.pack("<I", len(data)) + data)
    return path


def test_an_implausible_sample_rate_is_a_damaged_header(tmp_path: Path) -> None:
    """A 100 KB WAV claiming 1 Hz used to decode to 14 hours of audio at 48 kHz (5,000 windows to embed)."""
    path = _raw_wav(tmp_path / "one_hz.wav", 1, 50_000)
    for call in (lambda: probe(path), lambda: decode_stream(path, SR), lambda: decode(path, SR)):
        with pytest.raises(DecodeError) as exc:
            call()
        message = str(exc.value)
        assert "\n" not in message and str(path) in message and "1 Hz" in message, message
    lowest = _raw_wav(tmp_path / "lowest.wav", MIN_SAMPLE_RATE, 2 * MIN_SAMPLE_RATE)
    assert len(decode(lowest, 16_000)) == 32_000


def test_flac_with_an_embedded_picture(tmp_path: Path) -> None:
    x = sine(2.0, 44_100, 440.0, AMP)
    path = tmp_path / "pic.flac"
    sf.write(path, x, 44_100, subtype="PCM_24")
    flac = mutagen.flac.FLAC(path)
    picture = mutagen.flac.Picture()
    picture.data, picture.type, picture.mime = b"\xff\xd8\xff\xe0" + bytes(50_000), 3, "image/jpeg"
    flac.add_picture(picture)
    flac.save()
    np.testing.assert_allclose(decode(path, 44_100), x, atol=1e-4)
