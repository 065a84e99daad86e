"""Random musical "scores" for the synthetic benchmark: the ground truth every caption is written from.

A score is a frozen dataclass: tempo, key, mode and a list of sections (kind, time span, instruments,
dynamics, density, chord progression). ``sample_score(seed, index)`` is a pure function of its two
integers, so track ``i`` of seed ``S`` is the same whether 10 or 1,000 tracks are generated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GENERATOR_VERSION = "synth-v1"

# The timbre palette; synth_audio renders each one, synth_captions names each one.
INSTRUMENTS: tuple[str, ...] = (
    "piano", "strings", "guitar", "bells", "lead", "bass", "drums", "texture", "organ", "flute",
)
SECTION_KINDS: tuple[str, ...] = ("intro", "verse", "chorus", "bridge", "outro")
DYNAMICS: tuple[str, ...] = ("soft", "medium", "loud")
DENSITIES: tuple[str, ...] = ("sparse", "moderate", "busy")
KEYS: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES: tuple[str, ...] = ("major", "minor")

MIN_TRACK_S, MAX_TRACK_S = 30.0, 360.0
MIN_SECTION_S, MAX_SECTION_S = 10.0, 60.0
MIN_BPM, MAX_BPM = 60, 180

# Chord progressions as scale degrees (0 = tonic), one chord per bar.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4), (3, 4, 2, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 3, 6, 2), (5, 6, 0, 0)),
}


@dataclass(frozen=True)
class Section:
    """One part of a track: ``kind`` in SECTION_KINDS, seconds [start_s, end_s), what plays and how."""

    kind: str
    start_s: float
    end_s: float
    instruments: tuple[str, ...]
    dynamics: str
    density: str
    progression: tuple[int, ...]
    fade_out: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Score:
    """Everything needed to render a track and describe it. ``seed`` drives note-level randomness."""

    track_id: str
    seed: int
    tempo_bpm: int
    key: str
    mode: str
    sections: tuple[Section, ...]

    @property
    def duration_s(self) -> float:
        return self.sections[-1].end_s

    @property
    def bar_s(self) -> float:
        return 4 * 60.0 / self.tempo_bpm

    @property
    def instruments(self) -> tuple[str, ...]:
        """Every instrument that plays somewhere, in palette order."""
        used = {name for sec in self.sections for name in sec.instruments}
        return tuple(name for name in INSTRUMENTS if name in used)

    @property
    def tempo_class(self) -> str:
        return tempo_class(self.tempo_bpm)


def tempo_class(bpm: float) -> str:
    """``slow`` (< 90 bpm), ``medium`` (90-124) or ``fast`` (>= 125)."""
    return "slow" if bpm < 90 else ("medium" if bpm < 125 else "fast")


def track_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator for track ``index`` of ``seed``; ``stream`` separates independent uses."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def sample_score(seed: int, index: int) -> Score:
    """Draw the score of track ``index`` for generator ``seed`` (deterministic, independent per track)."""
    rng = track_rng(seed, index, 0)
    bpm = int(rng.integers(MIN_BPM, MAX_BPM + 1))
    key = KEYS[int(rng.integers(len(KEYS)))]
    mode = MODES[int(rng.integers(2))]
    bar_s = 4 * 60.0 / bpm
    bars = _section_bars(rng, bar_s)
    kinds = _section_kinds(rng, len(bars))
    sets = _instrumentation(rng, kinds)
    progressions = {kind: PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
                    for kind in SECTION_KINDS}
    sections = []
    t = 0.0
    for i, (kind, n_bars, instruments) in enumerate(zip(kinds, bars, sets)):
        dynamics, density = _feel(rng, kind)
        end = round(t + n_bars * bar_s, 6)
        sections.append(Section(kind=kind, start_s=round(t, 6), end_s=end, instruments=instruments,
                                dynamics=dynamics, density=density, progression=progressions[kind],
                                fade_out=kind == "outro" and i == len(kinds) - 1 and bool(rng.random() < 0.6)))
        t = end
    track_id = f"synth-{seed}-{index:05d}"
    return Score(track_id=track_id, seed=int(rng.integers(2**31)), tempo_bpm=bpm, key=key, mode=mode,
                 sections=tuple(sections))


def _section_bars(rng: np.random.Generator, bar_s: float) -> list[int]:
    """Section lengths in whole bars: each 10-60 s, together 30 s - 6 min (log-uniform target)."""
    lo_bars = math.ceil(MIN_SECTION_S / bar_s - 1e-9)
    hi_bars = math.floor(MAX_SECTION_S / bar_s + 1e-9)
    target = float(np.exp(rng.uniform(np.log(MIN_TRACK_S), np.log(MAX_TRACK_S))))
    n_lo = max(1, math.ceil(target / MAX_SECTION_S))
    n_hi = max(n_lo, math.floor(target / MIN_SECTION_S))
    n = int(np.clip(round(target / rng.uniform(18.0, 40.0)), n_lo, min(n_hi, 9)))
    shares = rng.dirichlet(np.full(n, 4.0))
    bars = [int(np.clip(round(target * s / bar_s), lo_bars, hi_bars)) for s in shares]
    min_total = math.ceil(MIN_TRACK_S / bar_s - 1e-9)
    max_total = math.floor(MAX_TRACK_S / bar_s + 1e-9)
    while sum(bars) < min_total:  # too short after rounding: lengthen the shortest section
        i = int(np.argmin(bars))
        if bars[i] >= hi_bars:
            bars.append(lo_bars)
        else:
            bars[i] += 1
    while sum(bars) > max_total:
        bars[int(np.argmax(bars))] -= 1
    return bars


def _section_kinds(rng: np.random.Generator, n: int) -> list[str]:
    if n == 1:
        return ["verse"]
    if n == 2:
        return [["intro", "verse"], ["verse", "outro"], ["verse", "chorus"]][int(rng.integers(3))]
    head = ["intro"] if rng.random() < 0.85 else []
    tail = ["outro"] if rng.random() < 0.85 else []
    n_mid = n - len(head) - len(tail)
    middle = ["verse" if i % 2 == 0 else "chorus" for i in range(n_mid)]
    if n_mid >= 4 and rng.random() < 0.7:  # a bridge after the second chorus
        middle[3] = "bridge"
    return head + middle + tail


def _pick(rng: np.random.Generator, pool: list[str], k: int) -> list[str]:
    k = max(0, min(k, len(pool)))
    return [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))] if k else []


def _instrumentation(rng: np.random.Generator, kinds: list[str]) -> list[tuple[str, ...]]:
    """Per section, which instruments play: verses share a set, choruses add to it, the bridge
    changes colour, intro and outro are thin."""
    palette = _pick(rng, list(INSTRUMENTS), int(rng.integers(4, 7)))
    verse = _pick(rng, palette, int(rng.integers(2, 4)))
    rest = [name for name in palette if name not in verse]
    extra = _pick(rng, rest, int(rng.integers(1, 3))) if rest else []
    if "drums" in rest and "drums" not in extra and rng.random() < 0.6:
        extra = (extra[:-1] if len(extra) > 1 else []) + ["drums"]
    chorus = verse + extra
    bridge = _pick(rng, rest, 1) + _pick(rng, verse, int(rng.integers(1, 3)))
    intro = _pick(rng, palette, int(rng.integers(1, 3)))
    outro = _pick(rng, palette, int(rng.integers(1, 3)))
    sets = {"intro": intro, "verse": verse, "chorus": chorus, "bridge": bridge or verse, "outro": outro}
    order = {name: i for i, name in enumerate(INSTRUMENTS)}
    return [tuple(sorted(set(sets[kind]), key=order.__getitem__)) for kind in kinds]


def _feel(rng: np.random.Generator, kind: str) -> tuple[str, str]:
    """Dynamics and density, biased by section kind (choruses loud and busy, intros soft)."""
    weights = {
        "intro": ((0.7, 0.3, 0.0), (0.6, 0.4, 0.0)),
        "verse": ((0.3, 0.5, 0.2), (0.3, 0.5, 0.2)),
        "chorus": ((0.0, 0.3, 0.7), (0.1, 0.3, 0.6)),
        "bridge": ((0.4, 0.4, 0.2), (0.4, 0.4, 0.2)),
        "outro": ((0.8, 0.2, 0.0), (0.6, 0.4, 0.0)),
    }[kind]
    dynamics = DYNAMICS[int(rng.choice(3, p=weights[0]))]
    density = DENSITIES[int(rng.choice(3, p=weights[1]))]
    return dynamics, density
