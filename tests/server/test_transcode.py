"""The transcode cache (server/transcode.py): copies that vanish are made again, and a shared folder that
is not the server's own is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from songseek.engine.errors import UsageError
from songseek.server.transcode import Transcoder
from tests.audio_helpers import sine, write_audio


def test_a_vanished_copy_is_made_again(tmp_path: Path) -> None:
    src = tmp_path / "tone.aiff"
    write_audio(src, sine(1.0, 16000)[None], 16000)
    t = Transcoder(tmp_path / "cache")
    copy, ctype = t.playable(src)
    assert ctype == "audio/wav" and copy.parent == tmp_path / "cache" and copy.read_bytes()[:4] == b"RIFF"
    first = copy.read_bytes()
    copy.unlink()  # evicted by another server sharing the folder, or a temp cleaner
    again, ctype = t.playable(src)
    assert again == copy and ctype == "audio/wav" and again.read_bytes() == first
    os.utime(again, (0, 0))
    t.playable(src)  # a cache hit marks the copy used, so least-recently-used eviction spares it
    assert again.stat().st_mtime > 0


def test_a_playable_file_is_served_as_it_is(tmp_path: Path) -> None:
    src = tmp_path / "tone.wav"
    write_audio(src, sine(0.5, 16000)[None], 16000)
    t = Transcoder(tmp_path / "cache")
    assert t.playable(src) == (src, "audio/wav") and t.playable(src) == (src, "audio/wav")
    assert not list((tmp_path / "cache").iterdir())


def test_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="shared is not yours alone .*mode 777"):
        Transcoder(shared)


def test_a_copy_removed_while_the_cache_is_trimmed_is_skipped(tmp_path: Path) -> None:
    """Another server sharing the folder can evict a copy between the listing and its stat: the eviction
    pass raised FileNotFoundError (a 500 for the play)."""
    src = tmp_path / "tone.aiff"
    write_audio(src, sine(1.0, 16000)[None], 16000)
    t = Transcoder(tmp_path / "cache")
    (tmp_path / "cache" / "ghost.wav").symlink_to(tmp_path / "removed.wav")  # listed, but stat() fails
    copy, ctype = t.playable(src)
    assert ctype == "audio/wav" and copy.read_bytes()[:4] == b"RIFF"
