"""Edges of the server's HTTP plumbing that the route tests leave open, each against a naive reference:
Range parsing (audio.py), the loopback Host check (guard.py), the access token (auth.py), the body bound
(body_limit.py), the bounded pool (pool.py), the start-up settings (config.py) and error mapping (errors.py).
None of these needs a library."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from songseek.engine.errors import (
    DecodeError,
    LibraryError,
    MissingDependencyError,
    QueryError,
    SongseekError,
    UsageError,
    WeightsNotFoundError,
)
from songseek.server.audio import MAX_RANGES, byte_ranges
from songseek.server.auth import COOKIE, TokenMiddleware
from songseek.server.body_limit import BodyLimit
from songseek.server.config import Limits, check_exposure, is_loopback, read_token
from songseek.server.errors import error_response, status_for
from songseek.server.guard import PAGE_CSP, Guard, loopback_name
from songseek.server.pool import BoundedPool, Busy

SECRET = "a-token-of-more-than-16-chars-42"

# ---------------------------------------------------------------------------------------------- Range


def _digits(s: str) -> bool:
    return 0 < len(s) <= 19 and all(c in "0123456789" for c in s)


def naive_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """RFC 9110 §14, written out by hand: None to ignore the header, [] for 416."""
    if "=" not in header:
        return None
    i = header.index("=")
    unit, spec = header[:i], header[i + 1:]
    parts = spec.split(",")
    if unit.strip().lower() != "bytes" or len(parts) > 100:
        return None
    out = []
    if all(part.strip(" ") == "" for part in parts):
        return None
    for part in parts:
        if part.strip(" ") == "":  # an empty list element is skipped (RFC 9110 §5.6.1)
            continue
        if part.count("-") != 1:
            return None
        left, right = (s.strip(" ") for s in part.split("-"))
        if (left and not _digits(left)) or (right and not _digits(right)) or (not left and not right):
            return None
        if left and right and int(right) < int(left):
            return None
        if not left:
            n = int(right)
            if n > 0 and size > 0:
                out.append((size - n if n < size else 0, size - 1))
        else:
            a = int(left)
            if a < size:
                b = size - 1 if not right or int(right) >= size else int(right)
                out.append((a, b))
    return out


def _headers() -> Iterator[str]:
    values = ["", "0", "1", "4", "5", "9", "10", "11", "36", "37", "38", "99", "9" * 19, "9" * 20]
    specs = [f"{a}-{b}" for a, b in itertools.product(values, values)]
    for s in specs:
        yield "bytes=" + s
    for s in ("5-5", "0-0", "-1", "-10", "-11", "10-", "11-", "0-", " 3 - 7 ", "1-2-3", "a-1", "+1-2", "-"):
        for unit in ("bytes", "Bytes", " BYTES ", "byte", "items"):
            yield f"{unit}={s}"
    yield "bytes 0-1"
    for a, b in itertools.combinations(["0-1", "4-", "-3", "20-30", "11-", "5-5"], 2):
        yield f"bytes={a},{b}"
        yield f"bytes={a}, {b}"
    for s in ("0-1,,2-3", ",0-1", "0-1,", " , 4-", ",", " ", ",,", "0-1, ,-2", ",20-30"):
        yield "bytes=" + s
    yield "bytes=" + ",".join(["0-1"] * MAX_RANGES)
    yield "bytes=" + ",".join(["0-1"] * (MAX_RANGES + 1))


@pytest.mark.parametrize("size", [0, 1, 10, 11, 37])
def test_byte_ranges_equal_a_naive_reading_of_rfc_9110(size: int) -> None:
    for header in _headers():
        assert byte_ranges(header, size) == naive_ranges(header, size), (header, size)


def test_byte_ranges_spot_checks() -> None:
    assert byte_ranges("bytes=5-5", 10) == [(5, 5)]  # one byte: first == last is a range, not reversed
    assert byte_ranges("Bytes=0-1", 10) == [(0, 1)]  # the unit is case-insensitive
    assert byte_ranges("bytes=10-", 10) == []  # starts at the size: unsatisfiable
    assert byte_ranges("bytes=-5", 0) == []  # an empty file has no suffix to give
    assert byte_ranges("bytes=-3", 10) == [(7, 9)]
    assert byte_ranges("bytes=" + "9" * 20 + "-", 10) is None  # past any size: malformed, not a 416
    assert byte_ranges("bytes=" + ",".join(["2-3"] * MAX_RANGES), 10) == [(2, 3)] * MAX_RANGES
    assert byte_ranges("bytes=0-1,,2-3", 10) == [(0, 1), (2, 3)]  # empty list elements are skipped
    assert byte_ranges("bytes=,", 10) is None  # but a list of nothing is malformed


# ---------------------------------------------------------------------------------------------- Host


@pytest.mark.parametrize(("host", "ok"), [
    ("localhost", True), ("LOCALHOST", True), ("LocalHost:8000", True), ("localhost.", True),
    ("localhost.:80", True), ("a.localhost", True), ("x.y.localhost:1", True), ("127.0.0.1", True),
    ("127.9.9.9:80", True), ("::1", True), ("[::1]", True), ("[::1]:8000", True), (" 127.0.0.1 ", True),
    ("evil.example", False), ("localhost.evil.example", False), ("evillocalhost", False),
    ("127.0.0.1.nip.io", False), ("10.0.0.1", False), ("[::2]:80", False), ("[::1", False), ("", False),
    ("0.0.0.0", False),
])
def test_loopback_names(host: str, ok: bool) -> None:
    assert loopback_name(host) is ok


def _asgi_call(app: Any, path: str, headers: list[tuple[bytes, bytes]], body_chunks: list[bytes] | None = None
               ) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP request straight through an ASGI app (no client adding headers of its own)."""
    chunks = list(body_chunks or [b""])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST" if body_chunks else "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234), "root_path": "", "asgi": {"version": "3.0"}}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start.get("headers", [])), body


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("hello")(scope, receive, send)


