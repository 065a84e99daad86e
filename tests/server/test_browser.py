"""The page in a real headless Chromium (Debian's `chromium`, driven by Playwright): search, play the
segment, click the strip, filter, upload a clip, more like this, keyboard. Skips where chromium is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from songseek.cli.main import app as cli_app
from songseek.server import ServerConfig, create_app
from tests.audio_helpers import tone_track, write_wav
from tests.server.server_helpers import CHROMIUM, CHROMIUM_ARGS, QUERY, LiveServer, search_in_page

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright


def test_search_then_play_hit_one_inside_its_segment(page: Page, served: LiveServer, tmp_path: Path) -> None:
    search_in_page(page, served.url)
    assert "q=soft+piano" in page.url or "q=soft%20piano" in page.url
    hits = page.locator("#hits .hit")
    assert hits.count() == 7  # the page asks for 10; the library has 7 tracks
    first = hits.nth(0)
    start, end = float(first.get_attribute("data-start") or "nan"), float(first.get_attribute("data-end") or "nan")
    assert "–" in first.locator(".segment").inner_text()
    page.wait_for_function("document.querySelectorAll('.strip[data-ready]').length > 0")
    page.wait_for_function("document.querySelectorAll('.wave[data-ready]').length === "
                           "document.querySelectorAll('#hits .hit').length", timeout=60_000)
    shot = tmp_path / "serve.png"  # SONGSEEK_SCREENSHOT=docs/serve.png keeps it (the picture in docs/serve.md)
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("SONGSEEK_SCREENSHOT"):
        shutil.copy(shot, os.environ["SONGSEEK_SCREENSHOT"])
    first.locator(".play").click()
    page.wait_for_function("() => { const a = document.querySelector('#hits .hit audio'); "
                           "return !a.paused && a.currentTime > 0; }", timeout=20_000)
    page.wait_for_timeout(600)
    t = page.evaluate("document.querySelector('#hits .hit audio').currentTime")
    assert start <= t <= end, (start, t, end)


def test_clicking_the_strip_plays_from_there(page: Page, served: LiveServer) -> None:
    search_in_page(page, served.url)
    first = page.locator("#hits .hit").nth(0)
    page.wait_for_selector("#hits .hit .strip[data-ready]")
    strip = first.locator(".strip")
    box = strip.bounding_box()
    assert box is not None
    strip.click(position={"x": box["width"] * 0.75, "y": box["height"] / 2})
    page.wait_for_function("() => !document.querySelector('#hits .hit audio').paused", timeout=20_000)
    t = page.evaluate("document.querySelector('#hits .hit audio').currentTime")
    dur = page.evaluate("document.querySelector('#hits .hit audio').duration")
    assert abs(t - 0.75 * dur) < 0.05 * dur + 2, (t, dur)


def test_the_waveform_is_drawn_from_the_server_peaks(page: Page, served: LiveServer) -> None:
    search_in_page(page, served.url)
    page.wait_for_selector("#hits .hit .wave[data-ready]")
    # the page's own drawing, read back: the dark column of the loudest bin spans (max - min) * H / 2 pixels
    got = page.evaluate("""async () => {
      const li = document.querySelector('#hits .hit'), c = li.querySelector('.wave');
      const p = await (await fetch(`/api/tracks/${encodeURIComponent(li.dataset.trackId)}/peaks?n=${c.width}`)).json();
      let best = 0;
      for (let i = 0; i < p.bins; i++) if (p.maxs[i] - p.mins[i] > p.maxs[best] - p.mins[best]) best = i;
      const x = Math.floor(p.edges_s[best] / p.duration_s * c.width);  // the column the page paints it in
      const px = c.getContext('2d').getImageData(x, 0, 1, c.height).data;
      let dark = 0;
      for (let y = 0; y < c.height; y++) {
        if (px[4 * y] === 0x4a && px[4 * y + 1] === 0x55 && px[4 * y + 2] === 0x68) dark++;  // #4a5568
      }
      return {dark, want: (p.maxs[best] - p.mins[best]) * c.height / 2, bins: p.bins, width: c.width};
    }""")
    assert got["bins"] == got["width"] and abs(got["dark"] - got["want"]) <= 2, got  # rounding
    wave = page.locator("#hits .hit").nth(0).locator(".wave")
    box = wave.bounding_box()
    assert box is not None
    wave.click(position={"x": box["width"] * 0.25, "y": box["height"] / 2})
    page.wait_for_function("() => !document.querySelector('#hits .hit audio').paused", timeout=20_000)
    t = page.evaluate("document.querySelector('#hits .hit audio').currentTime")
    dur = page.evaluate("document.querySelector('#hits .hit audio').duration")
    assert abs(t - 0.25 * dur) < 0.05 * dur + 2, (t, dur)


def test_a_filter_narrows_the_hits_and_lives_in_the_url(page: Page, served: LiveServer) -> None:
    search_in_page(page, served.url)
    page.click("#filters-box summary")
    page.select_option("#filters select[name=artist]", "O'Brien & Sons")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#hits .hit').length === 2")
    assert set(page.locator("#hits .hit .artist").all_inner_texts()) == {"O'Brien & Sons"}
    assert "artist=O%27Brien" in page.url
    page.reload()  # a shared URL gives the same hits
    page.wait_for_function("document.querySelectorAll('#hits .hit').length === 2")


def test_upload_a_clip(page: Page, served: LiveServer, library: Path) -> None:
    page.goto(served.url + "/")
    clip = sorted((library.parent / "music" / "audio").glob("*.flac"))[3]
    page.set_input_files("#clip", str(clip))
    page.wait_for_selector("#hits .hit")
    assert "your clip" in page.inner_text("#status")
    assert page.locator("#hits .hit .title").nth(0).inner_text() == "Piece 3"


def test_more_like_this_and_keyboard(page: Page, served: LiveServer) -> None:
    search_in_page(page, served.url)
    first = page.locator("#hits .hit").nth(0)
    tid = first.get_attribute("data-track-id")
    first.locator(".like").click()
    page.wait_for_function("document.querySelector('#status').textContent.includes('more like this')")
    ids = [h.get_attribute("data-track-id") for h in page.locator("#hits .hit").all()]
    assert tid not in ids and len(ids) == 6 and f"like={tid}" in page.url
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("j")
    assert page.locator("#hits .hit").nth(1).get_attribute("class") == "hit selected"
    page.keyboard.press("k")
    page.keyboard.press(" ")
    page.wait_for_function("() => !document.querySelectorAll('#hits .hit audio')[0].paused", timeout=20_000)


def test_errors_show_in_the_page(page: Page, served: LiveServer) -> None:
    page.goto(served.url + "/?q=piano&k=1000")
    page.wait_for_selector("#error:not([hidden])")
    assert "k must be between 1 and 100" in page.inner_text("#error")


def test_random_weights_warning_is_visible(browser: BrowserContext, tmp_path: Path) -> None:
    write_wav(tmp_path / "music" / "a.wav", tone_track([220, 440], 10, 0))
    lib = tmp_path / "lib"
    result = CliRunner().invoke(cli_app, ["index", str(tmp_path / "music"), "--library", str(lib), "--encoder", "fake"])
    assert result.exit_code == 0, result.stderr
    live = LiveServer(create_app(ServerConfig(library=lib)))
    pg = browser.new_page()
    try:
        pg.goto(live.url + "/")
        pg.wait_for_selector("#warning:not([hidden])")
        assert "RANDOM weights" in pg.inner_text("#warning")
    finally:
        pg.close()
        live.stop()


def audio_state(page: Page, i: int) -> dict[str, float | bool]:
    return page.evaluate(f"(() => {{ const a = document.querySelectorAll('#hits .hit audio')[{i}]; "
                         "return {t: a.currentTime, paused: a.paused}; })()")


def test_play_segment_stops_at_its_end_every_time(page: Page, served: LiveServer) -> None:
    """The #t=start,end fragment stops only the first play: the second ran on past the segment."""
    search_in_page(page, served.url)
    first = page.locator("#hits .hit").nth(0)
    end = float(first.get_attribute("data-end") or "nan")
    for _ in range(2):
        first.locator(".play").click()
        page.wait_for_function("() => !document.querySelector('#hits .hit audio').paused", timeout=20_000)
        page.evaluate(f"document.querySelector('#hits .hit audio').currentTime = {end - 0.6}")
        page.wait_for_function("() => document.querySelector('#hits .hit audio').paused", timeout=10_000)
        state = audio_state(page, 0)
        assert end - 0.1 <= float(state["t"]) <= end + 1.0, (state, end)


