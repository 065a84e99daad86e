"""The synthetic music generator: determinism, structure, captions that tell the truth, manifests."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from songseek.benchmarks import datasets
from songseek.benchmarks.synth import audio as synth_audio
from songseek.benchmarks.synth import load_manifest, synth_track, write_dataset
from songseek.benchmarks.synth.captions import INSTRUMENT_NAMES, MAX_TRACK_CAPTION_WORDS, clock
from songseek.benchmarks.synth.score import (
    INSTRUMENTS,
    MAX_BPM,
    MAX_SECTION_S,
    MAX_TRACK_S,
    MIN_BPM,
    MIN_SECTION_S,
    MIN_TRACK_S,
    SECTION_KINDS,
    Score,
    Section,
    sample_score,
)
from songseek.engine.errors import UsageError

SR = synth_audio.SAMPLE_RATE


# Seeds whose first three tracks are all under a minute (fast to write to disk).
SHORT_SEEDS = (12, 22, 37, 39, 126)


def _short_indices(seed: int, n: int, max_s: float = 50.0) -> list[int]:
    """Indices of the first ``n`` tracks of ``seed`` no longer than ``max_s`` (fast to render)."""
    out = [i for i in range(200) if sample_score(seed, i).duration_s <= max_s][:n]
    assert len(out) == n
    return out


def _mentions(text: str, instrument: str) -> bool:
    return any(name in text.lower() for name in INSTRUMENT_NAMES[instrument])


def test_same_seed_same_score_captions_and_audio() -> None:
    i = _short_indices(5, 1)[0]
    a, b = synth_track(5, i), synth_track(5, i)
    assert a == b
    ya, yb = synth_audio.render(a.score), synth_audio.render(b.score)
    assert ya.dtype == np.float32 and np.array_equal(ya, yb)
    assert synth_track(6, i) != a  # another seed, another track


def test_scores_respect_the_ranges_and_sections_tile_the_track() -> None:
    durations = []
    for i in range(150):
        s = sample_score(11, i)
        assert MIN_BPM <= s.tempo_bpm <= MAX_BPM
        assert MIN_TRACK_S - 1e-6 <= s.duration_s <= MAX_TRACK_S + 1e-6
        assert s.sections[0].start_s == 0.0
        for prev, sec in zip(s.sections, s.sections[1:]):
            assert sec.start_s == prev.end_s  # contiguous: the sections cover the whole track
        for sec in s.sections:
            assert MIN_SECTION_S - 1e-6 <= sec.duration_s <= MAX_SECTION_S + 1e-6
            assert sec.kind in SECTION_KINDS and sec.instruments
            assert set(sec.instruments) <= set(INSTRUMENTS)
        durations.append(s.duration_s)
    assert min(durations) < 60 and max(durations) > 240  # the range is really used


def test_track_index_is_independent_of_how_many_are_generated(tmp_path) -> None:
    write_dataset(tmp_path / "a", 1, seed=SHORT_SEEDS[0])
    write_dataset(tmp_path / "b", 2, seed=SHORT_SEEDS[0])
    name = synth_track(SHORT_SEEDS[0], 0).path
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_palette_has_ten_distinct_timbres() -> None:
    spectra = {}
    for inst in INSTRUMENTS:
        sec = Section("verse", 0.0, 8.0, (inst,), "medium", "moderate", (0, 4, 5, 3))
        y = synth_audio.render(Score("t", 1, 120, "C", "major", (sec,)))
        assert np.sqrt(np.mean(y**2)) > 0.01, inst  # audible
        frames = y[: (y.size // 1024) * 1024].reshape(-1, 1024)
        spec = np.log(np.abs(np.fft.rfft(frames * np.hanning(1024), axis=1)).mean(axis=0) + 1e-6)
        spectra[inst] = (spec - spec.mean()) / spec.std()
    names = list(spectra)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            corr = float(np.mean(spectra[names[a]] * spectra[names[b]]))
            assert corr < 0.97, (names[a], names[b], corr)


def test_captions_name_exactly_the_instruments_that_play() -> None:
    for i in range(40):
        t = synth_track(21, i)
        for sec, cap in zip(t.score.sections, t.section_captions):
            for inst in INSTRUMENTS:
                assert _mentions(cap, inst) == (inst in sec.instruments), (cap, sec.instruments)
        tags = t.tags.split(", ")
        assert [x for x in tags if x in INSTRUMENTS] == list(t.score.instruments)
        head = t.caption.split(". ")[0]  # the summary sentence lists every instrument
        for inst in INSTRUMENTS:
            assert _mentions(head, inst) == (inst in t.score.instruments), head


def test_track_captions_follow_the_structure_and_stay_under_250_words() -> None:
    longest = 0
    for i in range(120):
        t = synth_track(8, i)
        words = len(t.caption.split())
        longest = max(longest, words)
        assert words <= MAX_TRACK_CAPTION_WORDS
        assert f"{t.score.tempo_bpm} bpm" in t.caption and t.score.key in t.caption
        assert t.caption.count("It opens with") == 1
        times = re.findall(r"\bAt (\d+:\d\d)|ends at (\d+:\d\d)", t.caption)
        stamps = [a or b for a, b in times]
        assert stamps == [clock(s.start_s) for s in t.score.sections[1:len(stamps) + 1]]
    assert longest > 150  # long-form: well past a 64-token text encoder


def test_write_dataset_is_byte_identical_and_readable(tmp_path) -> None:
    n, seed = 3, SHORT_SEEDS[1]
    s1 = write_dataset(tmp_path / "one", n, seed=seed)
    write_dataset(tmp_path / "two", n, seed=seed)
    for name in ("tracks.csv", "sections.csv", "tags.csv", "scores.jsonl", "synth.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    for f in (tmp_path / "one" / "audio").iterdir():
        assert f.read_bytes() == (tmp_path / "two" / "audio" / f.name).read_bytes()
    assert s1.n_tracks == n and s1.audio_s > 30 * n - 1 and s1.realtime_factor > 0

    root = tmp_path / "one"
    with open(root / "tracks.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "caption"] and len(rows) == n
    with open(root / "sections.csv", newline="") as fh:
        sec_rows = list(csv.DictReader(fh))
    assert list(sec_rows[0]) == ["path", "start_s", "end_s", "caption"]
    tracks, sections = load_manifest(root)
    assert len(tracks) == n and len(sections) == s1.n_sections
    # every row tells the truth: the track's caption, and each section's own times (to the ms) and caption
    made = [synth_track(seed, i) for i in range(n)]
    assert tracks == [(t.path, t.caption) for t in made]
    want = [(t.path, sec.start_s, sec.end_s, cap)
            for t in made for sec, cap in zip(t.score.sections, t.section_captions, strict=True)]
    assert [(p, c) for p, _, _, c in sections] == [(p, c) for p, _, _, c in want]
    np.testing.assert_allclose([(a, b) for _, a, b, _ in sections], [(a, b) for _, a, b, _ in want], atol=5e-4)
    for path, _ in tracks:
        assert not path.startswith("/") and (root / path).is_file()
    meta = json.loads((root / "synth.json").read_text())
    assert meta["seed"] == seed and meta["generator_version"] == "synth-v1"

    import wave

    first = synth_track(seed, 0)
    with wave.open(str(root / first.path)) as wf:
        assert wf.getframerate() == SR and wf.getnchannels() == 1
        assert abs(wf.getnframes() / SR - first.score.duration_s) < 1e-3


def test_manifests_load_in_the_benchmark_loader(tmp_path) -> None:
    write_dataset(tmp_path, 2, seed=SHORT_SEEDS[2])
    whole = datasets.load_manifest(tmp_path / "tracks.csv", on_missing="error")
    parts = datasets.load_manifest(tmp_path / "sections.csv", on_missing="error")
    assert len(whole.items) == 2
    assert all(it.start_s is not None and it.end_s is not None for it in parts.items)


def test_flac_is_lossless_copy_of_wav(tmp_path) -> None:
    av = pytest.importorskip("av")
    import wave

    seed = SHORT_SEEDS[3]
    write_dataset(tmp_path / "w", 1, seed=seed, audio_format="wav")
    write_dataset(tmp_path / "f", 1, seed=seed, audio_format="flac")
    t = synth_track(seed, 0)
    with wave.open(str(tmp_path / "w" / t.path)) as wf:
        pcm = np.frombuffer(wf.readframes(wf.getnframes()), "<i2")
    with av.open(str(tmp_path / "f" / synth_track(seed, 0, "flac").path)) as c:
        dec = np.concatenate([fr.to_ndarray().ravel() for fr in c.decode(audio=0)])
    assert np.array_equal(pcm, dec)


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(UsageError, match="n_tracks must be"):
        write_dataset(tmp_path, 0, seed=1)
    with pytest.raises(UsageError, match="format"):
        write_dataset(tmp_path, 1, seed=1, audio_format="mp4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        write_dataset(tmp_path / "file", 1, seed=1)
