"""What reaches a terminal is escaped (file names with escape sequences, rich markup), FIFOs are refused as
query files, and query by example decodes only its excerpt (docs/robustness.md, "Hostile input")."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from songseek.cli.common import safe_text
from songseek.cli.main import app
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import DecodeError, QueryError
from songseek.engine.query.search import MAX_EXCERPT_S, Library
from tests.audio_helpers import tone_track, write_wav

runner = CliRunner()
EVIL = "\x1b[31mred\x1b]0;pwned\x07[bold]x[i]\u202egnp"
pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_safe_text_escapes_every_control_character() -> None:
    assert safe_text("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert safe_text("\x1b[2J\x07\x7f\x9b") == "\\x1b[2J\\x07\\x7f\\x9b"
    assert (safe_text("bidi \u202e and \u2066 and a surrogate \udcff")
            == "bidi \\u202e and \\u2066 and a surrogate \\udcff")
    assert safe_text("plain ünïcödé – ok 🎵") == "plain ünïcödé – ok 🎵"


@pytest.fixture
def evil_library(tmp_path: Path) -> tuple[Path, Path]:
    music = tmp_path / "music"
    write_wav(music / f"{EVIL}.wav", tone_track([440], 10, 0))
    write_wav(music / "plain.wav", tone_track([3000], 10, 1))
    (music / f"broken{EVIL}.mp3").write_text("not audio")
    lib = tmp_path / "lib"
    code, out, err = run("index", str(music), "--library", str(lib), "--encoder", "fake")
    assert code == 0, err
    for text in (out, err):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[31mred" in err   # the failure line names the file, escaped
    return music, lib


def test_index_failures_and_search_table_escape_file_names(evil_library: tuple[Path, Path], tmp_path: Path) -> None:
    music, lib = evil_library
    code, out, err = run("failures", "--library", str(lib))
    assert code == 0 and "\x1b" not in out + err and f"broken{safe_text(EVIL)}.mp3" in out
    clip = tmp_path / "clip.wav"
    write_wav(clip, tone_track([440], 10, 2))
    code, out, err = run("search", "--audio", str(clip), "--library", str(lib), "--rerank", "max")
    assert code == 0 and "\x1b" not in out + err and "\u202e" not in out
    assert "[bold]x[i]" in out.replace("\n", "")   # rich markup shown as text, not applied
    code, out, _ = run("search", "--audio", str(clip), "--library", str(lib), "--json", "--rerank", "max")
    assert code == 0 and "\\u001b[31mred" in out      # --json was safe already (JSON escapes)


def test_errors_naming_hostile_paths_are_escaped(tmp_path: Path) -> None:
    code, _, err = run("info", "--library", str(tmp_path / EVIL))
    assert code == 2 and "\x1b" not in err and "no library at" in err and len(err.strip().splitlines()) == 1


def test_a_fifo_is_refused_as_query_audio_and_by_the_decoder(evil_library: tuple[Path, Path], tmp_path: Path) -> None:
    _, lib = evil_library
    fifo = tmp_path / "q.wav"
    os.mkfifo(fifo)
    code, _, err = run("search", "--audio", str(fifo), "--library", str(lib))
    assert code == 2 and "not a regular file" in err
    with pytest.raises(DecodeError, match="not a regular file"):
        Library.open(lib, encoder=FakeEncoder()).search(audio=fifo)


def test_query_by_example_decodes_only_the_excerpt(evil_library: tuple[Path, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import songseek.engine.query.search as search_mod

    _, lib = evil_library
    clip = tmp_path / "long.wav"
    write_wav(clip, tone_track([440, 3000, 440, 3000, 440, 3000, 440, 3000], 10, 3))  # 80 s
    asked: list[tuple[float, float | None]] = []
    real = search_mod.decode

    def spy(path: Path, sr: int, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
        asked.append((start_s, end_s))
        out = real(path, sr, start_s, end_s)
        assert end_s is not None and len(out) <= round((end_s - start_s) * sr)  # never more than the excerpt
        return out

    monkeypatch.setattr(search_mod, "decode", spy)
    library = Library.open(lib, encoder=FakeEncoder())
    library.search(audio=clip, start_s=5.0)
    library.search(audio=clip, start_s=10.0, end_s=20.0)
    assert asked == [(5.0, 5.0 + MAX_EXCERPT_S), (10.0, 20.0)]
    with pytest.raises(QueryError, match="at most max_excerpt_s=30 s"):
        library.search(audio=clip, end_s=40.0, max_excerpt_s=30.0)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(QueryError, match="start_s must be a finite number of seconds"):
            library.search(audio=clip, start_s=bad)


def test_query_by_example_cuts_samples_to_the_same_excerpt(evil_library: tuple[Path, Path]) -> None:
    _, lib = evil_library
    library = Library.open(lib, encoder=FakeEncoder())
    sr = library.encoder.info.sample_rate
    x = np.random.default_rng(5).normal(0, 0.1, size=90 * sr).astype(np.float32)  # 90 s of samples

    def scores(*args: object, **kwargs: object) -> list[tuple[str, float]]:
        return [(h.track_id, h.score) for h in library.search(*args, k=5, **kwargs)]  # type: ignore[arg-type]

    assert scores(audio=x, start_s=10.0, end_s=20.0) == scores(audio=x[10 * sr : 20 * sr])
    assert scores(audio=x) == scores(audio=x[: round(MAX_EXCERPT_S * sr)])  # as a file: the first minute
    with pytest.raises(QueryError, match="at most max_excerpt_s=30 s"):
        library.search(audio=x, end_s=40.0, max_excerpt_s=30.0)
    with pytest.raises(QueryError, match="empty"):
        library.search(audio=x, start_s=100.0)