def test_a_track_that_cannot_be_played_says_why(page: Page, served: LiveServer) -> None:
    """The <audio> element failed silently (a 404 for a file gone from disk showed nothing)."""
    def gone(route: object) -> None:
        route.fulfill(status=404, content_type="application/json",  # type: ignore[attr-defined]
                      body='{"error": "the file of track \'x\' is gone from disk (a.flac)"}')

    page.route("**/api/audio/**", gone)
    search_in_page(page, served.url)
    page.locator("#hits .hit").nth(0).locator(".play").click()
    page.wait_for_selector("#error:not([hidden])", timeout=20_000)
    assert "cannot play: the file of track 'x' is gone from disk" in page.inner_text("#error")


def test_a_late_answer_to_an_older_search_is_dropped(page: Page, served: LiveServer) -> None:
    # window.slowAnswered: the delayed answer's body has been read (a clone of it), so the page has had it too
    page.add_init_script("""{
      const fetch0 = window.fetch;
      window.fetch = (url, init) => String(url).includes("q=slow%20drums")
        ? new Promise((ok) => setTimeout(ok, 1500)).then(() => fetch0(url, init)).then((res) => {
            res.clone().text().finally(() => { window.slowAnswered = true; });
            return res;
          })
        : fetch0(url, init);
    }""")
    page.goto(served.url + "/")
    page.fill("#q", "slow drums")
    page.press("#q", "Enter")
    page.fill("#q", QUERY)
    page.press("#q", "Enter")
    page.wait_for_function(f"document.querySelector('#status').textContent.includes({QUERY!r})")
    # the slow answer has come by now (not a fixed wait: on a slow machine it came after it), and the page
    # has had time to act on it
    page.wait_for_function("window.slowAnswered === true", timeout=60_000)
    page.wait_for_timeout(500)
    assert QUERY in page.inner_text("#status") and "slow drums" not in page.inner_text("#status")


