"""The transcode cache (server/transcode.py): copies that vanish are made again, a shared folder that is not
the server's own is refused, half-written copies of dead servers are removed, failures are remembered a
while, the memory is bounded, and one long transcode does not hold up other tracks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from songseek.engine.audio.decode import probe
from songseek.engine.errors import UsageError
from songseek.server import transcode
from songseek.server.errors import NotFound
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


def test_half_written_copies_of_servers_gone_are_removed_at_start(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = cache / f"{'a' * 32}.wav.tmp-{gone.pid}"  # a server killed mid-transcode
    live = cache / f"{'b' * 32}.wav.tmp-{os.getpid()}"  # a running server still writing
    for p in (stale, live):
        p.write_bytes(b"RIFF")
    Transcoder(cache)
    assert not stale.exists() and live.exists()


def test_a_file_that_fails_is_not_decoded_again_on_every_request(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.aiff"
    bad.write_bytes(b"FORM" + b"\0" * 200)
    probes: list[Path] = []

    def counting_probe(path: Path) -> object:
        probes.append(path)
        return probe(path)

    monkeypatch.setattr(transcode, "probe", counting_probe)
    t = Transcoder(tmp_path / "cache")
    for _ in range(3):
        with pytest.raises(NotFound, match="bad.aiff") as err:
            t.playable(bad)
        assert str(tmp_path) not in str(err.value)
    assert len(probes) == 1
    monkeypatch.setattr(transcode, "FAILURE_TTL_S", 0.0)  # past the time a failure is remembered: tried again
    with pytest.raises(NotFound):
        t.playable(bad)
    assert len(probes) == 2


def test_what_it_remembers_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transcode, "KNOWN_MAX", 1)
    probes: list[str] = []

    def counting_probe(path: Path) -> object:
        probes.append(path.name)
        return probe(path)

    monkeypatch.setattr(transcode, "probe", counting_probe)
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    for p in (a, b):
        write_audio(p, sine(0.2, 16000)[None], 16000)
    t = Transcoder(tmp_path / "cache")
    for p in (a, a, b, a):
        assert t.playable(p) == (p, "audio/wav")
    assert probes == ["a.wav", "b.wav", "a.wav"]  # b pushed a out of a memory of one


def test_a_long_transcode_does_not_hold_up_other_tracks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow, quick = tmp_path / "slow.aiff", tmp_path / "quick.aiff"
    for p in (slow, quick):
        write_audio(p, sine(0.5, 16000)[None], 16000)
    t = Transcoder(tmp_path / "cache")
    quick_copy, _ = t.playable(quick)  # made before; the slow one is made while quick is asked for again
    release, started = threading.Event(), threading.Event()
    real_write = transcode.write_wav

    def held(src: Path, dst: Path) -> None:
        if src == slow:
            started.set()
            release.wait(120)
        real_write(src, dst)

    monkeypatch.setattr(transcode, "write_wav", held)
    other = tmp_path / "other.aiff"
    write_audio(other, sine(0.3, 16000)[None], 16000)
    got: list[tuple[Path, str]] = []
    worker = threading.Thread(target=t.playable, args=(slow,))
    asker = threading.Thread(target=lambda: got.extend([t.playable(quick), t.playable(other)]))
    worker.start()
    try:
        assert started.wait(60)
        asker.start()
        asker.join(30)  # the old global lock held both until slow.aiff was done (here: until released)
        assert not asker.is_alive(), "a play waited for another track's transcode"
        assert got[0] == (quick_copy, "audio/wav")  # a cache hit, answered while slow.aiff is being made
        assert got[1][0].read_bytes()[:4] == b"RIFF"  # and a second copy made meanwhile
    finally:
        release.set()
        worker.join(60)
        asker.join(60)
    assert t.playable(slow)[0].read_bytes()[:4] == b"RIFF"
