"""Security: no path traversal, the token guards API and audio (and audio still plays via the cookie),
no exposure without a token, bounded pool with 503 + Retry-After, generation pickup without restart."""

from __future__ import annotations

import http.client
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from songseek.cli.main import app as cli_app
from songseek.server import Limits, ServerConfig, create_app
from songseek.server.app import STATIC
from tests.server.server_helpers import LiveServer

SECRET = "s3cret-token-for-tests-0123456789"


def raw_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``path`` byte for byte (http.client does not normalise ../ or %2e%2e the way browsers do)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    res = conn.getresponse()
    return res.status, res.read()


TRAVERSALS = [
    "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/%252e%252e/%252e%252e/etc/passwd",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/....//....//etc/passwd",
    "/api/audio/..%2F..%2F..%2Fetc%2Fpasswd", "/api/audio/%2Fetc%2Fpasswd", "/api/audio//etc/passwd",
    "/api/audio/../../etc/passwd", "/api/audio/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/tracks/..%2F..%2Fetc%2Fpasswd",
    "/../../etc/passwd", "//etc/passwd", "/etc/passwd", "/static/link-out", "/static/link-dir/passwd",
    "/api/audio/~root", "/api/audio/C:%5Cwindows%5Cwin.ini", "/static/..\\..\\etc\\passwd",
]


@pytest.fixture(scope="module")
def static_with_symlinks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("static")
    for f in STATIC.iterdir():
        shutil.copy(f, folder / f.name)
    (folder / "link-out").symlink_to("/etc/passwd")
    (folder / "link-dir").symlink_to("/etc")
    return folder


@pytest.fixture(scope="module")
def traversal_server(library: Path, static_with_symlinks: Path):
    live = LiveServer(create_app(ServerConfig(library=library, static_dir=static_with_symlinks)))
    yield live
    live.stop()


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_reaches_a_file_outside(traversal_server: LiveServer, path: str) -> None:
    status, body = raw_get(traversal_server.port, path)
    assert 400 <= status < 500, (path, status)
    assert b"root:" not in body and b"[fonts]" not in body


def test_library_paths_are_not_accepted_as_ids(traversal_server: LiveServer, library: Path) -> None:
    some_file = next((library.parent / "music" / "audio").glob("*.flac"))
    status, body = raw_get(traversal_server.port, "/api/audio/" + str(some_file).replace("/", "%2F"))
    assert status == 404 and not body.startswith(b"fLaC")


@pytest.fixture(scope="module")
def token_server(library: Path):
    live = LiveServer(create_app(ServerConfig(library=library, token=SECRET)))
    yield live
    live.stop()


def test_token_guards_api_and_audio(token_server: LiveServer) -> None:
    with httpx.Client(base_url=token_server.url) as c:
        assert c.get("/api/health").status_code == 401
        assert c.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/openapi.json").status_code == 401
        ok = c.get("/api/search", params={"q": "piano", "k": 1}, headers={"Authorization": f"Bearer {SECRET}"})
        assert ok.status_code == 200
        audio_url = ok.json()["hits"][0]["audio_url"].split("#")[0]
        assert c.get(audio_url, headers={"Range": "bytes=0-99"}).status_code == 401
        assert c.get("/").status_code == 200  # the page itself holds no data
        assert c.get("/?token=wrong").status_code == 401
    with httpx.Client(base_url=token_server.url, follow_redirects=True) as browser:
        login = browser.get(f"/?token={SECRET}")  # follows the redirect to /, keeps the cookie
        assert login.status_code == 200 and str(login.url).endswith("/")
        assert "httponly" in login.history[0].headers["set-cookie"].lower()
        res = browser.get(audio_url, headers={"Range": "bytes=0-99"})
        assert res.status_code == 206 and len(res.content) == 100
    with httpx.Client(base_url=token_server.url) as player:
        assert player.get(audio_url, params={"token": SECRET}).status_code == 200


