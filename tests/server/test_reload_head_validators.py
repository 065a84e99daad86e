"""Found by a hostile review of the server (session 14): HEAD on the audio route, the validators of a
transcoded copy, an upload's file name with a NUL, server paths in decode errors, and a new generation whose
encoder cannot load (and a reload error that never went away)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from songseek.server import ServerConfig, create_app
from songseek.server.state import Snapshot
from tests.audio_helpers import sine, write_audio


@pytest.fixture(scope="module")
def client(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(ServerConfig(library=library, transcode_dir=tmp_path_factory.mktemp("transcode")))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _track(c: TestClient, suffix: str) -> str:
    snap: Snapshot = c.app.state.ctx.holder.current()  # type: ignore[attr-defined]
    return next(t for t, r in snap.row_of.items() if str(snap.column("path", r)).endswith(suffix))


@pytest.mark.parametrize("suffix", [".flac", ".aiff"])
def test_head_on_audio_answers_like_get_without_a_body(client: TestClient, suffix: str) -> None:
    """RFC 9110 §9.3.2: a server that answers GET answers HEAD (media players and `curl -I` probe with it);
    the audio route answered 405."""
    url = f"/api/audio/{_track(client, suffix)}"
    got = client.get(url)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    for name in ("content-length", "content-type", "accept-ranges", "etag"):
        assert head.headers[name] == got.headers[name], name
    part = client.head(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 10-19/{len(got.content)}"
    assert client.head("/api/audio/no-such-track").status_code == 404


def test_a_transcoded_copy_keeps_its_validators_across_plays(client: TestClient) -> None:
    """Every play marks the WAV copy used (its mtime), and ETag / Last-Modified were taken from that mtime:
    they changed on every request, so a seek sent with If-Range got the whole file (200) instead of 206."""
    url = f"/api/audio/{_track(client, '.aiff')}"
    first = client.get(url)
    second = client.get(url)
    assert first.status_code == second.status_code == 200
    assert first.headers["etag"] == second.headers["etag"]
    assert first.headers["last-modified"] == second.headers["last-modified"]
    for validator in (first.headers["etag"], first.headers["last-modified"]):
        part = client.get(url, headers={"Range": "bytes=100-199", "If-Range": validator})
        assert part.status_code == 206 and part.content == first.content[100:200]


def test_an_upload_named_with_a_nul_is_searched_not_a_500(client: TestClient, tmp_path: Path) -> None:
    """The upload's suffix went into mkstemp as given: a NUL in the client's file name raised ValueError."""
    clip = write_audio(tmp_path / "clip.flac", sine(3.0, 16000)[None], 16000)
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.\x00flac"\r\n'
            "Content-Type: audio/flac\r\n\r\n").encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    res = client.post("/api/search/audio", content=body,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert res.status_code == 200, res.text
    assert res.json()["hits"]


def test_decode_errors_name_the_file_not_its_server_path(library: Path, tmp_path: Path) -> None:
    """A damaged library file: the audio and peaks routes' 404s quoted the engine's message with the
    file's full path on the server; the others name it by its name."""
    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    app = create_app(ServerConfig(library=lib, transcode_dir=tmp_path / "transcode"))
    snap = app.state.ctx.holder.current()
    tid = next(iter(snap.row_of))
    path = Path(str(snap.column("path", snap.row_of[tid])))
    saved = path.read_bytes()
    try:
        path.write_bytes(b"not audio at all" * 100)
        with TestClient(app, base_url="http://127.0.0.1") as c:
            for url in (f"/api/audio/{tid}", f"/api/tracks/{tid}/peaks"):
                error = c.get(url).json()["error"]
                assert path.name in error and str(path.parent) not in error, (url, error)
    finally:
        path.write_bytes(saved)


