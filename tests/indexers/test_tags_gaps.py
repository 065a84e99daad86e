"""indexers/tags.py: a key whose value cannot be read (mutagen raises on a garbled frame or value) is
skipped and the field's next key is still read (a mutation sweep left this open: giving up on the field at
the first unreadable key passed every test). Real tagged files; the unreadable key is simulated by a view
of the file's own tags that raises for the keys named, as a garbled frame makes mutagen do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mutagen
import numpy as np
import pytest
from mutagen.id3 import TDOR, TDRC, TIT2, TPE1, TPE2

from songseek.indexers.tags import Tags, read_tags
from tests.audio_helpers import sine, write_audio


class _Garbled(ValueError):
    pass


class VorbisView:
    """Easy-family tags (no getall) whose ``get`` raises for ``broken`` keys, else reads the real tags."""

    def __init__(self, tags: Any, broken: set[str]) -> None:
        self._tags, self._broken = tags, broken

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._broken:
            raise _Garbled(key)
        return self._tags.get(key, default)


class ID3View:
    """ID3-family tags whose ``getall`` raises for ``broken`` frame ids, else reads the real tags."""

    def __init__(self, tags: Any, broken: set[str]) -> None:
        self._tags, self._broken = tags, broken

    def getall(self, key: str) -> list[Any]:
        if key in self._broken:
            raise _Garbled(key)
        return list(self._tags.getall(key))


def _audio(folder: Path, ext: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = sine(0.3, 44_100, float(rng.integers(200, 900)), 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    return write_audio(folder / f"t.{ext}", np.stack([x, x]), 44_100)


def _breaking(monkeypatch: pytest.MonkeyPatch, view: type[VorbisView] | type[ID3View], broken: set[str]) -> None:
    real = mutagen.File

    def opened(path: str, *args: Any, **kwargs: Any) -> Any:
        audio = real(path, *args, **kwargs)
        if audio is not None and audio.tags is not None:
            tags = view(audio.tags, broken)
            audio = type("Opened", (), {"tags": tags})()
        return audio

    monkeypatch.setattr(mutagen, "File", opened)


def test_vorbis_an_unreadable_first_key_falls_through_to_the_next(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = _audio(tmp_path, "flac", 1)
    audio = mutagen.File(str(path))
    audio["title"], audio["artist"], audio["albumartist"] = "Song", "Soloist", "Orchestra"
    audio["date"], audio["originaldate"] = "2004", "1971-05-01"
    audio.save()
    assert read_tags(path) == Tags(title="Song", artist="Soloist", year=2004)  # readable: the first keys win
    _breaking(monkeypatch, VorbisView, {"artist", "date", "year"})
    # naive: the first key of each field that reads and holds a value
    assert read_tags(path) == Tags(title="Song", artist="Orchestra", year=1971)


def test_id3_an_unreadable_first_frame_falls_through_to_the_next(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = _audio(tmp_path, "wav", 2)
    audio = mutagen.File(str(path))
    audio.add_tags()
    for frame in (TIT2(encoding=3, text="Song"), TPE1(encoding=3, text="Soloist"), TPE2(encoding=3, text="Band"),
                  TDRC(encoding=3, text="2004"), TDOR(encoding=3, text="1971")):
        audio.tags.add(frame)
    audio.save()
    assert read_tags(path) == Tags(title="Song", artist="Soloist", year=2004)
    _breaking(monkeypatch, ID3View, {"TPE1", "TDRC", "TYER"})
    assert read_tags(path) == Tags(title="Song", artist="Band", year=1971)
