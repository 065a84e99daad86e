"""GET /api/tracks/{id}/peaks: the waveform computed on the server, against a naive reference (the whole file
decoded at its own rate, min and max of each bin's samples); bounded n, a bounded track length, and one
decode per track, generation and n (cached)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from songseek.engine.audio import decode, probe
from tests.server.server_helpers import LiveServer


@pytest.fixture(scope="module")
def client(served: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=served.url, timeout=60)


def _tracks(client: httpx.Client) -> list[dict]:
    return client.get("/api/search", params={"q": "piano", "k": 7}).json()["hits"]


@pytest.mark.parametrize("n", [1, 37, 800])
def test_peaks_equal_the_naive_min_max_of_the_decoded_file(client: httpx.Client, n: int) -> None:
    hits = _tracks(client)
    aiff = [h for h in hits if h["path"].endswith(".aiff")]
    for h in [hits[0], *aiff]:  # a FLAC and the AIFF copy the browser cannot play
        res = client.get(f"/api/tracks/{h['track_id']}/peaks", params={"n": n})
        assert res.status_code == 200, res.text
        body = res.json()
        sr = probe(Path(h["path"])).sample_rate
        x = decode(Path(h["path"]), sr)
        edges = np.rint(np.asarray(body["edges_s"]) * sr).astype(int)
        assert body["bins"] == n == len(body["mins"]) == len(body["maxs"]) == len(edges) - 1
        assert body["sample_rate"] == sr and edges[0] == 0 and edges[-1] == len(x)
        assert body["duration_s"] == pytest.approx(len(x) / sr)
        assert (np.diff(edges) > 0).all()
        np.testing.assert_array_equal(body["mins"], [x[a:b].min() for a, b in zip(edges[:-1], edges[1:])])
        np.testing.assert_array_equal(body["maxs"], [x[a:b].max() for a, b in zip(edges[:-1], edges[1:])])
        widths = np.diff(edges)[:-1]
        if len(widths):
            assert widths.max() <= 1.1 * widths.min() + 1  # near-uniform bins: the page draws them evenly


@pytest.mark.parametrize(("url", "status", "word"), [
    ("/api/tracks/nope/peaks", 404, "no track"),
    ("/api/tracks/{id}/peaks?n=0", 422, "n:"),
    ("/api/tracks/{id}/peaks?n=4001", 400, "n must be between 1 and 4000"),
    ("/api/tracks/{id}/peaks?n=abc", 422, "n:"),
])
def test_peaks_bounds_are_one_line_4xx(client: httpx.Client, url: str, status: int, word: str) -> None:
    res = client.get(url.format(id=_tracks(client)[0]["track_id"]))
    assert res.status_code == status, res.text
    assert word in res.json()["error"] and "\n" not in res.json()["error"]


def test_peaks_take_no_paths(client: httpx.Client) -> None:
    for tid in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "%2e%2e"):
        res = client.get(f"/api/tracks/{tid}/peaks")
        assert res.status_code == 404 and "root:" not in res.text


def test_peaks_are_decoded_once_per_track_and_n(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.server import Limits, ServerConfig, create_app
    from songseek.server import peaks as peaks_module

    calls: list[tuple[Path, int]] = []
    real = peaks_module.file_peaks

    def counted(path: Path, n: int, max_s: float):  # type: ignore[no-untyped-def]
        calls.append((path, n))
        return real(path, n, max_s)

    monkeypatch.setattr(peaks_module, "file_peaks", counted)
    with TestClient(create_app(ServerConfig(library=library)), base_url="http://127.0.0.1") as c:
        tid = c.get("/api/search", params={"q": "piano", "k": 1}).json()["hits"][0]["track_id"]
        first = c.get(f"/api/tracks/{tid}/peaks", params={"n": 50}).json()
        assert c.get(f"/api/tracks/{tid}/peaks", params={"n": 50}).json() == first
        assert len(calls) == 1
        c.get(f"/api/tracks/{tid}/peaks", params={"n": 60})
        assert [n for _, n in calls] == [50, 60]
    # a track longer than the server's bound is refused with 413 before anything is decoded
    with TestClient(create_app(ServerConfig(library=library, limits=Limits(max_peaks_s=1.0))),
                    base_url="http://127.0.0.1") as c:
        res = c.get(f"/api/tracks/{tid}/peaks", params={"n": 50})
        assert res.status_code == 413 and "up to 1 s" in res.json()["error"]
        assert len(calls) == 2