def _commit(lib: Path, change: dict[str, object]) -> None:
    """Rewrite the manifest atomically as a writer does, with ``change`` applied (a new generation)."""
    manifest = json.loads((lib / "manifest.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            manifest[key] = {**manifest[key], **value}
        else:
            manifest[key] = value
    tmp = lib / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, lib / "manifest.json")


def test_a_generation_whose_encoder_cannot_load_keeps_the_old_one_serving(library: Path, tmp_path: Path) -> None:
    """A new generation with an encoder this machine cannot load (indexed elsewhere) was swapped in, its
    encoder loaded lazily: every text search then failed. And the old Library's encoder was read outside the
    reload's error handling, so once that happened no later generation could ever be picked up."""
    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    original = json.loads((lib / "manifest.json").read_text())
    gen = int(original["generation"])
    with TestClient(create_app(ServerConfig(library=lib, transcode_dir=tmp_path / "t")),
                    base_url="http://127.0.0.1") as c:
        _commit(lib, {"generation": gen + 1, "encoder": {"name": "no-such-encoder"}})
        res = c.get("/api/search", params={"q": "piano", "k": 2})
        assert res.status_code == 200 and res.json()["generation"] == gen, res.text
        health = c.get("/api/health").json()
        assert health["generation"] == gen and "no-such-encoder" in health["reload_error"]
        _commit(lib, {"generation": gen + 2, "encoder": original["encoder"]})  # fixed: the next commit loads
        res = c.get("/api/search", params={"q": "piano", "k": 2})
        assert res.status_code == 200 and res.json()["generation"] == gen + 2, res.text


def test_a_reload_error_is_cleared_once_a_generation_opens(library: Path, tmp_path: Path) -> None:
    """/api/health kept reporting a reload_error after the library was readable again."""
    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    original = (lib / "manifest.json").read_text()
    with TestClient(create_app(ServerConfig(library=lib, transcode_dir=tmp_path / "t")),
                    base_url="http://127.0.0.1") as c:
        (lib / "manifest.tmp").write_text('{"broken')  # a manifest written in place by hand, half done
        os.replace(lib / "manifest.tmp", lib / "manifest.json")
        assert c.get("/api/health").json()["reload_error"]
        (lib / "manifest.tmp").write_text(original)
        os.replace(lib / "manifest.tmp", lib / "manifest.json")
        assert c.get("/api/health").json()["reload_error"] == ""
        _commit(lib, {"generation": json.loads(original)["generation"] + 1})
        health = c.get("/api/health").json()
        assert health["reload_error"] == "" and health["generation"] == json.loads(original)["generation"] + 1


@pytest.mark.parametrize("url", ["/", "/api/health"])
def test_head_on_the_page_and_health(client: TestClient, url: str) -> None:
    """Uptime checks and load balancers probe with HEAD: both answered 405."""
    got = client.get(url)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


def test_a_library_indexed_again_in_place_is_picked_up(library: Path, tmp_path: Path) -> None:
    """`rm -rf lib && songseek index other --library lib`: the new library's generations start over and
    reached the served one's number, so the holder (which compared generation numbers only) kept the old
    tables, and the old Library then loaded the new index file under them: every search a 503 saying
    `songseek repair`, until a restart."""
    from typer.testing import CliRunner

    from songseek.cli.main import app as cli_app

    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    snap = create_app(ServerConfig(library=lib, transcode_dir=tmp_path / "t")).state.ctx.holder.current()
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(Path(str(snap.column("path", r))) for r in snap.row_of.values())[:2]:
        shutil.copy(path, other / f"again-{path.name}")
    with TestClient(create_app(ServerConfig(library=lib, transcode_dir=tmp_path / "t")),
                    base_url="http://127.0.0.1") as c:
        before = c.get("/api/health").json()
        shutil.rmtree(lib)
        result = CliRunner().invoke(cli_app, ["index", str(other), "--library", str(lib), "--encoder", "demo"])
        assert result.exit_code == 0, result.stderr
        assert json.loads((lib / "manifest.json").read_text())["generation"] == before["generation"]  # the case
        health = c.get("/api/health").json()
        assert health["tracks"] == 2 and health["reload_error"] == ""
        res = c.get("/api/search", params={"q": "piano", "k": 5})
        assert res.status_code == 200, res.text
        hits = res.json()["hits"]
        assert len(hits) == 2 and all(Path(h["path"]).parent == other for h in hits)  # ids are by content
