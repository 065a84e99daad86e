"""Helpers shared by the server tests: a live uvicorn server on 127.0.0.1, and the CLI search to compare with."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from songseek.cli.main import app as cli_app

QUERY = "soft piano with strings"


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
