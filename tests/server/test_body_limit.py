"""Request bodies past the server's bounds (server/body_limit.py) get 413 before a route reads them, by
Content-Length or while they stream; Starlette's own errors answer in the same {"error": ...} form."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from songseek.server import Limits, ServerConfig, create_app
from tests.server.server_helpers import LiveServer

BODY, UPLOAD = 10_000, 50_000


@pytest.fixture(scope="module")
def small(library: Path) -> Iterator[httpx.Client]:
    live = LiveServer(create_app(ServerConfig(library=library, limits=Limits(max_body_bytes=BODY,
                                                                             max_upload_bytes=UPLOAD))))
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client
    live.stop()


def big_batch(n_bytes: int) -> bytes:
    return json.dumps({"texts": ["piano " * (n_bytes // 6)]}).encode()


def test_a_declared_body_past_the_bound_is_refused_unread(small: httpx.Client) -> None:
    res = small.post("/api/search/batch", content=big_batch(3 * BODY), headers={"Content-Type": "application/json"})
    assert res.status_code == 413
    assert "larger than this server's" in res.json()["error"] and "/api/search/batch" in res.json()["error"]
    ok = small.post("/api/search/batch", json={"texts": ["soft piano"]}, params={"k": 2})
    assert ok.status_code == 200 and len(ok.json()["results"][0]) == 2  # a body within the bound still works


def test_a_streamed_body_is_stopped_when_it_passes_the_bound(small: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        body = big_batch(20 * BODY)
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    res = small.post("/api/search/batch", content=chunks(), headers={"Content-Type": "application/json"})
    assert res.status_code == 413 and "larger than" in res.json()["error"]


def test_an_upload_past_the_bound_is_refused_and_leaves_no_file(small: httpx.Client) -> None:
    before = set(Path(tempfile.gettempdir()).glob("songseek-clip-*"))
    res = small.post("/api/search/audio", files={"file": ("big.wav", b"\0" * (3 * UPLOAD), "audio/wav")})
    assert res.status_code == 413 and "larger than" in res.json()["error"]
    assert set(Path(tempfile.gettempdir()).glob("songseek-clip-*")) <= before


def test_starlette_errors_answer_in_the_servers_form(small: httpx.Client) -> None:
    missing = small.get("/api/no-such-route")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    wrong = small.put("/api/search")
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}
