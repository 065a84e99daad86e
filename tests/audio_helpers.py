"""Audio synthesis and encoding helpers for tests (PyAV writes every format; nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# codec, container format (None: from the extension), sample format fed to the encoder
FORMATS: dict[str, tuple[str, str | None]] = {
    "wav": ("pcm_s16le", None),
    "flac": ("flac", None),
    "mp3": ("libmp3lame", None),
    "ogg": ("vorbis", None),  # FFmpeg's own Vorbis encoder: stereo only, "experimental"
    "opus": ("libopus", None),
    "m4a": ("aac", "mp4"),
    "aiff": ("pcm_s16be", None),
    "webm": ("libopus", "webm"),
    "wma": ("wmav2", "asf"),
    "aac": ("aac", "adts"),  # raw ADTS stream: no container, no edit list
}
LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 6: "5.1", 8: "7.1"}
SR = 16000  # the fake encoder's rate, used by the tone tracks below
REAL_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio"


@dataclass(frozen=True)
class Marker:
    """A short tone burst at ``time_s`` (seconds) used to check timestamps."""

    time_s: float
    freq_hz: float = 1000.0
    length_s: float = 0.05


def sine(duration_s: float, sample_rate: int, freq_hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """float32 (n,) sine of ``duration_s`` seconds."""
    t = np.arange(int(round(duration_s * sample_rate))) / sample_rate
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def sweep(duration_s: float, sample_rate: int, f0: float = 200.0, f1: float = 2000.0,
          amp: float = 0.5) -> np.ndarray:
    """float32 (n,) exponential sine sweep: no two stretches look alike (good for alignment checks)."""
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    k = np.log(f1 / f0) / max(duration_s, 1e-9)
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return (amp * np.sin(phase)).astype(np.float32)


def with_markers(duration_s: float, sample_rate: int, markers: list[Marker], amp: float = 0.8) -> np.ndarray:
    """float32 (n,) silence with a Hann-windowed tone burst starting at each marker's time."""
    x = np.zeros(int(round(duration_s * sample_rate)), np.float32)
    for m in markers:
        start = int(round(m.time_s * sample_rate))
        n = int(round(m.length_s * sample_rate))
        t = np.arange(n) / sample_rate
        burst = amp * np.hanning(n) * np.sin(2 * np.pi * m.freq_hz * t)
        end = min(len(x), start + n)
        x[start:end] += burst[: end - start].astype(np.float32)
    return x


def write_audio(path: Path, channels: np.ndarray, sample_rate: int, codec: str | None = None,
                container_format: str | None = None, bit_rate: int | None = None) -> Path:
    """Encode ``channels`` (float32 (n,) or (c, n) in [-1, 1]) to ``path`` with PyAV.

    The codec comes from the extension (``FORMATS``) unless given. Packed sample formats are used
    (PyAV mishandles planar frames of 8 channels when building them from numpy).
    """
    import av

    x = np.atleast_2d(np.asarray(channels, dtype=np.float32))
    n_ch = x.shape[0]
    ext = path.suffix.lstrip(".").lower()
    if codec is None:
        codec, fmt = FORMATS[ext]
        container_format = container_format or fmt
    layout = LAYOUTS[n_ch]
    options = {"strict": "experimental"} if codec == "vorbis" else {}
    with av.open(str(path), "w", format=container_format) as out:
        stream: Any = out.add_stream(codec, rate=sample_rate, layout=layout, options=options)
        if bit_rate or codec == "wmav2":  # the WMA encoder needs an explicit bit rate
            stream.codec_context.bit_rate = bit_rate or 128_000
        names = [f.name for f in stream.codec_context.codec.audio_formats or []]
        packed = next((f for f in ("flt", "s16", "s32") if f in names), None)
        step = 8192
        for i in range(0, x.shape[1], step):
            block = x[:, i:i + step]
            if packed is None or (n_ch < 8 and "fltp" in names):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
            else:
                inter = block.T.reshape(1, -1)
                if packed == "s16":
                    inter = np.round(np.clip(inter, -1, 1) * 32767).astype(np.int16)
                elif packed == "s32":
                    inter = np.round(np.clip(inter, -1, 1) * (2**31 - 1)).astype(np.int32)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(inter), format=packed, layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def best_lag(reference: np.ndarray, signal: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag, normalised correlation) maximising corr(reference[k], signal[k + lag]) for |lag| <= max_lag.

    Compares the overlap ``reference[max_lag : max_lag + n]`` with ``signal`` shifted by each lag
    (n = the shorter length - 2 * max_lag); FFT cross-correlation, float64.
    """
    n = min(len(reference), len(signal)) - 2 * max_lag
    assert n > 0, "signals too short for this max_lag"
    ref = reference[max_lag:max_lag + n].astype(np.float64)
    sig = signal[:n + 2 * max_lag].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(sig) + n)))
    cross = np.fft.irfft(np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size)), size)[:2 * max_lag + 1]
    energy = np.concatenate([[0.0], np.cumsum(sig**2)])
    seg_norm = np.sqrt(np.maximum(energy[n:n + 2 * max_lag + 1] - energy[:2 * max_lag + 1], 0.0))
    denom = seg_norm * np.linalg.norm(ref)
    corr = np.where(denom > 0, cross / np.where(denom > 0, denom, 1.0), 0.0)
    k = int(np.argmax(corr))
    return k - max_lag, float(corr[k])


def real_audio(stem: str) -> Path:
    """Path of a real recording in ../shared/data/audio (call ``require_real_audio`` first)."""
    return REAL_AUDIO / f"{stem}.ogg"


def require_real_audio() -> Path:
    """Skip the calling test when the shared real recordings are absent."""
    import pytest

    if not REAL_AUDIO.is_dir() or not any(REAL_AUDIO.glob("*.ogg")):
        pytest.skip("../shared/data not present")
    return REAL_AUDIO


def write_wav(path: Path, audio: np.ndarray, sr: int = SR) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), sr, subtype="FLOAT")


def tone_track(freqs: list[float], seconds_each: float, seed: int) -> np.ndarray:
    """Consecutive sections, each a pure tone plus a little seeded noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds_each * SR)) / SR
    parts = [0.5 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(len(t)) for f in freqs]
    return np.concatenate(parts)
