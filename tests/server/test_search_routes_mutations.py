"""Bounds and edges of the search routes (server/search_routes.py) that the end-to-end tests leave open:
each limit is inclusive, an upload's temporary copy never outlives its request, a clip longer than the
bound is refused whether or not it names an end, the window selection of "more like this" against a naive
loop; plus how request errors are worded (errors.py) and how a broken re-index is survived (state.py)."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import types
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from songseek.server import Limits, ServerConfig, create_app
from songseek.server import search_routes as routes_module
from songseek.server.search_routes import track_vector
from songseek.server.state import LibraryHolder

QUERY_CHARS, BATCH, CLIP_S, UPLOAD = 50, 3, 2.0, 30_000
SR = 4000  # 8,000 bytes a second: a few seconds stay under UPLOAD


@pytest.fixture(scope="module")
def app(library: Path):  # type: ignore[no-untyped-def]
    return create_app(ServerConfig(library=library, limits=Limits(
        max_query_chars=QUERY_CHARS, max_batch=BATCH, max_clip_s=CLIP_S, max_upload_bytes=UPLOAD)))


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture()
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temporary folder, so the test sees exactly the upload copies the server makes."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def wav_bytes(seconds: float) -> bytes:
    """16-bit mono PCM WAV of a quiet noise, written with the standard library."""
    x = (np.random.default_rng(3).standard_normal(int(round(seconds * SR))) * 3000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def test_the_query_length_bound_is_inclusive(client: TestClient) -> None:
    assert client.get("/api/search", params={"q": "a" * QUERY_CHARS, "k": 1}).status_code == 200
    res = client.get("/api/search", params={"q": "a" * (QUERY_CHARS + 1), "k": 1})
    assert res.status_code == 400 and f"at most {QUERY_CHARS}" in res.json()["error"]
    assert client.post("/api/search/batch", json={"texts": ["b" * QUERY_CHARS]}).status_code == 200
    res = client.post("/api/search/batch", json={"texts": ["piano", "b" * (QUERY_CHARS + 1)]})
    assert res.status_code == 400 and f"at most {QUERY_CHARS}" in res.json()["error"]


def test_the_batch_size_bound_is_inclusive(client: TestClient) -> None:
    texts = ["piano", "drums", "strings", "choir"]
    ok = client.post("/api/search/batch", params={"k": 2}, json={"texts": texts[:BATCH]})
    assert ok.status_code == 200 and [len(r) for r in ok.json()["results"]] == [2] * BATCH
    for body in ({"texts": texts[:BATCH + 1]}, {"texts": []}, {"vectors": []}):  # type: ignore[var-annotated]
        res = client.post("/api/search/batch", json=body)
        assert res.status_code == 400 and f"1 to {BATCH}" in res.json()["error"], body


def test_a_batch_takes_exactly_one_kind_of_query(client: TestClient, app) -> None:  # type: ignore[no-untyped-def]
    dim = app.state.ctx.holder.current().library.manifest.dim
    v = [0.1] * dim
    for body in ({"texts": ["piano"], "vectors": [v]}, {}, {"texts": None, "vectors": None}):
        res = client.post("/api/search/batch", json=body)
        assert res.status_code == 400 and "exactly one of texts or vectors" in res.json()["error"], body
    for vecs in ([v, v[:-1]], [v, v, v[:-1]], [v[:-1], v, v]):
        res = client.post("/api/search/batch", json={"vectors": vecs})
        assert res.status_code == 400 and "same length" in res.json()["error"]


def test_request_errors_name_the_first_bad_field(client: TestClient) -> None:
    res = client.post("/api/search/batch", json={"texts": 5, "vectors": "x"})
    assert res.status_code == 422 and res.json()["error"].startswith("texts: ")
    res = client.put("/api/search")
    assert res.status_code == 405 and res.headers["allow"] == "GET"


def test_server_timing_is_the_engine_time_in_milliseconds(client: TestClient,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([5.0, 5.25])
    monkeypatch.setattr(routes_module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    res = client.get("/api/search", params={"q": "piano", "k": 1})
    assert res.status_code == 200 and res.headers["server-timing"] == "engine;dur=250.000"


@pytest.mark.parametrize(("data", "status"), [
    ({"start": "-1"}, 400), ({"start": "1", "end": "1"}, 400), ({"start": "1", "end": "0.5"}, 400),
    ({"start": "0.5", "end": str(0.5 + CLIP_S)}, 200), ({"start": "0", "end": str(CLIP_S + 0.01)}, 413),
])
def test_excerpt_bounds(client: TestClient, spool: Path, data: dict, status: int) -> None:
    res = client.post("/api/search/audio", params={"k": 1}, data=data,
                      files={"file": ("clip.wav", wav_bytes(3.0), "audio/wav")})
    assert res.status_code == status, res.text
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(("seconds", "status"), [(CLIP_S - 0.1, 200), (CLIP_S + 0.5, 413), (CLIP_S + 0.9, 413)])
def test_a_clip_longer_than_the_bound_is_refused_without_an_end(client: TestClient, spool: Path, seconds: float,
                                                                status: int) -> None:
    res = client.post("/api/search/audio", params={"k": 1}, files={"file": ("clip.wav", wav_bytes(seconds))})
    assert res.status_code == status, res.text
    if status == 413:
        assert f"longer than {CLIP_S:g} s" in res.json()["error"]
    assert list(spool.iterdir()) == []  # the temporary copy is gone after a search as after a refusal


def test_the_upload_bound_is_inclusive_and_leaves_no_copy(client: TestClient, spool: Path) -> None:
    whole = wav_bytes(2 * CLIP_S)
    assert len(whole) > UPLOAD
    excerpt = {"start": "0", "end": "1"}
    exact = client.post("/api/search/audio", params={"k": 1}, data=excerpt, files={"file": ("a.wav", whole[:UPLOAD])})
    assert exact.status_code == 200, exact.text
    over = client.post("/api/search/audio", params={"k": 1}, data=excerpt,
                       files={"file": ("a.wav", whole[:UPLOAD + 1])})
    assert over.status_code == 413 and "MiB" in over.json()["error"]
    assert list(spool.iterdir()) == []


def test_an_undecodable_upload_is_named_by_its_own_name(client: TestClient, spool: Path) -> None:
    res = client.post("/api/search/audio", files={"file": ("my clip.mp3", b"not audio at all" * 50)})
    assert res.status_code == 400
    err = res.json()["error"]
    assert "the upload my clip.mp3" in err and "songseek-clip-" not in err and str(spool) not in err
    assert list(spool.iterdir()) == []


def test_more_like_this_takes_exactly_the_overlapping_windows(app) -> None:  # type: ignore[no-untyped-def]
    snap = app.state.ctx.holder.current()
    lib = snap.library
    tid, row = max(snap.row_of.items(), key=lambda kv: snap.column("frame_count", kv[1]))
    first, count = snap.column("frame_start", row), snap.column("frame_count", row)
    assert count >= 4
    starts = [float(s) for s in lib.store.start_s[first:first + count]]
    ends = [float(e) for e in lib.store.end_s[first:first + count]]
    vecs = np.asarray(lib.store.vectors(first, count), dtype=np.float64)
    # bounds that sit exactly on window edges: a window that only touches [start, end] is not in it
    for start, end in ((ends[0], starts[3]), (ends[1], None), (None, starts[2]), (starts[1], ends[2]),
                       (None, None)):
        picked = [i for i in range(count)
                  if (start is None or ends[i] > start) and (end is None or starts[i] < end)]
        assert picked and len(picked) < count or (start is None and end is None)
        q = vecs[picked].mean(axis=0)
        want = q / np.linalg.norm(q)
        got = track_vector(snap, tid, start, end)
        assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-5), (start, end, picked)


def test_more_like_this_outside_the_track_is_a_400(client: TestClient, app) -> None:  # type: ignore[no-untyped-def]
    tid = next(iter(app.state.ctx.holder.current().row_of))
    res = client.get(f"/api/similar/{tid}", params={"start": 1e6})
    assert res.status_code == 400 and "overlaps" in res.json()["error"]
    for start, end in ((5.0, 1.0), (5.0, 5.0)):  # reversed or empty: refused as an audio excerpt is
        res = client.get(f"/api/similar/{tid}", params={"start": start, "end": end})
        assert res.status_code == 400 and "must be after start" in res.json()["error"]


def test_a_broken_or_missing_manifest_keeps_the_last_generation(library: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    holder = LibraryHolder(lib, warm=False)
    snap = holder.current()
    manifest = lib / "manifest.json"
    good = manifest.read_bytes()
    manifest.write_text(json.dumps({"generation": snap.generation + 1}), encoding="utf-8")  # half-written
    assert holder.current() is snap and holder.last_reload_error
    manifest.unlink()  # mid-swap
    assert holder.current() is snap
    manifest.write_bytes(good)
    assert holder.current().generation == snap.generation
    assert snap.column("no_such_column", 0) is None


def test_audio_is_cached_by_the_browser_alone(client: TestClient, app) -> None:  # type: ignore[no-untyped-def]
    """With a token the audio is private data: a shared proxy must not keep it (Cache-Control: private)."""
    snap = app.state.ctx.holder.current()
    tid = next(t for t, r in snap.row_of.items() if str(snap.column("path", r)).endswith(".flac"))
    res = client.get(f"/api/audio/{tid}", headers={"Range": "bytes=0-9"})
    assert res.status_code == 206 and res.headers["cache-control"] == "private, max-age=3600"
    assert res.content == Path(str(snap.column("path", snap.row_of[tid]))).read_bytes()[:10]
