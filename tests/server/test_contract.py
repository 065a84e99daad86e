"""The contract an outside script checks, run as that script would: `songseek serve` in its own process."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.server.server_helpers import QUERY, cli_search, free_port


@pytest.fixture(scope="module")
def server(library: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from songseek.cli.main import app; app()", "serve",
                             "--library", str(library), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60  # the contract: answers within 60 s on a small library
    while True:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if get(port, "/api/health")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "songseek serve did not answer within 60 s"
        time.sleep(0.25)
    yield port
    proc.terminate()
    proc.wait(20)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers or {})
    res = conn.getresponse()
    return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()


def test_the_contract(server: int, library: Path) -> None:
    status, _, body = get(server, "/api/health")
    health = json.loads(body)
    assert status == 200 and {"tracks", "frames"} <= set(health)
    want = cli_search(library, QUERY, "-k", "5")
    status, _, body = get(server, f"/api/search?q={quote(QUERY)}&k=5")
    hits = json.loads(body)["hits"]
    assert [(h["track_id"], h["start_s"], h["end_s"]) for h in hits] == \
        [(h["track_id"], h["start_s"], h["end_s"]) for h in want]
    for h in hits:
        assert h["audio_url"].startswith("/")
        status, headers, data = get(server, h["audio_url"].split("#")[0], {"Range": "bytes=0-99"})
        assert status == 206 and len(data) == 100 and headers["content-type"].startswith("audio/")
    status, headers, body = get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<html" in body
    for path in ("/static/../../etc/passwd", "/api/audio/..%2F..%2Fetc%2Fpasswd", "/etc/passwd"):
        status, _, body = get(server, path)
        assert 400 <= status < 500 and b"root:" not in body
