"""Tag reading details the main tag tests leave open (found by a mutation sweep): which key wins when a
file has several for one field, the fallbacks when the first is absent, the year range's ends and the
length cut's boundary."""

from __future__ import annotations

from pathlib import Path

import mutagen
import numpy as np
import pytest
from mutagen.asf import ASF
from mutagen.id3 import TDOR, TDRC, TIT2, TPE1, TPE2

from songseek.indexers.tags import MAX_TAG_CHARS, Tags, parse_year, read_tags
from tests.audio_helpers import sine, write_audio


def _audio(tmp_path: Path, ext: str, **kwargs: object) -> Path:
    x = sine(0.3, 44_100, 440, 0.3)
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_audio(tmp_path / f"t.{ext}", np.stack([x, x]), 44_100, **kwargs)  # type: ignore[arg-type]


def _flac(tmp_path: Path, **comments: str) -> Path:
    path = _audio(tmp_path, "flac")
    audio = mutagen.File(str(path))
    for key, value in comments.items():
        audio[key.replace("_", " ")] = value
    audio.save()
    return path


# --- which key wins ----------------------------------------------------------------------------------------

def test_vorbis_artist_wins_over_album_artist_and_album_artist_fills_in(tmp_path: Path) -> None:
    assert read_tags(_flac(tmp_path / "a", artist="Soloist", albumartist="Orchestra")).artist == "Soloist"
    assert read_tags(_flac(tmp_path / "b", albumartist="Orchestra")).artist == "Orchestra"
    assert read_tags(_flac(tmp_path / "c", album_artist="Band")).artist == "Band"  # "ALBUM ARTIST" spelling


def test_vorbis_release_date_wins_over_the_original_date_which_fills_in(tmp_path: Path) -> None:
    assert read_tags(_flac(tmp_path / "a", date="2004", originaldate="1971")).year == 2004
    assert read_tags(_flac(tmp_path / "b", originaldate="1971-05-01")).year == 1971
    assert read_tags(_flac(tmp_path / "c", originalyear="1968")).year == 1968


def _id3(tmp_path: Path, *frames: object) -> Path:
    path = _audio(tmp_path, "wav")
    audio = mutagen.File(str(path))
    audio.add_tags()
    for frame in frames:
        audio.tags.add(frame)
    audio.save()
    return path


def test_id3_lead_artist_wins_over_band_and_recording_date_over_original_date(tmp_path: Path) -> None:
    both = _id3(tmp_path / "a", TIT2(encoding=3, text="x"), TPE1(encoding=3, text="Soloist"),
                TPE2(encoding=3, text="Orchestra"), TDRC(encoding=3, text="2004"), TDOR(encoding=3, text="1971"))
    assert read_tags(both) == Tags(title="x", artist="Soloist", year=2004)
    fallbacks = _id3(tmp_path / "b", TIT2(encoding=3, text="x"), TPE2(encoding=3, text="Orchestra"),
                     TDOR(encoding=3, text="1971"))
    assert read_tags(fallbacks) == Tags(title="x", artist="Orchestra", year=1971)


def test_asf_author_wins_over_album_artist_and_year_over_original_year(tmp_path: Path) -> None:
    path = _audio(tmp_path, "wma", codec="wmav2", container_format="asf", bit_rate=128_000)
    audio = ASF(str(path))
    audio["Author"], audio["WM/AlbumArtist"] = "Soloist", "Orchestra"
    audio["WM/Year"], audio["WM/OriginalReleaseYear"] = "2004", "1971"
    audio.save()
    assert (read_tags(path).artist, read_tags(path).year) == ("Soloist", 2004)
    audio = ASF(str(path))
    del audio["Author"], audio["WM/Year"]
    audio.save()
    assert (read_tags(path).artist, read_tags(path).year) == ("Orchestra", 1971)


# --- values --------------------------------------------------------------------------------------------------

def test_a_year_only_tag_is_read(tmp_path: Path) -> None:
    """A file whose only tag is its year is tagged (mutagen's answer is not empty: no fallback needed)."""
    assert read_tags(_flac(tmp_path, date="1999")) == Tags(year=1999)


def test_nul_inside_a_value_becomes_a_space_and_values_join_with_semicolons(tmp_path: Path) -> None:
    path = _flac(tmp_path, title="Side A\x00Side B", artist=["One", " Two ", "Three"])  # type: ignore[arg-type]
    assert read_tags(path) == Tags(title="Side A Side B", artist="; ".join(["One", "Two", "Three"]))


@pytest.mark.parametrize("n", [MAX_TAG_CHARS - 1, MAX_TAG_CHARS, MAX_TAG_CHARS + 1])
def test_a_value_is_cut_only_past_max_tag_chars_and_the_cut_keeps_that_length(tmp_path: Path, n: int) -> None:
    value = "".join(chr(ord("a") + i % 26) for i in range(n))
    got = read_tags(_flac(tmp_path, title=value)).title
    assert got == (value if n <= MAX_TAG_CHARS else value[:MAX_TAG_CHARS - 1] + "\u2026")
    assert got is not None and len(got) == min(n, MAX_TAG_CHARS)


@pytest.mark.parametrize(("values", "year"), [
    (["1000"], 1000), (["2999"], 2999), (["0999"], None), (["3000"], None), (["3000", "1987"], 1987),
    (["x1987y"], 1987), (["released 3000-1987"], 1987),
])
def test_parse_year_range_ends(values: list[str], year: int | None) -> None:
    # a naive reference: the first run of exactly four digits in 1000..2999, value by value
    def naive(vals: list[str]) -> int | None:
        for v in vals:
            i = 0
            while i < len(v):
                j = i
                while j < len(v) and v[j].isdigit():
                    j += 1
                if j - i == 4 and 1000 <= int(v[i:j]) <= 2999:
                    return int(v[i:j])
                i = max(j, i + 1)
        return None

    assert parse_year(values) == naive(values) == year


# --- APEv2 and the FFmpeg fallback ------------------------------------------------------------------------------

def test_apev2_multiple_values_are_joined_like_every_other_familys(tmp_path: Path) -> None:
    """An APEv2 text value (WavPack, Monkey's Audio, Musepack) holds its values NUL-separated in one item;
    they were joined with a space ("A B") instead of "; "."""
    path = _audio(tmp_path, "wv", codec="wavpack", container_format="wv")
    audio = mutagen.File(str(path))
    audio["Title"], audio["Artist"], audio["Year"] = "Song", ["Soloist", "Orchestra"], "1999"
    audio.save()
    assert read_tags(path) == Tags(title="Song", artist="Soloist; Orchestra", year=1999)


def test_ffmpeg_fallback_reads_any_key_case_prefers_the_container_and_the_first_key(tmp_path: Path) -> None:
    """mutagen reads no Matroska: FFmpeg's metadata is used. Its keys come upper case (ARTIST); the
    container's value wins over the stream's; artist wins over albumartist; a field only the stream has
    is read."""
    import av

    path = tmp_path / "t.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        out.metadata.update({"ARTIST": "Soloist", "ALBUMARTIST": "Orchestra", "DATE": "1999"})
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        stream.metadata.update({"title": "In the stream", "artist": "Stream artist", "genre": "Jazz"})
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert mutagen.File(str(path)) is None  # the fallback is what reads it
    assert read_tags(path) == Tags(title="In the stream", artist="Soloist", genre="Jazz", year=1999)