def test_exposed_host_without_token_exits_with_one_line(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SONGSEEK_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--library", str(library), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "token" in lines[0]
    monkeypatch.setenv("SONGSEEK_TOKEN", "short")
    result = CliRunner().invoke(cli_app, ["serve", "--library", str(library), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "shorter than 16" in result.stderr


def test_full_pool_answers_503_with_retry_after(library: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "spool"  # where the server puts uploads, so a leaked one shows
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    app = create_app(ServerConfig(library=library, limits=Limits(workers=1, queue=0)))
    live = LiveServer(app)
    release = threading.Event()
    held = app.state.ctx.holder.current().library
    search = held.search

    def hold(*args: Any, **kwargs: Any) -> Any:  # the first search waits in its worker until released
        release.wait(300)
        return search(*args, **kwargs)

    held.search = hold
    try:
        first = threading.Thread(target=lambda: httpx.get(live.url + "/api/search", params={"q": "piano"},
                                                          timeout=330))
        first.start()
        deadline = time.monotonic() + 120
        while app.state.ctx.pool.inflight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.ctx.pool.inflight == 1, "the first search never reached the pool"
        t0 = time.perf_counter()
        res = httpx.get(live.url + "/api/search", params={"q": "drums"}, timeout=120)
        assert res.status_code == 503 and res.headers["retry-after"] == "1"
        assert "busy" in res.json()["error"]
        # answered, not queued behind the held search (which is held until `release`, up to 300 s)
        assert time.perf_counter() - t0 < 60
        clip = next((library.parent / "music" / "audio").glob("*.flac")).read_bytes()
        refused = httpx.post(live.url + "/api/search/audio", files={"file": ("c.flac", clip)}, timeout=120)
        assert refused.status_code == 503
        assert not list(spool.glob("songseek-clip-*")), "a refused upload left its temporary file behind"
    finally:
        release.set()
        first.join(60)
        live.stop()


def test_upload_limits_are_413(library: Path, tmp_path: Path) -> None:
    app = create_app(ServerConfig(library=library, limits=Limits(max_upload_bytes=10_000, max_clip_s=5.0)))
    live = LiveServer(app)
    try:
        flac = next((library.parent / "music" / "audio").glob("*.flac"))
        with httpx.Client(base_url=live.url, timeout=60) as c:
            big = c.post("/api/search/audio", files={"file": ("a.flac", flac.read_bytes(), "audio/flac")})
            assert big.status_code == 413 and "MiB" in big.json()["error"]
            small = tmp_path / "s.flac"
            small.write_bytes(flac.read_bytes()[:9_000])  # a truncated but decodable start of the file
            span = c.post("/api/search/audio", files={"file": ("s.flac", small.read_bytes())},
                          data={"start": "0", "end": "30"})
            assert span.status_code == 413 and "at most 5 s" in span.json()["error"]
            junk = c.post("/api/search/audio", files={"file": ("x.mp3", b"not audio at all")})
            assert junk.status_code == 400
            empty = c.post("/api/search/audio", files={"file": ("x.mp3", b"")})
            assert empty.status_code == 400 and "empty" in empty.json()["error"]
    finally:
        live.stop()


def test_new_generation_is_picked_up_without_restart(library: Path, tmp_path: Path) -> None:
    from songseek.benchmarks.synth import write_dataset

    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    live = LiveServer(create_app(ServerConfig(library=lib)))
    try:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            before = c.get("/api/health").json()
            write_dataset(tmp_path / "more", 2, seed=99, audio_format="wav")
            result = CliRunner().invoke(cli_app, ["index", str(tmp_path / "more" / "audio"), "--library", str(lib),
                                                  "--no-prune"])
            assert result.exit_code == 0, result.stderr
            after = c.get("/api/health").json()
            assert after["generation"] > before["generation"] and after["tracks"] == before["tracks"] + 2
            hits = c.get("/api/search", params={"q": "piano", "k": 9}).json()
            assert hits["generation"] == after["generation"] and len(hits["hits"]) == 9
    finally:
        live.stop()


def test_a_file_gone_from_disk_is_404_saying_so(library: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    app = create_app(ServerConfig(library=lib))
    snap = app.state.ctx.holder.current()
    live = LiveServer(app)
    try:
        with httpx.Client(base_url=live.url) as c:
            tid = next(t for t, r in snap.row_of.items() if str(snap.column("path", r)).endswith(".aiff"))
            path = Path(str(snap.column("path", snap.row_of[tid])))
            moved = tmp_path / "moved.aiff"
            shutil.move(path, moved)
            try:
                res = c.get(f"/api/audio/{tid}")
                assert res.status_code == 404 and "gone from disk" in res.json()["error"]
            finally:
                shutil.move(moved, path)
    finally:
        live.stop()
