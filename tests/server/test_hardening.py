"""Hostile and odd requests found in review: HTTP Range edge cases on the audio route, the Host check
against DNS rebinding, security headers, unexpected errors as one JSON line, races with a re-index, and
`songseek serve` options refused before anything slow."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from songseek.cli.main import app as cli_app
from songseek.engine.errors import UsageError
from songseek.server import Limits, ServerConfig, create_app
from tests.server.server_helpers import LiveServer

SECRET = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def client(served: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=served.url, timeout=60)


@pytest.fixture(scope="module")
def audio(client: httpx.Client) -> tuple[str, bytes]:
    url = client.get("/api/search", params={"q": "piano", "k": 1}).json()["hits"][0]["audio_url"].split("#")[0]
    return url, client.get(url).content


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-3", "items=0-1", "bytes=", "bytes=0-1,x",
                                    "bytes=" + "9" * 5000 + "-", "bytes=" + ",".join(["0-1"] * 101)])
def test_a_malformed_range_is_ignored(client: httpx.Client, audio: tuple[str, bytes], header: str) -> None:
    """RFC 9110: a Range the server cannot use is ignored; Starlette answered 400 in plain text."""
    url, whole = audio
    res = client.get(url, headers={"Range": header})
    assert res.status_code == 200 and res.content == whole


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{far}", "bytes=-0", "bytes={far}-,{size}-"])
def test_an_unsatisfiable_range_is_a_json_416(client: httpx.Client, audio: tuple[str, bytes], header: str) -> None:
    url, whole = audio
    res = client.get(url, headers={"Range": header.format(size=len(whole), far=len(whole) + 99)})
    assert res.status_code == 416 and res.headers["content-range"] == f"bytes */{len(whole)}"
    assert "outside the file" in res.json()["error"]


def test_satisfiable_parts_of_a_range_list_are_served(client: httpx.Client, audio: tuple[str, bytes]) -> None:
    url, whole = audio
    size = len(whole)
    res = client.get(url, headers={"Range": f"bytes=10-19,{size + 5}-"})  # Starlette: 416 for the whole list
    assert res.status_code == 206 and res.content == whole[10:20]
    assert res.headers["content-range"] == f"bytes 10-19/{size}"
    tail = client.get(url, headers={"Range": f"bytes=-{size * 3}"})  # a suffix longer than the file: all of it
    assert tail.status_code == 206 and tail.content == whole
    past = client.get(url, headers={"Range": f"bytes={size - 4}-{size * 2}"})
    assert past.status_code == 206 and past.content == whole[-4:]
    two = client.get(url, headers={"Range": "bytes=0-1, 4-5"})
    assert two.status_code == 206 and two.headers["content-type"].startswith("multipart/byteranges")


def test_a_foreign_host_is_refused_without_a_token(served: LiveServer, library: Path) -> None:
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 reads the API as same-origin."""
    with httpx.Client(base_url=served.url) as c:
        res = c.get("/api/health", headers={"Host": f"evil.example:{served.port}"})
        assert res.status_code == 400 and "localhost or 127.0.0.1" in res.json()["error"]
        for host in (f"localhost:{served.port}", "LOCALHOST.", f"127.0.0.1:{served.port}", "[::1]:80", "a.localhost"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
    live = LiveServer(create_app(ServerConfig(library=library, token=SECRET)))
    try:  # with a token the name does not matter: the token guards the data
        res = httpx.get(live.url + "/api/health", headers={"Host": "music.example",
                                                           "Authorization": f"Bearer {SECRET}"})
        assert res.status_code == 200
    finally:
        live.stop()


def test_answers_say_nosniff_and_the_page_has_a_csp(client: httpx.Client, audio: tuple[str, bytes]) -> None:
    for url in ("/", "/static/app.js", "/api/health", "/api/tracks/nope", audio[0]):
        assert client.get(url).headers.get("x-content-type-options") == "nosniff", url
    csp = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp


def test_an_unexpected_error_is_one_json_line(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(ServerConfig(library=library))

    def broken() -> None:
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(app.state.ctx.holder, "current", broken)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        res = c.get("/api/search", params={"q": "piano"})
    assert res.status_code == 500 and res.headers["content-type"] == "application/json"
    assert res.json() == {"error": "internal error (RuntimeError); the server log has the details"}


def test_a_file_removed_while_it_is_located_is_404(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-index (or a cache eviction) can remove the file between the route's checks: FileResponse's own
    stat then raised RuntimeError, a 500."""
    app = create_app(ServerConfig(library=library))
    snap = app.state.ctx.holder.current()
    tid = next(iter(snap.row_of))

    def gone(path: Path) -> tuple[Path, str]:
        raise FileNotFoundError(path)

    monkeypatch.setattr(app.state.ctx.transcoder, "playable", gone)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        res = c.get(f"/api/audio/{tid}")
    assert res.status_code == 404 and "gone from disk" in res.json()["error"]


def test_serve_refuses_a_port_out_of_range_or_taken_before_loading(library: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import songseek.server as server_pkg

    def must_not_start(*_: object, **__: object) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr(uvicorn, "run", must_not_start)  # --port 70000 silently listened on 4464 (70000 % 65536)
    monkeypatch.setattr(server_pkg, "create_app", must_not_start)
    monkeypatch.delenv("SONGSEEK_TOKEN", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve", "--library", str(library), "--port", "70000"])
    assert result.exit_code == 2 and "65535" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(cli_app, ["serve", "--library", str(library), "--port", str(port)])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1 port {port}" in result.stderr
    for bad in ("nan", "0", "-1"):
        result = runner.invoke(cli_app, ["serve", "--library", str(library), "--max-upload-mb", bad])
        assert result.exit_code == 2 and "--max-upload-mb must be a positive" in result.stderr, result.stderr
    result = runner.invoke(cli_app, ["serve", "--library", str(library), "--max-clip-s", "0"])
    assert result.exit_code == 2 and "--max-clip-s must be a positive" in result.stderr, result.stderr


@pytest.mark.parametrize("clip_s", [0.0, -1.0, math.nan, math.inf])
def test_limits_refuse_clip_bounds_that_refuse_every_clip(clip_s: float) -> None:
    with pytest.raises(UsageError, match="max_clip_s"):
        Limits(max_clip_s=clip_s)