def test_a_request_without_host_passes_the_loopback_guard() -> None:
    """HTTP/1.0 clients may send no Host: nothing names another site, so there is nothing to refuse."""
    status, headers, body = _asgi_call(Guard(_hello, loopback_only=True), "/api/health", [])
    assert status == 200 and body == b"hello" and headers[b"x-content-type-options"] == b"nosniff"
    status, _, _ = _asgi_call(Guard(_hello, loopback_only=True), "/api/health", [(b"host", b"evil.example")])
    assert status == 400


def test_the_csp_is_the_pages_alone_and_a_routes_own_is_kept() -> None:
    async def own(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("x", headers={"content-security-policy": "sandbox"})(scope, receive, send)

    _, api, _ = _asgi_call(Guard(_hello, loopback_only=False), "/api/health", [(b"host", b"localhost")])
    _, page, _ = _asgi_call(Guard(_hello, loopback_only=False), "/", [(b"host", b"localhost")])
    _, kept, _ = _asgi_call(Guard(own, loopback_only=False), "/", [(b"host", b"localhost")])
    assert b"content-security-policy" not in api and page[b"content-security-policy"] == PAGE_CSP.encode()
    assert kept[b"content-security-policy"] == b"sandbox"


# ---------------------------------------------------------------------------------------------- token


def _token_app() -> Starlette:
    async def data(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    routes = [Route(p, data) for p in ("/", "/api/x", "/docs", "/redoc", "/openapi.json", "/static/app.js")]
    return Starlette(routes=routes, middleware=[Middleware(TokenMiddleware, token=SECRET)])


def test_every_documentation_route_needs_the_token() -> None:
    with TestClient(_token_app()) as c:
        for path in ("/api/x", "/docs", "/redoc", "/openapi.json"):
            res = c.get(path)
            assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer", path
            assert set(res.json()) == {"error"}
        assert c.get("/static/app.js").status_code == 200 and c.get("/").status_code == 200


@pytest.mark.parametrize("header", [f"Bearer {SECRET}", f"bearer {SECRET}", f"BEARER {SECRET}",
                                    f"Bearer   {SECRET}  "])
def test_the_bearer_scheme_is_case_insensitive_and_spaces_around_the_token_are_ignored(header: str) -> None:
    with TestClient(_token_app()) as c:
        assert c.get("/api/x", headers={"Authorization": header}).status_code == 200


@pytest.mark.parametrize("header", [f"Bearer {SECRET}x", f"Basic {SECRET}", SECRET, "Bearer ", f"Bearer{SECRET}"])
def test_a_wrong_authorization_is_401(header: str) -> None:
    with TestClient(_token_app()) as c:
        assert c.get("/api/x", headers={"Authorization": header}).status_code == 401


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_login_cookie_is_strict_httponly_and_secure_over_https(scheme: str) -> None:
    with TestClient(_token_app(), base_url=f"{scheme}://testserver", follow_redirects=False) as c:
        res = c.get("/", params={"token": SECRET})
        assert res.status_code == 303 and res.headers["location"] == "/"  # the token leaves the address bar
        cookie = [p.strip().lower() for p in res.headers["set-cookie"].split(";")]
        assert cookie[0] == f"{COOKIE}={SECRET}".lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and ("secure" in cookie) == (scheme == "https")
    with TestClient(_token_app(), base_url=f"{scheme}://testserver", follow_redirects=False) as c:  # no cookie
        assert c.get("/", params={"token": "wrong"}).status_code == 401
        assert c.get("/api/x", params={"token": SECRET}).status_code == 200  # for players given only a URL
        assert c.get("/api/x", params={"token": "wrong"}).status_code == 401


# ---------------------------------------------------------------------------------------------- body bound


async def _read_all(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    await PlainTextResponse(str(len(body)))(scope, receive, send)


def _limited(limit: int) -> Any:
    from starlette.exceptions import HTTPException

    inner = BodyLimit(_read_all, lambda _: limit)

    async def app(scope: Any, receive: Any, send: Any) -> None:  # what FastAPI's handler does with the 413
        try:
            await inner(scope, receive, send)
        except HTTPException as exc:
            await error_response(exc.status_code, str(exc.detail))(scope, receive, send)
    return app


@pytest.mark.parametrize(("chunks", "declared", "status"), [
    ([b"x" * 10], True, 200), ([b"x" * 11], True, 413),      # Content-Length: the bound itself passes
    ([b"x" * 10], False, 200), ([b"x" * 11], False, 413),    # streamed in one piece
    ([b"x" * 4] * 2 + [b"x" * 2], False, 200),               # streamed: the bound is on the sum of the pieces
    ([b"x" * 6, b"x" * 5], False, 413), ([b"x"] * 11, False, 413),
])
def test_the_body_bound_is_on_the_whole_body_and_inclusive(chunks: list[bytes], declared: bool, status: int) -> None:
    total = sum(len(c) for c in chunks)
    headers = [(b"content-length", str(total).encode())] if declared else []
    got, _, body = _asgi_call(_limited(10), "/api/x", headers, chunks)
    assert got == status
    if status == 200:
        assert body == str(total).encode()


def test_a_content_length_that_is_not_a_number_is_left_to_the_stream_check() -> None:
    got, _, body = _asgi_call(_limited(10), "/api/x", [(b"content-length", b"abc")], [b"x" * 5])
    assert got == 200 and body == b"5"
    got, _, _ = _asgi_call(_limited(10), "/api/x", [(b"content-length", b"-5")], [b"x" * 50])
    assert got == 413


def test_body_limit_per_path() -> None:
    lim = Limits(max_upload_bytes=1000, max_body_bytes=77)
    for path in ("/api/search/audio", "/api/search/audio/"):
        assert lim.body_limit(path) == 1000 + 64 * 1024  # room for the multipart headers around the file
    for path in ("/api/search/batch", "/api/search", "/api/search/audiox", "/"):
        assert lim.body_limit(path) == 77


# ---------------------------------------------------------------------------------------------- pool


def test_the_pool_holds_workers_plus_queue_and_frees_each_slot() -> None:
    async def main() -> None:
        pool = BoundedPool(workers=1, queue=1)
        gate = threading.Event()
        try:
            first = asyncio.ensure_future(pool.run(lambda: gate.wait(30)))
            second = asyncio.ensure_future(pool.run(lambda: 2))
            await asyncio.sleep(0)
            assert pool.inflight == 2
            with pytest.raises(Busy):
                await pool.run(lambda: 3)
            gate.set()
            assert await first is True and await second == 2
            for i in range(50):  # far more than its capacity, one after another: every slot comes back
                assert await pool.run(lambda i=i: i) == i  # type: ignore[misc]
            await asyncio.sleep(0.05)
            assert pool.inflight == 0
        finally:
            gate.set()
            pool.shutdown()
        with pytest.raises(RuntimeError):  # a pool shut down refuses work and keeps no slot for it
            await pool.run(lambda: 4)
        assert pool.inflight == 0

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------- config


def test_limits_bounds_are_inclusive_where_they_should_be() -> None:
    Limits(workers=1, queue=0, max_upload_bytes=1, max_clip_s=1e-3)
    for bad in ({"workers": 0}, {"queue": -1}, {"max_upload_bytes": 0}, {"max_clip_s": 0.0},
                {"max_clip_s": 1e6}):
        with pytest.raises(UsageError):
            Limits(**bad)  # type: ignore[arg-type]


def test_is_loopback() -> None:
    for host in ("localhost", "127.0.0.1", "127.1.2.3", "::1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.1", "example.com", "LOCALHOST.", ""):
        assert not is_loopback(host), host


def test_check_exposure() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("localhost", None)
    check_exposure("0.0.0.0", SECRET)
    with pytest.raises(UsageError, match="token"):
        check_exposure("0.0.0.0", None)


@pytest.mark.parametrize(("text", "want"), [
    (SECRET + "\n", SECRET), (f"  {SECRET}  \nsecond line\n", SECRET), (f"\n\n{SECRET}\n", SECRET),
    ("x" * 16, "x" * 16),
])
def test_read_token_takes_the_first_non_blank_line(tmp_path: Path, text: str, want: str) -> None:
    f = tmp_path / "token"
    f.write_text(text, encoding="utf-8")
    assert read_token(f) == want


@pytest.mark.parametrize("content", [b"x" * 15, b"", b"\n  \n", b"\xff\xfe" + b"x" * 30])
def test_read_token_refuses_a_short_empty_or_unreadable_file(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "token"
    f.write_bytes(content)
    with pytest.raises(UsageError):
        read_token(f)


def test_read_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONGSEEK_TOKEN", f"  {SECRET} ")
    assert read_token(None) == SECRET
    monkeypatch.setenv("SONGSEEK_TOKEN", "   ")  # blank: no token, not a short one
    assert read_token(None) is None
    monkeypatch.delenv("SONGSEEK_TOKEN")
    assert read_token(None) is None
    monkeypatch.setenv("SONGSEEK_TOKEN", "y" * 15)
    with pytest.raises(UsageError, match="shorter than 16"):
        read_token(None)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("exc", "status"), [
    (UsageError("u"), 400), (QueryError("q"), 400), (DecodeError("d"), 400), (LibraryError("l"), 503),
    (MissingDependencyError("m"), 503), (WeightsNotFoundError("w"), 503), (SongseekError("s"), 500),
])
def test_status_for(exc: SongseekError, status: int) -> None:
    assert status_for(exc) == status


def test_error_response_is_one_line() -> None:
    res = error_response(400, "first\nsecond\t third  \r\n")
    assert res.body == b'{"error":"first second third"}'
