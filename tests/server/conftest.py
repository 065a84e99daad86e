"""A real small library for the server tests: synthesised music (FLAC with tags, plus one AIFF copy that the
browser cannot play), indexed with the bundled demo encoder; a live server on 127.0.0.1; and, for the browser
tests, Debian's chromium driven by Playwright (they skip, saying why, where either is absent)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from songseek.cli.main import app as cli_app
from tests.server.server_helpers import CHROMIUM, CHROMIUM_ARGS, LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

ARTISTS = ("Ada Lovelace Trio", "O'Brien & Sons", "Cluster")


def write_aiff(src: Path, dst: Path) -> None:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="aiff") as out:
        stream = inp.streams.audio[0]
        o = out.add_stream("pcm_s16be", rate=stream.codec_context.sample_rate, layout="mono")
        res = av.AudioResampler(format="s16", layout="mono", rate=stream.codec_context.sample_rate)
        for frame in inp.decode(stream):
            for piece in res.resample(frame):
                out.mux(o.encode(piece))
        out.mux(o.encode(None))


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mutagen.flac import FLAC

    from songseek.benchmarks.synth import write_dataset

    root = tmp_path_factory.mktemp("serve")
    music = root / "music"
    write_dataset(music, 6, seed=11, audio_format="flac")
    files = sorted((music / "audio").glob("*.flac"))
    for i, f in enumerate(files):
        tags = FLAC(f)
        tags["artist"] = ARTISTS[i % 3]
        tags["album"] = f"Album {i % 2}"
        tags["genre"] = ("ambient", "jazz")[i % 2]
        tags["date"] = str(1990 + i)
        tags["title"] = f"Piece {i}"
        tags.save()
    write_aiff(files[0], music / "audio" / "copy.aiff")
    lib = root / "lib"
    result = CliRunner().invoke(cli_app, ["index", str(music / "audio"), "--library", str(lib), "--encoder", "demo",
                                          "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 7
    return lib


@pytest.fixture(scope="session")
def served(library: Path) -> Iterator[LiveServer]:
    from songseek.server import ServerConfig, create_app

    live = LiveServer(create_app(ServerConfig(library=library)))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[dev]')")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): browser tests skipped")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    ctx = playwright.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium-profile")),
                                                       executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                                       viewport={"width": 1100, "height": 900},
                                                       bypass_csp=True)  # the checks' wait_for_function evals
    yield ctx
    ctx.close()


@pytest.fixture
def page(browser: BrowserContext, served: LiveServer) -> Iterator[Page]:
    """A page of the shared browser; the test fails if the page raised an uncaught error."""
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    pg.close()
    assert not errors, errors
