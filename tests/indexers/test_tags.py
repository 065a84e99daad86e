"""Tag reading: every tag family mutagen writes, the FFmpeg fallback, garbled and missing tags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mutagen
import numpy as np
import pytest
from mutagen.asf import ASF
from mutagen.id3 import TALB, TCON, TDRC, TIT2, TPE1
from mutagen.wave import WAVE

from songseek.indexers.tags import Tags, parse_year, read_tags
from tests.audio_helpers import real_audio, require_real_audio, sine, write_audio

FULL = {"title": "Blue in Green", "artist": "Miles Davis", "album": "Kind of Blue", "genre": "Jazz"}


def _audio(tmp_path: Path, ext: str, **kwargs) -> Path:
    rate = 48_000 if ext == "opus" else 44_100
    x = sine(0.3, rate, 440, 0.3)
    return write_audio(tmp_path / f"t.{ext}", np.stack([x, x]), rate, **kwargs)


@pytest.mark.parametrize("ext", ["mp3", "flac", "ogg", "opus", "m4a"])
def test_easy_tag_families(tmp_path, ext):
    path = _audio(tmp_path, ext)
    audio = mutagen.File(str(path), easy=True)
    if audio.tags is None:
        audio.add_tags()
    for key, value in FULL.items():
        audio[key] = value
    audio["date"] = "1959-08-17"
    audio.save()
    assert read_tags(path) == Tags(year=1959, **FULL)


@pytest.mark.parametrize("ext", ["wav", "aiff"])
def test_id3_inside_wav_and_aiff(tmp_path, ext):
    path = _audio(tmp_path, ext)
    audio = mutagen.File(str(path))
    audio.add_tags()
    audio.tags.add(TIT2(encoding=3, text=FULL["title"]))
    audio.tags.add(TPE1(encoding=3, text=[FULL["artist"], "John Coltrane"]))
    audio.tags.add(TALB(encoding=3, text=FULL["album"]))
    audio.tags.add(TCON(encoding=3, text="(8)"))  # ID3v1 genre number 8 = Jazz
    audio.tags.add(TDRC(encoding=3, text="1959"))
    audio.save()
    tags = read_tags(path)
    assert tags == Tags(title=FULL["title"], artist="Miles Davis; John Coltrane", album=FULL["album"],
                        genre="Jazz", year=1959)


def test_asf_wma(tmp_path):
    path = _audio(tmp_path, "wma", codec="wmav2", container_format="asf", bit_rate=128_000)
    audio = ASF(str(path))
    audio["Title"] = FULL["title"]
    audio["Author"] = FULL["artist"]
    audio["WM/AlbumTitle"] = FULL["album"]
    audio["WM/Genre"] = FULL["genre"]
    audio["WM/Year"] = "1959"
    audio.save()
    assert read_tags(path) == Tags(year=1959, **FULL)


def test_ffmpeg_fallback_reads_riff_info(tmp_path):
    """mutagen does not read a WAV's RIFF INFO chunk; FFmpeg does, so the fallback finds the tags."""
    import av

    path = tmp_path / "info.wav"
    with av.open(str(path), "w") as out:
        out.metadata.update({"title": FULL["title"], "artist": FULL["artist"], "date": "1959"})
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert WAVE(str(path)).tags is None  # mutagen sees no tags here
    tags = read_tags(path)
    assert (tags.title, tags.artist, tags.year) == (FULL["title"], FULL["artist"], 1959)


def test_untagged_missing_and_garbled_files_give_empty_tags(tmp_path):
    assert read_tags(_audio(tmp_path, "flac")) == Tags()
    assert read_tags(tmp_path / "missing.mp3") == Tags()
    assert read_tags(tmp_path) == Tags()
    empty = tmp_path / "empty.mp3"
    empty.touch()
    assert read_tags(empty) == Tags()
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 50)
    assert read_tags(text) == Tags()
    garbled = tmp_path / "garbled.mp3"  # an ID3v2 header that promises frames and holds noise
    noise = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    garbled.write_bytes(b"ID3\x04\x00\x00\x00\x00\x1f\x7f" + noise + _audio(tmp_path, "mp3").read_bytes())
    assert isinstance(read_tags(garbled), Tags)


def test_blank_and_duplicate_values_are_dropped(tmp_path):
    path = _audio(tmp_path, "flac")
    audio = mutagen.File(str(path))
    audio["title"] = ["  ", "Song\x00"]
    audio["artist"] = ["A", "B", "A"]
    audio["genre"] = [""]
    audio["year"] = "2016-03-18T12:24:48"  # a 'year' comment (as in the Karissa Hobbs file), no 'date'
    audio.save()
    assert read_tags(path) == Tags(title="Song", artist="A; B", genre=None, year=2016)


@pytest.mark.parametrize(("values", "year"), [
    (["2011-07-19"], 2011), (["2016-03-18T12:24:48"], 2016), ([" 1999 "], 1999), (["c. 1975?"], 1975),
    (["05/01/1998"], 1998), (["12345"], None), (["0000"], None), (["unknown"], None), ([], None),
    (["", "1962"], 1962),
])
def test_parse_year(values, year):
    assert parse_year(values) == year


def test_tags_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Tags().title = "x"
    assert Tags().is_empty() and not Tags(year=1).is_empty()


def test_real_files():
    require_real_audio()
    assert read_tags(real_audio("Kevin_MacLeod_-_Vibe_Ace")) == Tags(
        title="Vibe Ace", artist="Kevin MacLeod", album="Jazz Sampler", genre="Jazz", year=2011)
    fishin = read_tags(real_audio("Karissa_Hobbs_-_Lets_Go_Fishin"))
    assert (fishin.artist, fishin.album, fishin.genre, fishin.year) == ("Karissa Hobbs", "Age of Flowers",
                                                                        "Folk", 2016)
    dance = read_tags(real_audio("Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra)"))
    assert dance == Tags(title="Hungarian Dance No. 5", artist="The U.S. Army Strings")
    assert read_tags(real_audio("198-209-0000")) == Tags()  # speech: only a SoX comment
