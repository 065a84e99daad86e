"""The page used as a person would, in Debian's chromium: the back/forward buttons restore the whole search
(filters, query kind, the empty page), "Apply" re-runs a clip search, the page's state is announced and
its controls are named, hostile tags and file names stay text, a shared URL with a token keeps its query."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from mutagen.flac import FLAC
from typer.testing import CliRunner

from songseek.benchmarks.synth import write_dataset
from songseek.cli.main import app as cli_app
from songseek.server import ServerConfig, create_app
from tests.server.server_helpers import QUERY, LiveServer, search_in_page

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

EVIL = '<img src=x onerror="window.__xss=1">'
EVIL_FILE = '<svg onload="window.__xss=2"> #x?y'
SECRET = "s3cret-token-for-session14-0123456789"


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tracks under music/audio, indexed in lib: markup in every tag of one, markup (and # ?) in the
    file name of an untitled one."""
    root = tmp_path_factory.mktemp("hostile")
    write_dataset(root / "music", 3, seed=5, audio_format="flac")
    files = sorted((root / "music" / "audio").glob("*.flac"))
    tags = FLAC(files[0])
    for key in ("title", "artist", "album", "genre"):
        tags[key] = EVIL
    tags.save()
    files[1].rename(files[1].with_name(EVIL_FILE + ".flac"))
    result = CliRunner().invoke(cli_app, ["index", str(root / "music" / "audio"), "--library", str(root / "lib"),
                                          "--encoder", "demo", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 3
    return root


@pytest.fixture(scope="module")
def hostile(hostile_root: Path) -> Iterator[LiveServer]:
    live = LiveServer(create_app(ServerConfig(library=hostile_root / "lib")))
    yield live
    live.stop()


def count_is(page: Page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#hits .hit').length === {n}")


def test_back_after_a_filter_drops_the_filter(page: Page, served: LiveServer) -> None:
    """Back from ?artist=X&q=… to ?q=… kept artist=X selected and searched with it: 2 hits under a URL of 7."""
    search_in_page(page, served.url)
    count_is(page, 7)
    page.click("#filters-box summary")
    page.select_option("#filters select[name=artist]", "O'Brien & Sons")
    page.fill("#filters input[name=k]", "3")
    page.click("#filters button[type=submit]")
    count_is(page, 2)
    page.go_back()
    page.wait_for_function("!location.search.includes('artist')")
    count_is(page, 7)
    assert page.eval_on_selector("#filters select[name=artist]", "e => e.value") == ""
    assert page.input_value("#filters input[name=k]") == "10"
    page.go_forward()
    count_is(page, 2)
    assert page.eval_on_selector("#filters select[name=artist]", "e => e.value") == "O'Brien & Sons"


def test_forward_to_more_like_this_then_apply_stays_more_like_this(page: Page, served: LiveServer) -> None:
    """Forward to ?like=… left the old text in the box, so Apply ran that text search instead."""
    search_in_page(page, served.url)
    first = page.locator("#hits .hit").nth(0)
    tid = first.get_attribute("data-track-id")
    first.locator(".like").click()
    page.wait_for_function("document.querySelector('#status').textContent.includes('more like this')")
    page.go_back()
    page.wait_for_function(f"document.querySelector('#status').textContent.includes({QUERY!r})")
    assert page.input_value("#q") == QUERY
    page.go_forward()
    page.wait_for_function("document.querySelector('#status').textContent.includes('more like this')")
    assert page.input_value("#q") == ""
    page.click("#filters-box summary")
    page.select_option("#filters select[name=genre]", "jazz")
    page.click("#filters button[type=submit]")
    page.wait_for_function("location.search.includes('genre=jazz')")
    assert f"like={tid}" in page.url and "q=" not in page.url
    page.wait_for_function("document.querySelector('#status').textContent.includes('more like this')")


def test_back_to_the_empty_page_empties_it(page: Page, served: LiveServer) -> None:
    """Back to / (no query) left the last results and query on a page whose URL asks for none."""
    search_in_page(page, served.url)
    page.go_back()
    page.wait_for_function("location.search === ''")
    page.wait_for_function("document.querySelectorAll('#hits .hit').length === 0")
    assert page.input_value("#q") == "" and page.inner_text("#status") == ""


def test_apply_after_a_clip_search_reruns_it_with_the_filters(page: Page, served: LiveServer, library: Path) -> None:
    """After a clip search, Apply did nothing at all (no query in the box, the last query not text or like)."""
    page.goto(served.url + "/")
    clip = sorted((library.parent / "music" / "audio").glob("*.flac"))[3]
    page.set_input_files("#clip", str(clip))
    count_is(page, 7)
    page.click("#filters-box summary")
    page.select_option("#filters select[name=artist]", "O'Brien & Sons")
    page.click("#filters button[type=submit]")
    count_is(page, 2)
    assert "your clip" in page.inner_text("#status")
    assert set(page.locator("#hits .hit .artist").all_inner_texts()) == {"O'Brien & Sons"}


def test_apply_with_nothing_to_search_says_so(page: Page, served: LiveServer) -> None:
    page.goto(served.url + "/")
    page.click("#filters-box summary")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "type what the music sounds like" in page.inner_text("#error")


def test_a_failed_search_does_not_leave_the_old_hits(page: Page, served: LiveServer) -> None:
    """An error left the previous query's hits under it, with no status saying they were not for this one."""
    search_in_page(page, served.url)
    page.fill("#q", "piano " * 500)  # past the server's 2,000 characters: a 400
    page.press("#q", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert "at most 2,000" in page.inner_text("#error")
    assert page.locator("#hits .hit").count() == 0


def test_results_are_announced_and_every_control_has_a_name(page: Page, served: LiveServer) -> None:
    """The hit count was not in a live region (a screen reader heard nothing after Enter), and each hit's
    buttons and player had the same name as every other hit's ("▶ play segment", an unnamed audio)."""
    search_in_page(page, served.url)
    assert "hits for" in page.get_by_role("status").inner_text()
    first = page.locator("#hits .hit").nth(0)
    title = first.locator(".title").inner_text()
    names = page.evaluate("""() => [...document.querySelectorAll('#hits .hit')].map((li) => [
      li.querySelector('.play').getAttribute('aria-label'), li.querySelector('.like').getAttribute('aria-label'),
      li.querySelector('audio').getAttribute('aria-label')])""")
    assert names[0] == [f"play segment of {title}", f"more like {title}", f"player: {title}"]
    assert len({n[0] for n in names}) == len(names)
    page.get_by_role("button", name=f"play segment of {title}").click()
    page.wait_for_function("() => !document.querySelector('#hits .hit audio').paused", timeout=20_000)


def test_hostile_tags_and_file_names_stay_text(browser: BrowserContext, hostile: LiveServer) -> None:
    pg = browser.new_page()
    try:
        pg.goto(hostile.url + "/")
        pg.fill("#q", QUERY)
        pg.press("#q", "Enter")
        count_is(pg, 3)
        pg.wait_for_timeout(500)
        titles = pg.locator("#hits .hit .title").all_inner_texts()
        assert EVIL in titles and EVIL_FILE + ".flac" in titles
        assert pg.locator("#hits img, #hits svg").count() == 0
        assert pg.evaluate("window.__xss") is None
        assert pg.get_by_role("button", name=f"play segment of {EVIL}").count() == 1
        assert EVIL in pg.eval_on_selector_all("#filters select[name=artist] option", "os => os.map((o) => o.value)")
    finally:
        pg.close()


def test_a_shared_url_with_the_token_keeps_its_query(library: Path) -> None:
    """/?token=T&q=… set the cookie and redirected to a bare / : the shared search was lost."""
    live = LiveServer(create_app(ServerConfig(library=library, token=SECRET)))
    try:
        with httpx.Client(base_url=live.url) as c:
            r = c.get("/", params={"token": SECRET, "q": "piano & drums", "artist": "O'Brien & Sons"})
            assert r.status_code == 303
            loc = httpx.URL(r.headers["location"])
            assert loc.path == "/" and "token" not in loc.params
            assert loc.params["q"] == "piano & drums" and loc.params["artist"] == "O'Brien & Sons"
            assert c.get("/", params={"token": SECRET}).headers["location"] == "/"
    finally:
        live.stop()


def test_a_long_clip_can_be_cut_to_an_excerpt_in_the_page(browser: BrowserContext, hostile: LiveServer,
                                                          hostile_root: Path, tmp_path: Path) -> None:
    """A whole song dropped on the page got "give start and end" and the page had nowhere to give them."""
    track = next(p for p in (hostile_root / "music" / "audio").glob("*.flac") if not p.name.startswith("<"))
    clip = tmp_path / "whole song.flac"
    shutil.copy(track, clip)
    pg = browser.new_page()
    try:
        pg.goto(hostile.url + "/")
        pg.set_input_files("#clip", str(clip))
        pg.wait_for_selector("#error:not([hidden])")
        assert "longer than 60 s" in pg.inner_text("#error")
        pg.fill("#clip-start", "10")
        pg.fill("#clip-end", "40")
        pg.press("#clip-end", "Enter")
        count_is(pg, 3)
        assert "your clip" in pg.inner_text("#status") and pg.locator("#error").is_hidden()
    finally:
        pg.close()


def test_tab_into_a_hit_selects_it(page: Page, served: LiveServer) -> None:
    """Tab to hit 3's button left hit 1 selected: j then jumped to hit 2 and space played that one."""
    search_in_page(page, served.url)
    page.locator("#hits .hit").nth(0).locator(".play").focus()
    for _ in range(40):  # play, the player's own controls, more like this: hit 1 ... to hit 4's play button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('.hit') === document.querySelectorAll('#hits .hit')[3]"):
            break
    assert page.evaluate("document.activeElement.className") == "play"
    hits = page.locator("#hits .hit")
    assert hits.nth(3).get_attribute("aria-current") == "true"
    assert "selected" in (hits.nth(3).get_attribute("class") or "")
    assert page.locator("#hits .hit[aria-current]").count() == 1
    page.keyboard.press("j")
    assert hits.nth(4).get_attribute("aria-current") == "true"
    page.keyboard.press(" ")
    page.wait_for_function("() => !document.querySelectorAll('#hits .hit audio')[4].paused", timeout=20_000)


def test_a_long_name_without_spaces_wraps(page: Page, served: LiveServer) -> None:
    """A 300-character title with no spaces (a file name joined by underscores) made the page 3,500 px wide."""
    def long_title(route: object) -> None:
        res = route.fetch()  # type: ignore[attr-defined]
        body = res.json()
        body["hits"][0]["title"] = "A_" * 150
        body["hits"][0]["album"] = "C" * 120
        route.fulfill(response=res, json=body)  # type: ignore[attr-defined]

    page.route("**/api/search?**", long_title)
    search_in_page(page, served.url)
    assert page.locator("#hits .hit .title").nth(0).inner_text() == "A_" * 150
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths


def test_every_field_has_a_distinct_name(page: Page, served: LiveServer) -> None:
    page.goto(served.url + "/")
    page.click("#filters-box summary")
    for name in ("clip from (seconds)", "clip to (seconds)", "year to", "year from", "text query"):
        assert page.get_by_label(name, exact=True).count() == 1, name
