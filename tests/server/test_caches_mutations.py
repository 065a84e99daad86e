"""The server's two file caches, against naive references: the transcode cache (server/transcode.py: which
files play as they are, the WAV copy's samples, least-recently-used eviction, a source rewritten in place)
and the waveform cache (server/peaks.py: LRU order, keys that notice a new generation or a rewritten file,
errors)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from songseek.engine.errors import UsageError
from songseek.server import peaks as peaks_module
from songseek.server import transcode as transcode_module
from songseek.server.errors import NotFound, TooLarge
from songseek.server.peaks import PeaksCache
from songseek.server.transcode import Transcoder, write_wav
from tests.audio_helpers import sine, write_audio

SR = 8000


def pcm(path: Path) -> tuple[int, np.ndarray]:
    """Naive reference: every sample of the file as int16, (channels, n), straight from PyAV."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        frames = [f.to_ndarray() for f in c.decode(stream)]
        n_ch = stream.codec_context.channels
    x = np.concatenate(frames, axis=1)
    if x.shape[0] == 1 and n_ch > 1:  # packed: (1, n * ch)
        x = x.reshape(-1, n_ch).T
    return n_ch, x.astype(np.int16)


def aiff(path: Path, seconds: float, freq: float = 440.0, channels: int = 1) -> Path:
    x = np.stack([sine(seconds, SR, freq * (i + 1), amp=0.5) for i in range(channels)])
    return write_audio(path, x, SR)


# ---------------------------------------------------------------------------------------------- transcode


@pytest.mark.parametrize("channels", [1, 2])
def test_the_wav_copy_holds_every_sample_of_the_source(tmp_path: Path, channels: int) -> None:
    src = aiff(tmp_path / "tone.aiff", 1.3, channels=channels)
    copy, ctype = Transcoder(tmp_path / "cache").playable(src)
    assert ctype == "audio/wav" and copy != src
    want_ch, want = pcm(src)
    got_ch, got = pcm(copy)
    assert got_ch == want_ch == channels
    assert got.shape == want.shape and np.array_equal(got, want)


def test_the_codec_decides_not_the_extension_alone(tmp_path: Path) -> None:
    alaw = tmp_path / "alaw.wav"  # a WAV holding A-law: not a codec browsers play
    write_audio(alaw, sine(0.5, SR)[None], SR, codec="pcm_alaw", container_format="wav")
    t = Transcoder(tmp_path / "cache")
    copy, ctype = t.playable(alaw)
    assert ctype == "audio/wav" and copy.parent == tmp_path / "cache"
    upper = tmp_path / "TONE.WAV"  # the extension's case does not matter
    write_audio(upper, sine(0.5, SR)[None], SR, codec="pcm_s16le", container_format="wav")
    assert t.playable(upper) == (upper, "audio/wav")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [copy.name]


def test_a_source_rewritten_in_place_gets_a_new_copy(tmp_path: Path) -> None:
    src = aiff(tmp_path / "tone.aiff", 1.0, freq=440.0)
    t = Transcoder(tmp_path / "cache")
    first, _ = t.playable(src)
    assert np.array_equal(pcm(first)[1], pcm(src)[1])
    st = src.stat()
    aiff(src, 1.0, freq=660.0)  # same size, other samples, a later mtime
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert src.stat().st_size == st.st_size
    second, _ = t.playable(src)
    assert np.array_equal(pcm(second)[1], pcm(src)[1]) and not np.array_equal(pcm(second)[1], pcm(first)[1])
    aiff(src, 0.5, freq=330.0)  # another size, with the mtime set back to the last one
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third, _ = t.playable(src)
    assert np.array_equal(pcm(third)[1], pcm(src)[1])


def naive_lru(files: dict[str, tuple[float, int]], keep: str, budget: int) -> set[str]:
    """What stays: drop the oldest (mtime, size, name) first, never ``keep``, until the rest fit."""
    left = dict(files)
    order = sorted((m, s, n) for n, (m, s) in files.items() if n != keep)
    for _, _size, name in order:
        if sum(s for _, s in left.values()) <= budget:
            break
        del left[name]
    return set(left)


@pytest.mark.parametrize("budget_copies", [0.5, 1, 2, 3, 3.5, 10])
def test_eviction_drops_the_least_recently_used_copies_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             budget_copies: float) -> None:
    monkeypatch.setattr(transcode_module, "CACHE_BYTES", 10**12)
    t = Transcoder(tmp_path / "cache")
    srcs = [aiff(tmp_path / f"s{i}.aiff", 0.5, freq=200.0 + 100 * i) for i in range(4)]
    copies = [t.playable(s)[0] for s in srcs[:3]]
    for copy, mtime in zip(copies, (100, 300, 200), strict=True):  # the second is the most recently used
        os.utime(copy, (mtime, mtime))
    size = copies[0].stat().st_size
    assert all(c.stat().st_size == size for c in copies)
    budget = int(budget_copies * size)
    monkeypatch.setattr(transcode_module, "CACHE_BYTES", budget)
    before = {c.name: (float(c.stat().st_mtime), size) for c in copies}
    new, _ = t.playable(srcs[3])
    before[new.name] = (new.stat().st_mtime, new.stat().st_size)
    want = naive_lru(before, new.name, budget)
    assert {p.name for p in (tmp_path / "cache").glob("*.wav")} == want
    assert new.name in want and new.read_bytes()[:4] == b"RIFF"