def test_keys_work_after_a_button_was_clicked(page: Page, served: LiveServer) -> None:
    """j/k did nothing while a hit's button had the focus, i.e. right after clicking play."""
    search_in_page(page, served.url)
    page.locator("#hits .hit").nth(0).locator(".play").click()
    page.keyboard.press("j")
    assert page.locator("#hits .hit").nth(1).get_attribute("class") == "hit selected"
    page.keyboard.press(" ")  # plays the selected hit, not the focused button of the first one again
    page.wait_for_function("() => !document.querySelectorAll('#hits .hit audio')[1].paused", timeout=20_000)
    assert audio_state(page, 0)["paused"]
    page.keyboard.press("Control+j")  # the browser's shortcuts are left alone
    assert page.locator("#hits .hit").nth(1).get_attribute("class") == "hit selected"


def test_the_page_runs_under_its_csp(playwright: Playwright, served: LiveServer) -> None:
    strict = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        pg = strict.new_page()
        violations: list[str] = []
        pg.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
        failed: list[str] = []  # every request the page makes answers (a favicon 404 showed in the console)
        pg.on("response", lambda res: failed.append(f"{res.status} {res.url}") if res.status >= 400 else None)
        pg.goto(served.url + "/")
        pg.fill("#q", QUERY)
        pg.press("#q", "Enter")
        pg.wait_for_selector("#hits .hit .wave[data-ready]", timeout=60_000)
        pg.wait_for_selector("#hits .hit .strip[data-ready]", timeout=60_000)
        assert not violations, violations
        assert not failed, failed
    finally:
        strict.close()
