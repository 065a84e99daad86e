"""Synthetic long-form music with known ground truth: the data behind the bundled ``demo`` model.

``write_dataset(out, n_tracks, seed)`` renders tracks and writes, under ``out``:

- ``audio/<track_id>.wav`` (or ``.flac``): mono 16-bit at 16 kHz, 30 s to 6 min each;
- ``tracks.csv`` (``path``, ``caption``): whole-track descriptions that follow the structure, paths
  relative to ``out``; this is the benchmark's track-level manifest;
- ``sections.csv`` (``path``, ``start_s``, ``end_s``, ``caption``): one caption per section;
- ``tags.csv`` (``path``, ``caption``): short comma-separated tag lists per track;
- ``scores.jsonl``: the full score of every track (the ground truth the captions were written from);
- ``synth.json``: generator version, seed, track count, sample rate.

Track ``i`` of seed ``S`` depends only on ``(S, i)``; the same seed writes byte-identical files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from songseek.benchmarks.synth.audio import SAMPLE_RATE, render
from songseek.benchmarks.synth.captions import section_caption, track_caption, track_tags
from songseek.benchmarks.synth.score import GENERATOR_VERSION, Score, sample_score, track_rng
from songseek.engine.errors import UsageError

AUDIO_FORMATS = ("wav", "flac")
_CAPTION_STREAM = 5


@dataclass(frozen=True)
class SynthTrack:
    """One generated track's score and captions (no audio). ``path`` is relative to the dataset root."""

    score: Score
    path: str
    caption: str
    tags: str
    section_captions: tuple[str, ...]


@dataclass(frozen=True)
class SynthSummary:
    """What ``write_dataset`` wrote: counts, seconds of audio, and how long it took."""

    out_dir: str
    n_tracks: int
    n_sections: int
    audio_s: float
    elapsed_s: float
    seed: int
    generator_version: str = GENERATOR_VERSION

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def synth_track(seed: int, index: int, audio_format: str = "wav") -> SynthTrack:
    """The score and captions of track ``index`` for ``seed`` (cheap; no rendering)."""
    score = sample_score(seed, index)
    rng = track_rng(seed, index, _CAPTION_STREAM)
    caption = track_caption(score, rng)
    tags = track_tags(score, rng)
    sections = tuple(section_caption(score, i, rng) for i in range(len(score.sections)))
    return SynthTrack(score=score, path=f"audio/{score.track_id}.{audio_format}", caption=caption, tags=tags,
                      section_captions=sections)


def iter_tracks(seed: int, n_tracks: int, start: int = 0) -> Iterator[tuple[SynthTrack, np.ndarray]]:
    """Tracks ``start .. start + n_tracks - 1`` with their audio: float32 (samples,) at SAMPLE_RATE."""
    for i in range(start, start + n_tracks):
        track = synth_track(seed, i)
        yield track, render(track.score, SAMPLE_RATE)


def write_dataset(out_dir: str | Path, n_tracks: int, seed: int, audio_format: str = "wav",
                  progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Render ``n_tracks`` tracks for ``seed`` under ``out_dir`` with their manifests (see module doc).

    Raises UsageError for a bad count or format, or when ``out_dir`` is a file.
    """
    if n_tracks < 1:
        raise UsageError(f"n_tracks must be at least 1, got {n_tracks}")
    if audio_format not in AUDIO_FORMATS:
        raise UsageError(f"unknown audio format {audio_format!r}: choose one of {', '.join(AUDIO_FORMATS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: give synth a directory to write into")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tracks: list[SynthTrack] = []
    audio_s = 0.0
    for i in range(n_tracks):
        track = synth_track(seed, i, audio_format)
        audio = render(track.score, SAMPLE_RATE)
        _write_audio(out / track.path, audio, SAMPLE_RATE, audio_format)
        tracks.append(track)
        audio_s += audio.size / SAMPLE_RATE
        if progress is not None:
            progress(i + 1, n_tracks)
    _write_manifests(out, tracks, seed)
    return SynthSummary(out_dir=str(out), n_tracks=n_tracks, n_sections=sum(len(t.score.sections) for t in tracks),
                        audio_s=audio_s, elapsed_s=time.perf_counter() - t0, seed=seed)


def _write_manifests(out: Path, tracks: list[SynthTrack], seed: int) -> None:
    def rows_to_csv(name: str, header: list[str], rows: list[list[str]]) -> None:
        tmp = out / f".{name}.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        tmp.replace(out / name)

    rows_to_csv("tracks.csv", ["path", "caption"], [[t.path, t.caption] for t in tracks])
    rows_to_csv("tags.csv", ["path", "caption"], [[t.path, t.tags] for t in tracks])
    rows_to_csv("sections.csv", ["path", "start_s", "end_s", "caption"],
                [[t.path, f"{sec.start_s:.3f}", f"{sec.end_s:.3f}", cap]
                 for t in tracks for sec, cap in zip(t.score.sections, t.section_captions)])
    with open(out / "scores.jsonl", "w", encoding="utf-8") as fh:
        for t in tracks:
            fh.write(json.dumps({"path": t.path, **dataclasses.asdict(t.score)}) + "\n")
    meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "n_tracks": len(tracks),
            "sample_rate": SAMPLE_RATE, "audio_s": round(sum(t.score.duration_s for t in tracks), 3)}
    (out / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _write_audio(path: Path, audio: np.ndarray, sample_rate: int, audio_format: str) -> None:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    tmp = path.with_name(f".{path.name}.tmp")
    if audio_format == "wav":
        with wave.open(str(tmp), "wb") as wf:
            wf.setnchannels(1)
            wf.setsampwidth(2)
            wf.setframerate(sample_rate)
            wf.writeframes(pcm.tobytes())
    else:
        import av

        with av.open(str(tmp), "w", format="flac") as container:
            stream = container.add_stream("flac", rate=sample_rate, layout="mono")
            for i in range(0, pcm.size, 4608):
                frame = av.AudioFrame.from_ndarray(pcm[None, i:i + 4608], format="s16", layout="mono")
                frame.rate = sample_rate
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    tmp.replace(path)


def load_manifest(out_dir: str | Path) -> tuple[list[tuple[str, str]], list[tuple[str, float, float, str]]]:
    """Read ``tracks.csv`` and ``sections.csv`` back: [(path, caption)], [(path, start_s, end_s, caption)].

    Paths are returned as written (relative to ``out_dir``). Raises UsageError when a file is missing.
    """
    out = Path(out_dir)
    for name in ("tracks.csv", "sections.csv"):
        if not (out / name).is_file():
            raise UsageError(f"{out / name} not found: run `songseek synth {out}` first")
    with open(out / "tracks.csv", newline="", encoding="utf-8") as fh:
        tracks = [(r["path"], r["caption"]) for r in csv.DictReader(fh)]
    with open(out / "sections.csv", newline="", encoding="utf-8") as fh:
        sections = [(r["path"], float(r["start_s"]), float(r["end_s"]), r["caption"]) for r in csv.DictReader(fh)]
    return tracks, sections