def test_a_folder_its_group_can_write_is_refused(tmp_path: Path) -> None:
    for mode, ok in ((0o700, True), (0o755, True), (0o770, False), (0o702, False)):
        folder = tmp_path / f"f{mode:o}"
        folder.mkdir()
        folder.chmod(mode)
        if ok:
            Transcoder(folder)
        else:
            with pytest.raises(UsageError, match="not yours alone"):
                Transcoder(folder)


def test_a_failed_transcode_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = aiff(tmp_path / "tone.aiff", 0.5)

    def broken(_: Path, dst: Path) -> None:
        dst.write_bytes(b"RIFF half")
        raise NotFound("could not be transcoded")

    monkeypatch.setattr(transcode_module, "write_wav", broken)
    with pytest.raises(NotFound):
        Transcoder(tmp_path / "cache").playable(src)
    assert list((tmp_path / "cache").iterdir()) == []


def test_write_wav_of_a_file_without_audio_is_not_found(tmp_path: Path) -> None:
    subs = tmp_path / "subs.srt"
    subs.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n", encoding="utf-8")
    with pytest.raises(NotFound, match="could not be transcoded"):
        write_wav(subs, tmp_path / "out.wav")


# ---------------------------------------------------------------------------------------------- peaks


class FakeSnap:
    """What PeaksCache reads of a Snapshot: the generation, the row of an id and its path."""

    def __init__(self, generation: int, paths: dict[str, Path]) -> None:
        self.generation = generation
        self.row_of = {t: i for i, t in enumerate(paths)}
        self._paths = list(paths.values())

    def column(self, name: str, row: int) -> Any:
        assert name == "path"
        return str(self._paths[row])


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []
    real = peaks_module.file_peaks

    def counting(path: Path, n: int, max_s: float):  # type: ignore[no-untyped-def]
        calls.append((path.stem, n))
        return real(path, n, max_s)

    monkeypatch.setattr(peaks_module, "file_peaks", counting)
    return calls


def test_the_peaks_cache_drops_the_least_recently_used(tmp_path: Path, counted: list[tuple[str, int]]) -> None:
    paths = {t: aiff(tmp_path / f"{t}.aiff", 0.3, freq=100.0 * (i + 1)) for i, t in enumerate("abcd")}
    snap = FakeSnap(1, paths)
    cache = PeaksCache(max_s=60.0, entries=2)
    order = ["a", "b", "a", "c", "a", "b", "d", "a", "c", "b", "b", "a"]
    lru: list[str] = []  # naive reference: most recent last
    want = []
    for t in order:
        if t in lru:
            lru.remove(t)
        else:
            want.append((t, 5))
            if len(lru) == 2:
                lru.pop(0)
        lru.append(t)
        out = cache.get(snap, t, 5)  # type: ignore[arg-type]
        assert out["track_id"] == t and out["bins"] == 5
    assert counted == want


def test_the_peaks_cache_notices_a_new_generation_and_a_rewritten_file(tmp_path: Path,
                                                                        counted: list[tuple[str, int]]) -> None:
    src = aiff(tmp_path / "a.aiff", 0.5, freq=440.0)
    cache = PeaksCache(max_s=60.0)
    first = cache.get(FakeSnap(1, {"a": src}), "a", 4)  # type: ignore[arg-type]
    assert cache.get(FakeSnap(1, {"a": src}), "a", 4) is first and len(counted) == 1  # type: ignore[arg-type]
    again = cache.get(FakeSnap(2, {"a": src}), "a", 4)  # type: ignore[arg-type]
    assert again["generation"] == 2 and len(counted) == 2
    st = src.stat()
    write_audio(src, sine(0.5, SR, 440.0, amp=0.1)[None], SR)  # same size, quieter, a later mtime
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    quiet = cache.get(FakeSnap(2, {"a": src}), "a", 4)  # type: ignore[arg-type]
    assert len(counted) == 3 and max(quiet["maxs"]) == pytest.approx(0.1, abs=0.01)  # type: ignore[arg-type, call-overload]
    write_audio(src, sine(0.25, SR, 440.0, amp=0.3)[None], SR)  # another size, the same mtime
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    short = cache.get(FakeSnap(2, {"a": src}), "a", 4)  # type: ignore[arg-type]
    assert len(counted) == 4 and short["duration_s"] == pytest.approx(0.25, abs=0.01)
    assert max(short["maxs"]) == pytest.approx(0.3, abs=0.01)  # type: ignore[arg-type, call-overload]


def test_peaks_errors(tmp_path: Path, counted: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    junk = tmp_path / "junk.aiff"
    junk.write_bytes(b"not audio at all" * 10)
    long = aiff(tmp_path / "long.aiff", 3.0)
    snap = FakeSnap(1, {"junk": junk, "long": long, "gone": tmp_path / "gone.aiff"})
    cache = PeaksCache(max_s=2.0)
    with pytest.raises(NotFound, match="cannot be decoded"):
        cache.get(snap, "junk", 4)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="gone from disk"):
        cache.get(snap, "gone", 4)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no track"):
        cache.get(snap, "nope", 4)  # type: ignore[arg-type]
    with pytest.raises(TooLarge, match="3 s long"):  # refused from the header, before anything is decoded
        cache.get(snap, "long", 4)  # type: ignore[arg-type]
    assert counted == []
    assert PeaksCache(max_s=3.0).get(snap, "long", 4)["duration_s"] == pytest.approx(3.0)  # type: ignore[arg-type]

    def lying(path: Path, n: int, max_s: float) -> None:
        raise UsageError("decoded past the bound")

    monkeypatch.setattr(peaks_module, "file_peaks", lying)
    with pytest.raises(TooLarge, match="decodes to more than"):
        PeaksCache(max_s=60.0).get(snap, "long", 4)  # type: ignore[arg-type]
