"""Render a synthetic Score to mono float32 audio with ten cheap, audibly different timbres.

Every note is a cached template (one per instrument, pitch and length within a track) added into the
mix, so rendering is dominated by array additions: far faster than real time on one core.
Timbres: piano (decaying inharmonic partials), strings (detuned band-limited saws, slow attack, vibrato),
guitar (Karplus-Strong pluck), bells (inharmonic sine partials), lead (bright saw with vibrato), bass
(low harmonic tone), drums (swept-sine kick, noisy snare, hi-hats), texture (band-passed noise swells),
organ (drawbar harmonics with tremolo), flute (soft harmonics with breath noise).
"""

from __future__ import annotations

import numpy as np

from songseek.benchmarks.synth.score import KEYS, Score, Section, track_rng

SAMPLE_RATE = 16000

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_DYN_GAIN = {"soft": 0.22, "medium": 0.45, "loud": 0.85}
_INST_GAIN = {"piano": 0.32, "strings": 0.16, "guitar": 0.60, "bells": 0.38, "lead": 0.24, "bass": 0.55,
              "drums": 1.0, "texture": 0.6, "organ": 0.13, "flute": 0.40}
_DRUM_GAIN = {36: 0.75, 38: 0.5, 42: 0.16, 46: 0.2}
_RELEASE_S = {"piano": 0.15, "strings": 0.4, "guitar": 0.1, "bells": 1.0, "lead": 0.06, "bass": 0.05,
              "organ": 0.03, "flute": 0.08}

# Sixteenth-note steps of kick, snare and closed hi-hat per bar, for sparse, moderate and busy sections.
_DRUM_PATTERNS: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((0,), (8,), (0, 4, 8, 12)),
    ((0, 8, 10), (4, 12), tuple(range(0, 16, 2))),
    ((0, 6, 8, 10), (4, 12), tuple(range(16))),
)

Event = tuple[float, int, float, float]  # onset seconds (from section start), midi note, length s, velocity


def midi_hz(midi: float) -> float:
    return float(440.0 * 2.0 ** ((midi - 69) / 12.0))


