"""Read title / artist / album / genre / year from an audio file's tags; never fails.

mutagen reads ID3 (MP3, also inside WAV/AIFF), Vorbis comments (Ogg Vorbis/Opus, FLAC), MP4 atoms,
ASF (WMA) and APEv2 tags. Where mutagen finds none of the five fields, FFmpeg's view of the metadata
(PyAV; it also reads RIFF INFO chunks of WAV files) is used. Missing, unreadable or garbled tags give
empty fields (``None``), never an exception: tags are optional decoration, and decode errors are
reported by ``songseek.engine.audio.decode``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_SEPARATOR = "; "  # joins multiple values of one field ("Artist A; Artist B")

# field -> keys to try, per tag family (mutagen key spelling); the first key with a value wins
_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "easy": {  # EasyID3, EasyMP4, Vorbis comments (case-insensitive), APEv2 (case-insensitive)
        "title": ("title",),
        "artist": ("artist", "albumartist", "album artist"),
        "album": ("album",),
        "genre": ("genre",),
        "year": ("date", "year", "originaldate", "originalyear", "tdrc", "tyer"),
    },
    "id3": {
        "title": ("TIT2",),
        "artist": ("TPE1", "TPE2"),
        "album": ("TALB",),
        "genre": ("TCON",),
        "year": ("TDRC", "TYER", "TDOR", "TORY"),
    },
    "asf": {
        "title": ("Title",),
        "artist": ("Author", "WM/AlbumArtist"),
        "album": ("WM/AlbumTitle",),
        "genre": ("WM/Genre",),
        "year": ("WM/Year", "WM/OriginalReleaseYear"),
    },
}


@dataclass(frozen=True)
class Tags:
    """Descriptive tags of one file; every field is ``None`` when absent. Multiple values are joined
    with ``"; "``; ``year`` is the first four-digit year of the date tag (e.g. ``2011-07-19`` -> 2011)."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    year: int | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.title, self.artist, self.album, self.genre, self.year))


def read_tags(path: Path) -> Tags:
    """Tags of ``path`` (empty ``Tags()`` when there are none or they cannot be read); never raises."""
    try:
        tags = _from_mutagen(Path(path))
    except Exception:  # noqa: BLE001 - garbled tags must never stop indexing
        tags = Tags()
    if tags.is_empty():
        try:
            tags = _from_ffmpeg(Path(path))
        except Exception:  # noqa: BLE001
            tags = Tags()
    return tags


def parse_year(values: Iterable[str]) -> int | None:
    """First plausible year (1000-2999) found in date strings such as '2011-07-19' or '1998/03'."""
    for value in values:
        for match in _YEAR.finditer(value):
            year = int(match.group(1))
            if 1000 <= year <= 2999:
                return year
    return None


def _clean(values: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for value in values:
        text = str(value).replace("\x00", " ").strip()
        if text and text not in out:
            out.append(text)
    return out


MAX_TAG_CHARS = 1000
"""Longest tag value stored. Real titles, artists and albums are far shorter; a tag of 100,000 characters
(a garbled or hostile file) would otherwise be stored and printed in full in every search table."""


def _build(fields: dict[str, list[str]]) -> Tags:
    def text(name: str) -> str | None:
        values = fields.get(name) or []
        joined = _SEPARATOR.join(values)
        if len(joined) > MAX_TAG_CHARS:  # cut, and the cut marked with an ellipsis
            joined = joined[:MAX_TAG_CHARS - 1] + "\u2026"
        return joined or None

    return Tags(title=text("title"), artist=text("artist"), album=text("album"), genre=text("genre"),
                year=parse_year(fields.get("year") or []))


def _values(raw: Any) -> list[Any]:
    """The values of one easy/ASF/APEv2 key: a list; an APEv2 text value holds its values NUL-separated
    (``str()`` of it would join them with NUL, cleaned to a space: "A B" instead of "A; B")."""
    from mutagen.apev2 import APETextValue

    if isinstance(raw, list | tuple | APETextValue):
        return list(raw)
    return [] if raw is None else [raw]


def _lookup(tags: Any, keys: tuple[str, ...], family: str) -> list[str]:
    for key in keys:
        try:
            if family == "id3":
                values: list[Any] = []
                for frame in tags.getall(key):
                    values.extend(getattr(frame, "genres", None) or frame.text)
            else:
                values = _values(tags.get(key) if hasattr(tags, "get") else None)
        except Exception:  # noqa: BLE001 - one bad frame must not hide the others
            continue
        cleaned = _clean(values)
        if cleaned:
            return cleaned
    return []


def _family(tags: Any) -> str:
    name = type(tags).__name__
    if hasattr(tags, "getall") and "Easy" not in name:
        return "id3"
    if name.startswith("ASF"):
        return "asf"
    return "easy"


def _from_mutagen(path: Path) -> Tags:
    import mutagen

    audio = mutagen.File(str(path), easy=True)
    if audio is None or audio.tags is None:
        return Tags()
    family = _family(audio.tags)
    fields = {name: _lookup(audio.tags, keys, family) for name, keys in _KEYS[family].items()}
    return _build(fields)


def _from_ffmpeg(path: Path) -> Tags:
    import av

    with av.open(str(path)) as container:
        meta = {k.lower(): v for k, v in container.metadata.items()}
        for stream in container.streams.audio[:1]:
            for k, v in stream.metadata.items():
                meta.setdefault(k.lower(), v)
    keys = _KEYS["easy"]
    fields = {name: _clean([meta[k] for k in ks if k in meta][:1]) for name, ks in keys.items()}
    return _build(fields)
