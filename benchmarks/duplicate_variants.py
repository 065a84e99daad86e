"""Audio variants for the duplicate benchmark: re-encodes, resampling, gain, trims, silence (level 1),
EQ and compression "remasters", a cut section, a small tempo change (level 2). Arrays in, files out.

Each function takes mono float32 audio at ``sr`` and returns (audio, sample rate); ``write_audio`` encodes
with PyAV (mp3 128k, AAC 128k, Opus 64k, FLAC, float WAV). ``variants(rng)`` draws the trim, silence and cut
lengths per base track, so that another generator seed is a held-out set for the real recordings too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

Variant = Callable[[np.ndarray, int], tuple[np.ndarray, int]]

# name -> (truth level, file format, transform)
CODECS = {"mp3": ("mp3", "libmp3lame", 128_000), "m4a": ("mp4", "aac", 128_000),
          "opus": ("ogg", "libopus", 64_000), "flac": ("flac", "flac", 0), "wav": ("wav", "pcm_f32le", 0)}


def resample(x: np.ndarray, sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling by FFT (good enough for a benchmark; no dependency)."""
    n_new = int(round(len(x) * new_sr / sr))
    spec = np.fft.rfft(x.astype(np.float64))
    keep = min(len(spec), n_new // 2 + 1)
    out = np.fft.irfft(spec[:keep], n_new) * (n_new / len(x))
    return out.astype(np.float32)


def gain(db: float) -> Variant:
    return lambda x, sr: ((x * 10 ** (db / 20)).astype(np.float32), sr)


def trim(head_s: float, tail_s: float) -> Variant:
    """Cut the ends (at most 5 % of the track each, so that short clips survive)."""
    def f(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
        h, t = (min(int(s * sr), len(x) // 20) for s in (head_s, tail_s))
        return x[h: len(x) - t].copy(), sr
    return f


def add_silence(head_s: float, tail_s: float) -> Variant:
    return lambda x, sr: (np.concatenate([np.zeros(int(head_s * sr), np.float32), x,
                                          np.zeros(int(tail_s * sr), np.float32)]), sr)


def to_rate(new_sr: int) -> Variant:
    return lambda x, sr: (resample(x, sr, new_sr), new_sr)


def eq(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """A "remaster" EQ: +6 dB shelf below 250 Hz, -6 dB above 2.5 kHz, smooth in log frequency."""
    spec = np.fft.rfft(x.astype(np.float64))
    f = np.maximum(np.fft.rfftfreq(len(x), 1 / sr), 1.0)
    db = 6.0 / (1 + (f / 250.0) ** 2) - 6.0 / (1 + (2500.0 / f) ** 2)
    y = np.fft.irfft(spec * 10 ** (db / 20), len(x))
    return (0.9 * y / max(np.abs(y).max(), 1e-9) * np.abs(x).max()).astype(np.float32), sr


def compress(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """A "loudness war" remaster: 6:1 compression above 18 dB under the track's loud level (the 90th
    percentile of its 50 ms RMS), then make-up gain. Relative, so that it engages on a quiet recording too
    (a fixed -30 dBFS threshold left a quiet whale recording untouched: a "remaster" that was a copy)."""
    win = max(1, int(0.05 * sr))
    c = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    lo = np.clip(np.arange(len(x)) - win // 2, 0, len(x))
    rms = np.sqrt((c[np.minimum(lo + win, len(x))] - c[lo]) / win + 1e-12)  # moving RMS, centred
    level = 20 * np.log10(rms)
    over = np.maximum(level - (np.percentile(level, 90) - 18.0), 0.0)
    y = x * 10 ** (-(over * (1 - 1 / 6.0)) / 20)
    return (0.95 * y / max(np.abs(y).max(), 1e-9)).astype(np.float32), sr


def dynamics_change_db(x: np.ndarray, y: np.ndarray, sr: int) -> float:
    """How much a same-length transform changed the loudness envelope: the spread (10th to 90th
    percentile, dB) of the 50 ms level difference over the non-silent blocks. A gain change gives 0."""
    win = max(1, int(0.05 * sr))
    n = min(len(x), len(y)) // win * win

    def level(z: np.ndarray) -> np.ndarray:
        return np.asarray(10 * np.log10((z[:n].astype(np.float64) ** 2).reshape(-1, win).mean(axis=1) + 1e-12))

    lx, ly = level(x), level(y)
    if len(lx) == 0:
        return 0.0
    d = (ly - lx)[lx > lx.max() - 50.0]
    return float(np.percentile(d, 90) - np.percentile(d, 10))


def audible_span(x: np.ndarray, sr: int, floor_db: float = 40.0) -> tuple[int, int]:
    """(first, end) sample of the audible part: from the first to the last 50 ms block within ``floor_db``
    of the loudest block (the whole array when its first and last blocks are audible)."""
    win = max(1, int(0.05 * sr))
    n = len(x) // win
    if n == 0:
        return 0, len(x)
    level = 10 * np.log10((x[: n * win].astype(np.float64) ** 2).reshape(n, win).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - floor_db)
    first, last = int(loud[0]), int(loud[-1])
    return first * win, len(x) if last == n - 1 else (last + 1) * win


def cut_section(start_frac: float, length_s: float) -> Variant:
    """Remove ``length_s`` seconds (at most a fifth of the audible part) from ``start_frac`` of the way
    through the audible part. A cut that reached into the silence after the music would leave the music
    ending early: a trimmed copy (on generator seed 9 the 5.3 s trumpet clip, whose last second is its
    decay, lost that decay and was labelled an edit)."""
    def f(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
        lo, hi = audible_span(x, sr)
        a = lo + int(start_frac * (hi - lo))
        return np.concatenate([x[:a], x[a + min(int(length_s * sr), (hi - lo) // 5):]]), sr
    return f


def trim_residual_db(x: np.ndarray, y: np.ndarray) -> float:
    """How far ``y`` (no longer than ``x``) is from a trimmed copy of ``x``: the energy of y minus x's
    first, or last, len(y) samples relative to theirs (dB, the smaller of the two). A cut of whole periods
    from a loop that repeats sample for sample leaves a trimmed copy (-inf here); a real edit gives about 0."""
    n = len(y)
    if n == 0 or n > len(x):
        return 0.0
    out = []
    for ref in (x[:n], x[len(x) - n:]):
        r = ref.astype(np.float64)
        out.append(10 * np.log10((np.sum((y.astype(np.float64) - r) ** 2) + 1e-20) / (np.sum(r ** 2) + 1e-20)))
    return float(min(out))


def tempo(factor: float) -> Variant:
    """Play ``factor`` times faster (pitch moves with it, as a tape or a resampling edit would)."""
    return lambda x, sr: (np.interp(np.arange(0, len(x) - 1, factor), np.arange(len(x)), x).astype(np.float32), sr)


def variants(rng: np.random.Generator) -> dict[str, tuple[int, str, Variant | None]]:
    """name: (truth level, codec, transform); trims, silences and the cut drawn from ``rng``."""
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 2)  # noqa: E731
    return {
        "mp3": (1, "mp3", None),
        "aac": (1, "m4a", None),
        "opus": (1, "opus", to_rate(48000)),
        "resampled": (1, "flac", to_rate(22050)),
        "gain+6": (1, "wav", gain(6.0)),
        "gain-6": (1, "flac", gain(-6.0)),
        "trimmed": (1, "flac", trim(u(1.0, 4.0), u(1.0, 4.0))),
        "silence": (1, "mp3", add_silence(u(1.0, 5.0), u(0.5, 3.0))),
        "eq": (2, "flac", eq),
        "compressed": (2, "flac", compress),
        "cut": (2, "flac", cut_section(u(0.25, 0.6), u(8.0, 14.0))),
        "tempo+3%": (2, "flac", tempo(1.03)),
    }


def write_audio(path: Path, x: np.ndarray, sr: int, codec: str) -> Path:
    """Encode mono float32 ``x`` at ``sr`` to ``path`` (its suffix is set from ``codec``)."""
    import av

    fmt, name, bit_rate = CODECS[codec]
    path = path.with_suffix("." + codec)
    if name == "libopus" and sr != 48000:
        x, sr = resample(x, sr, 48000), 48000
    sample_fmt = "flt" if name in ("pcm_f32le",) else ("s16" if name == "flac" else "fltp")
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(name, rate=sr, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)  # an audio codec name gives an audio stream
        if bit_rate:
            stream.bit_rate = bit_rate
        samples = x.astype(np.float32)[None, :]
        if sample_fmt == "s16":
            samples = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
        step = 4096
        for i in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + step]),
                                               format="s16" if sample_fmt == "s16" else "fltp" if
                                               sample_fmt == "fltp" else "flt", layout="mono")
            frame.rate = sr
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
