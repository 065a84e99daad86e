"""`--ray auto` is checked before the archive is scanned, as an explicit address is: RAY_ADDRESS where nothing
answers, or no running cluster at all, is one `error:` line (exit 2) in seconds, and no library is created.
Before, ray.init("auto") retried a dead RAY_ADDRESS for minutes (a log line per try), and without a cluster
failed only after every file was hashed, naming a `--address` flag songseek does not have."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from songseek.engine.errors import UsageError
from songseek.indexers.ray_runner import check_address
from tests.indexers.ray_helpers import make_music

CLI = "import sys; sys.modules['torch'] = None; from songseek.cli.main import app; app()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_auto_with_a_dead_ray_address_fails_fast_before_the_scan(tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    make_music(tmp_path / "music", [5.0])
    port = free_port()
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-c", CLI, "index", str(tmp_path / "music"), "--library",
                            str(tmp_path / "lib"), "--encoder", "fake", "--ray", "auto"],
                           capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("index --ray auto with RAY_ADDRESS where nothing listens was still waiting after 60 s")
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("warning: random weights")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith(f"error: --ray auto joins 127.0.0.1:{port} (RAY_ADDRESS): no Ray cluster answers")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "lib").exists()  # refused before the library was created or the files hashed


def test_ray_auto_without_a_running_cluster_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.data")
    services = pytest.importorskip("ray._private.services")

    def none_running(addr: str, temp_dir: str | None) -> str:  # what Ray says on a machine without a cluster
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to "
                              "by setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "get_ray_address_from_environment", none_running)
    with pytest.raises(UsageError) as info:
        check_address("auto")
    msg = str(info.value)
    assert "\n" not in msg and "--address" not in msg
    assert msg.startswith("--ray auto: no Ray cluster is running on this machine") and "ray start --head" in msg


def test_check_address_leaves_local_alone_and_probes_an_explicit_one() -> None:
    pytest.importorskip("ray.data")
    check_address("local")
    with pytest.raises(UsageError, match="no Ray cluster answers at 127.0.0.1:"):
        check_address(f"127.0.0.1:{free_port()}")
