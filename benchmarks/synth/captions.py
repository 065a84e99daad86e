"""Captions written from a synthetic Score, at three levels: tags, whole-track descriptions, sections.

Every caption names only what the score says plays (instruments, dynamics, density, tempo, mode,
mood), with randomly chosen synonyms and sentence patterns so that a model has to learn the words,
not the templates. Each function takes the ``rng`` that picks the wording; the facts come from the score.
"""

from __future__ import annotations

import numpy as np

from songseek.benchmarks.synth.score import Score, Section

# Several names per instrument; captions pick one at random.
INSTRUMENT_NAMES: dict[str, tuple[str, ...]] = {
    "piano": ("piano", "piano chords", "piano-like keys", "decaying piano tones"),
    "strings": ("strings", "string pad", "sustained strings", "warm string section"),
    "guitar": ("guitar", "plucked guitar", "picked guitar", "acoustic guitar"),
    "bells": ("bells", "chimes", "sine bells", "bell tones"),
    "lead": ("synth lead", "saw lead", "buzzy lead synth", "bright synth lead"),
    "bass": ("bass", "bass line", "deep bass", "low bass"),
    "drums": ("drums", "drum kit", "kick, snare and hi-hats", "drum beat"),
    "texture": ("noise texture", "airy noise texture", "ambient hiss", "wash of noise"),
    "organ": ("organ", "organ chords", "drawbar organ", "electric organ"),
    "flute": ("flute", "breathy flute", "flute melody", "soft flute"),
}
_DYNAMICS = {"soft": ("soft", "quiet", "gentle"), "medium": ("moderately loud", "steady", "medium-volume"),
             "loud": ("loud", "powerful", "intense")}
_DENSITY = {"sparse": ("sparse", "minimal", "spacious"), "moderate": ("flowing", "moderately busy", "steady-moving"),
            "busy": ("busy", "dense", "energetic and busy")}
_TEMPO = {"slow": ("slow", "unhurried"), "medium": ("mid-tempo", "moderate-tempo"), "fast": ("fast", "up-tempo")}
_MOOD = {("major", "slow"): ("calm", "peaceful", "warm"), ("major", "medium"): ("bright", "pleasant", "hopeful"),
         ("major", "fast"): ("happy", "cheerful", "joyful"), ("minor", "slow"): ("sad", "melancholic", "somber"),
         ("minor", "medium"): ("moody", "wistful", "dark"), ("minor", "fast"): ("tense", "dramatic", "driving")}
_PIECE = ("piece", "track", "tune", "instrumental")
MAX_TRACK_CAPTION_WORDS = 250


def _one(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def instrument_list(names: tuple[str, ...] | list[str], rng: np.random.Generator) -> str:
    """Instruments named with random synonyms in a random order: 'a bass line, bells and drums'."""
    order = rng.permutation(len(names))
    return _join([_one(rng, INSTRUMENT_NAMES[names[i]]) for i in order])


def mood(score: Score, rng: np.random.Generator) -> str:
    return _one(rng, _MOOD[(score.mode, score.tempo_class)])


def clock(seconds: float) -> str:
    """``m:ss`` as music players write it."""
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def section_caption(score: Score, index: int, rng: np.random.Generator) -> str:
    """One sentence about section ``index``: its instruments, dynamics, density, tempo and mood."""
    sec = score.sections[index]
    inst = instrument_list(sec.instruments, rng)
    dyn = _one(rng, _DYNAMICS[sec.dynamics])
    dens = _one(rng, _DENSITY[sec.density])
    tempo = _one(rng, _TEMPO[score.tempo_class])
    md = mood(score, rng)
    kind = sec.kind if rng.random() < 0.5 else _one(rng, ("passage", "part", "section"))
    pattern = int(rng.integers(5))
    if pattern == 0:
        text = f"{dyn} {dens} {kind} with {inst}, {tempo} and {md}"
    elif pattern == 1:
        text = f"{inst} in {_a(dyn)}, {md} {kind} at {_a(tempo)} pace"
    elif pattern == 2:
        text = f"{_a(md)}, {tempo} {kind}: {inst}, {dyn} and {dens}"
    elif pattern == 3:
        text = f"{kind} of {score.mode} key music with {inst}; {dyn}, {dens}, {tempo}"
    else:
        text = f"{tempo} {md} music: {dyn} {inst}, {dens}"
    if sec.fade_out and rng.random() < 0.7:
        text += ", fading out"
    return text[0].upper() + text[1:] + "."


def section_tags(score: Score, index: int, rng: np.random.Generator) -> str:
    """Comma-separated tags for one section: instruments, dynamics, density, tempo, mode, mood."""
    sec = score.sections[index]
    tags = [*sec.instruments, sec.dynamics, sec.density, score.tempo_class, score.mode, mood(score, rng)]
    return ", ".join(tags[i] for i in rng.permutation(len(tags)))


def track_tags(score: Score, rng: np.random.Generator) -> str:
    """Comma-separated tags for the whole track: every instrument, tempo class, mode and a mood."""
    return ", ".join([*score.instruments, score.tempo_class, score.mode, mood(score, rng)])


def track_caption(score: Score, rng: np.random.Generator) -> str:
    """A whole-track description that follows the structure, at most MAX_TRACK_CAPTION_WORDS words.

    It opens with a summary (mood, tempo, key, length, all instruments), then says what changes at
    each section boundary, with ``m:ss`` times, and how the track ends.
    """
    head = (f"{_a(mood(score, rng)).capitalize()}, {_one(rng, _TEMPO[score.tempo_class])} {_one(rng, _PIECE)} in "
            f"{score.key} {score.mode} at {score.tempo_bpm} bpm, {clock(score.duration_s)} long, "
            f"with {instrument_list(score.instruments, rng)}.")
    sentences = [head]
    secs = score.sections
    for i, sec in enumerate(secs):
        sentences.append(_section_sentence(secs[i - 1] if i else None, sec, i == len(secs) - 1, rng))
    words = 0
    kept: list[str] = []
    for s in sentences:  # keep whole sentences, always the summary and the ending
        n = len(s.split())
        if words + n > MAX_TRACK_CAPTION_WORDS and kept:
            break
        kept.append(s)
        words += n
    return " ".join(kept)


def _section_sentence(prev: Section | None, sec: Section, last: bool, rng: np.random.Generator) -> str:
    dyn = _one(rng, _DYNAMICS[sec.dynamics])
    dens = _one(rng, _DENSITY[sec.density])
    at = clock(sec.start_s)
    if prev is None:
        what = "intro" if sec.kind == "intro" else "section"
        return f"It opens with {_a(dyn)}, {dens} {what} of {instrument_list(sec.instruments, rng)}."
    if last and sec.kind == "outro":
        fade = ", fading out" if sec.fade_out else ""
        return f"It ends at {at} with {_a(dyn)} outro of {instrument_list(sec.instruments, rng)}{fade}."
    entering = [n for n in sec.instruments if n not in prev.instruments]
    leaving = [n for n in prev.instruments if n not in sec.instruments]
    parts = []
    if entering:
        parts.append(f"bringing in {instrument_list(entering, rng)}")
    if leaving:
        parts.append(f"dropping {instrument_list(leaving, rng)}")
    change = (", " + " and ".join(parts)) if parts else ""
    return (f"At {at} the {sec.kind} turns {dyn} and {dens}{change}; "
            f"now {instrument_list(sec.instruments, rng)}.")