def render(score: Score, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The track as float32 (round(duration_s * sample_rate),), peak below 1. Deterministic."""
    n = int(round(score.duration_s * sample_rate))
    out = np.zeros(n + 2 * sample_rate, dtype=np.float64)
    tpl = _Templates(sample_rate, track_rng(score.seed, 0, 1))
    for si, sec in enumerate(score.sections):
        rng = track_rng(score.seed, si, 2)
        start = int(round(sec.start_s * sample_rate))
        sec_len = int(round(sec.end_s * sample_rate)) - start
        gain = _DYN_GAIN[sec.dynamics]
        part = np.zeros(sec_len + 2 * sample_rate, dtype=np.float64)
        for inst in sec.instruments:
            if inst == "texture":
                part[:sec_len] += gain * _INST_GAIN[inst] * _texture(sec_len, sample_rate, score.seed, rng)
                continue
            for onset, midi, length, vel in _events(inst, sec, score, rng):
                i0 = int(round(onset * sample_rate))
                if i0 >= sec_len:
                    continue
                n_note = max(1, min(int(round(length * sample_rate)), sec_len - i0))
                wave = tpl.get(inst, midi, n_note)
                g = gain * vel * (_DRUM_GAIN[midi] if inst == "drums" else _INST_GAIN[inst])
                part[i0:i0 + wave.size] += g * wave
        if sec.fade_out:
            part[:sec_len] *= np.linspace(1.0, 0.0, sec_len)
            part[sec_len:] = 0.0
        out[start:start + part.size] += part
    y = np.tanh(out[:n])
    fade = min(n, int(0.05 * sample_rate))
    y[n - fade:] *= np.linspace(1.0, 0.0, fade)
    return y.astype(np.float32)


# --- what each instrument plays ---------------------------------------------------------------------


def _pitch(score: Score, degree: int, base: int) -> int:
    """Scale degree (any integer) to a MIDI note, degree 0 = the tonic nearest above ``base``."""
    scale = _SCALES[score.mode]
    root = base + (KEYS.index(score.key) - base) % 12
    return root + 12 * (degree // 7) + scale[degree % 7]


def _chord(score: Score, degree: int, base: int) -> list[int]:
    return [_pitch(score, degree + step, base) for step in (0, 2, 4)]


def _events(inst: str, sec: Section, score: Score, rng: np.random.Generator) -> list[Event]:
    beat = 60.0 / score.tempo_bpm
    n_bars = max(1, int(round(sec.duration_s / (4 * beat))))
    dens = ("sparse", "moderate", "busy").index(sec.density)
    ev: list[Event] = []
    walk = 0
    for bar in range(n_bars):
        t0 = bar * 4 * beat
        deg = sec.progression[bar % len(sec.progression)]
        if inst == "piano":
            chord = _chord(score, deg, 55)
            if dens == 2:
                arp = chord + [chord[0] + 12, chord[2], chord[1], chord[0] + 12, chord[1]]
                ev += [(t0 + i * beat / 2, m, beat, rng.uniform(0.6, 0.9)) for i, m in enumerate(arp[:8])]
            else:
                for k in range(dens + 1):
                    v = rng.uniform(0.75, 1.0)
                    ev += [(t0 + k * 2 * beat, m, (4 - 2 * dens) * beat, v) for m in chord + [chord[0] - 12]]
        elif inst in ("strings", "organ"):
            chord = _chord(score, deg, 52 if inst == "strings" else 57) + [_pitch(score, deg, 45)]
            hits = (1, 2, 4)[dens] if inst == "organ" else (1, 1, 2)[dens]
            length = 4 * beat / hits * (0.8 if inst == "organ" and dens == 2 else 1.0)
            ev += [(t0 + k * 4 * beat / hits, m, length, 0.9) for k in range(hits) for m in chord]
        elif inst == "guitar":
            chord = _chord(score, deg, 52)
            tones = chord + [chord[0] + 12, chord[1] + 12]
            steps = (4, 8, 16)[dens]
            ev += [(t0 + i * 4 * beat / steps, tones[(i * 3 + bar) % len(tones)], 1.5 * beat,
                    rng.uniform(0.7, 1.0)) for i in range(steps)]
        elif inst == "bells":
            per_bar = (1, 2, 4)[dens]
            ev += [(t0 + i * 4 * beat / per_bar, _pitch(score, deg + 2 * int(rng.integers(0, 4)), 72),
                    2 * beat, rng.uniform(0.7, 1.0)) for i in range(per_bar)]
        elif inst == "bass":
            root = _pitch(score, deg, 31)
            line: list[tuple[float, float, int]] = (
                [(0.0, 4.0, root)], [(0.0, 1.0, root), (1.0, 1.0, root), (2.0, 1.0, root + 7), (3.0, 1.0, root)],
                [(i / 2, 0.5, (root, root + 12, root + 7, root)[i % 4]) for i in range(8)])[dens]
            ev += [(t0 + b * beat, m, d * beat * 0.95, rng.uniform(0.8, 1.0)) for b, d, m in line]
        elif inst in ("lead", "flute"):
            base = 67 if inst == "lead" else 72
            grid = ((2.0, 4.0), (1.0, 0.5, 2.0), (0.5, 0.25, 1.0))[dens]
            t = 0.0
            while t < 4.0 - 1e-9:
                d = float(min(grid[int(rng.integers(len(grid)))], 4.0 - t))
                walk = int(np.clip(walk + rng.integers(-2, 3), -3, 9))
                if rng.random() > 0.15:
                    ev.append((t0 + t * beat, _pitch(score, walk, base), d * beat * 0.95, rng.uniform(0.7, 1.0)))
                t += d
        elif inst == "drums":
            for drum, drum_steps in zip((36, 38, 42), _DRUM_PATTERNS[dens]):
                ev += [(t0 + s * beat / 4, drum, 0.4, (1.0 if s % 4 == 0 else 0.75)) for s in drum_steps]
            if dens == 2 and bar % 2 == 1:
                ev.append((t0 + 14 * beat / 4, 46, 0.4, 0.9))
    return ev


# --- timbres ------------------------------------------------------------------------------------------


class _Templates:
    """One rendered note per (instrument, midi, length) within a track."""

    def __init__(self, sample_rate: int, rng: np.random.Generator) -> None:
        self.sr = sample_rate
        self.rng = rng
        self.noise = rng.uniform(-1.0, 1.0, size=sample_rate)  # shared excitation for plucks and drums
        self.cache: dict[tuple[str, int, int], np.ndarray] = {}

    def get(self, inst: str, midi: int, n_note: int) -> np.ndarray:
        key = (inst, midi, n_note)
        wave = self.cache.get(key)
        if wave is None:
            wave = self._make(inst, midi, n_note)
            peak = float(np.max(np.abs(wave)))
            wave = wave / peak if peak > 0 else wave
            self.cache[key] = wave
        return wave

    def _make(self, inst: str, midi: int, n_note: int) -> np.ndarray:
        sr = self.sr
        if inst == "drums":
            return _drum(midi, sr, self.noise)
        f = midi_hz(midi)
        total = n_note + int(_RELEASE_S[inst] * sr)
        t = np.arange(total) / sr
        if inst == "guitar":
            return _pluck(f, total, sr, self.noise) * _release(total, n_note, sr, 0.05)
        if inst == "piano":
            y = _partials(f, t, sr, [(k * np.sqrt(1 + 4e-4 * k * k), 1.0 / k**1.3,
                                      (0.7 + f / 500.0) * (1 + 0.7 * (k - 1))) for k in range(1, 9)])
            return y * _attack(total, sr, 0.004) * _release(total, n_note, sr, 0.06)
        if inst == "bells":
            y = _partials(f, t, sr, [(1.0, 1.0, 1.0), (2.0, 0.4, 1.6), (2.76, 0.5, 2.2), (5.4, 0.3, 3.5),
                                     (8.93, 0.15, 5.0)])
            return y * _attack(total, sr, 0.002)
        if inst == "bass":
            y = _partials(f, t, sr, [(1.0, 1.0, 0.0), (2.0, 0.45, 1.5), (3.0, 0.2, 3.0), (4.0, 0.1, 4.0)])
            return y * (0.6 + 0.4 * np.exp(-t / 0.25)) * _attack(total, sr, 0.004) * _release(
                total, n_note, sr, 0.02)
        if inst == "flute":
            y = _osc(f, t, sr, [1.0, 0.22, 0.06], vib=(5.0, 0.004, 0.15))
            breath = np.convolve(self.rng.standard_normal(total), np.ones(6) / 6, mode="same")
            y = y + 0.12 * breath
            return y * _attack(total, sr, 0.07) * _release(total, n_note, sr, 0.04)
        if inst == "organ":
            y = _osc(f, t, sr, [1.0, 0.75, 0.5, 0.4, 0.0, 0.3, 0.0, 0.25])
            return y * (1 + 0.18 * np.sin(2 * np.pi * 6.5 * t)) * _attack(total, sr, 0.008) * _release(
                total, n_note, sr, 0.015)
        if inst == "lead":
            y = _osc(f, t, sr, [1.0 / k for k in range(1, 31)], vib=(6.0, 0.007, 0.2))
            return y * _attack(total, sr, 0.006) * _release(total, n_note, sr, 0.03)
        if inst == "strings":
            amps = [1.0 / k**1.2 for k in range(1, 15)]
            y = np.zeros(total)
            for d, p in ((0.9965, 0.1), (1.0, 0.5), (1.0035, 0.8)):  # three detuned voices
                y += _osc(f * d, t, sr, amps, vib=(5.3, 0.003, 0.0), phase=p)
            return y * _attack(total, sr, min(0.35, n_note / sr / 3)) * _release(
                total, n_note, sr, 0.15)
        raise ValueError(f"unknown instrument {inst!r}")


def _attack(total: int, sr: int, seconds: float) -> np.ndarray:
    env = np.ones(total)
    k = min(total, max(1, int(seconds * sr)))
    env[:k] = np.linspace(0.0, 1.0, k)
    return env


def _release(total: int, n_note: int, sr: int, tau: float) -> np.ndarray:
    env = np.ones(total)
    if n_note < total:
        env[n_note:] = np.exp(-np.arange(total - n_note) / (tau * sr))
    return env


def _partials(f: float, t: np.ndarray, sr: int, parts: list[tuple[float, float, float]]) -> np.ndarray:
    """Sum of decaying sines: (frequency ratio, amplitude, decay rate 1/s); partials above 0.45 sr drop."""
    y = np.zeros_like(t)
    for ratio, amp, decay in parts:
        if f * ratio < 0.45 * sr:
            y += amp * np.exp(-decay * t) * np.sin(2 * np.pi * f * ratio * t)
    return y


_TABLE = 2048


def _osc(f: float, t: np.ndarray, sr: int, amps: list[float],
         vib: tuple[float, float, float] | None = None, phase: float = 0.0) -> np.ndarray:
    """Band-limited wavetable oscillator (harmonic amplitudes ``amps``) with optional delayed vibrato
    (rate Hz, depth as a fraction, delay s)."""
    n_harm = max(1, min(len(amps), int(0.45 * sr / f)))
    grid = np.arange(_TABLE) / _TABLE
    table = np.zeros(_TABLE)
    for k, a in enumerate(amps[:n_harm]):
        table += a * np.sin(2 * np.pi * (k + 1) * grid)
    if vib is None:
        cycles = f * t + phase
    else:
        rate, depth, delay = vib
        ramp = np.clip((t - delay) / 0.3, 0.0, 1.0)
        cycles = np.cumsum(f * (1 + depth * ramp * np.sin(2 * np.pi * rate * t))) / sr + phase
    idx = (cycles * _TABLE).astype(np.int64) % _TABLE
    return table[idx]


def _pluck(f: float, total: int, sr: int, noise: np.ndarray) -> np.ndarray:
    """Karplus-Strong: a noise burst in a delay line of one period, averaged and damped each pass."""
    period = max(2, int(round(sr / f)))
    n_periods = total // period + 2
    y = np.zeros(n_periods * period)
    burst = noise[:period]
    y[:period] = burst - burst.mean()
    rho = 0.5 * (0.999 if f < 200 else 0.996)
    for k in range(1, n_periods):
        a = (k - 1) * period
        prev = y[a:a + period]
        shifted = y[a - 1:a + period - 1] if k > 1 else np.concatenate(([0.0], prev[:-1]))
        y[a + period:a + 2 * period] = rho * (prev + shifted)
    return y[:total]


def _drum(midi: int, sr: int, noise: np.ndarray) -> np.ndarray:
    if midi == 36:  # kick: pitch-swept sine and a click
        t = np.arange(int(0.35 * sr)) / sr
        freq = 48 + 110 * np.exp(-t / 0.035)
        y = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.12)
        y[: int(0.003 * sr)] += 0.3 * noise[: int(0.003 * sr)]
        return y
    if midi == 38:  # snare: bright noise and a short tone
        t = np.arange(int(0.25 * sr)) / sr
        n = np.diff(noise[: t.size + 1])
        return 0.6 * n * np.exp(-t / 0.07) + 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.04)
    length = 0.08 if midi == 42 else 0.35  # hi-hat closed / open: high-passed noise
    t = np.arange(int(length * sr)) / sr
    n = np.diff(noise[1000:1000 + t.size + 2], n=2)
    return n * np.exp(-t / (0.018 if midi == 42 else 0.12))


def _texture(n: int, sr: int, seed: int, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise (centre fixed per track) with slow swells; unit RMS."""
    centre = float(np.exp(track_rng(seed, 0, 3).uniform(np.log(250.0), np.log(4500.0))))
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= np.exp(-0.5 * (np.log(np.maximum(freqs, 1.0) / centre) / 0.45) ** 2)
    y = np.fft.irfft(spec, n)
    t = np.arange(n) / sr
    y *= 0.65 + 0.35 * np.sin(2 * np.pi * rng.uniform(0.08, 0.25) * t + rng.uniform(0, 2 * np.pi))
    y *= _attack(n, sr, min(1.0, n / sr / 4)) * _attack(n, sr, min(1.0, n / sr / 4))[::-1]
    rms = float(np.sqrt(np.mean(y * y))) or 1.0
    return y / rms * 0.3
