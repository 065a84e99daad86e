"""Helpers shared by the server tests: a live uvicorn server on 127.0.0.1, the CLI search to compare with, and
how the browser tests start Debian's chromium."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typer.testing import CliRunner

from songseek.cli.main import app as cli_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

QUERY = "soft piano with strings"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# headless, no background networking (the house rule for browser tests), sound allowed without a gesture
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]


def cli_search(library: Path, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli_app, ["search", *args, "--library", str(library), "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn in a thread on 127.0.0.1 (the tests never bind anything else)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def search_in_page(page: Page, url: str) -> None:
    """Open the page at ``url`` and search QUERY from its box, as a person would; waits for the hits."""
    page.goto(url + "/")
    page.fill("#q", QUERY)
    page.press("#q", "Enter")
    page.wait_for_selector("#hits .hit")
