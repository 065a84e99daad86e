"""The server hands its where bounds (Limits.where_timeout_s, where_memory_mb) to the engine's DuckDB sandbox:
a filter past them is stopped and answered with a one-line 400 that names `where`, on every search
endpoint, and the server keeps answering. The library: 3,000 tracks of precomputed vectors (enough rows for
a filter that would run for minutes and one that needs more than a megabyte), searched in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.storage.manifest import Manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

N, DIM = 3000, 16
# n² edit distances through a correlated subquery DuckDB cannot turn into a hash join (minutes unbounded)
SLOW = "EXISTS (SELECT 1 FROM tracks t2 WHERE levenshtein(t2.path, tracks.path) = 1000)"
# a sort of every (300-character) path: about 1 MB of buffers
HUNGRY = "path IN (SELECT max(path) OVER (ORDER BY path DESC) FROM tracks)"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("where") / "lib"
    rng = np.random.default_rng(3)
    info = EncoderInfo(name="precomputed", checkpoint="", dim=DIM, sample_rate=0)
    with LibraryWriter(root, Manifest(encoder=info, window_s=10.0, hop_s=10.0)) as w:
        for i in range(N):
            w.add_track(TrackRecord(track_id=f"t{i}", path=f"/m/{i:08d}/{'x' * 300}.wav", duration_s=20.0,
                                    artist=f"a{i % 7}"),
                        l2_normalize(rng.standard_normal((2, DIM)).astype(np.float32)), np.array([0.0, 10.0]),
                        np.array([10.0, 20.0]))
        w.commit()
    return root


def _client(library: Path, **where_bounds: float) -> TestClient:
    from songseek.server import Limits, ServerConfig, create_app

    app = create_app(ServerConfig(library=library, limits=Limits(**where_bounds)))  # type: ignore[arg-type]
    return TestClient(app, base_url="http://127.0.0.1")  # a server without a token answers loopback names only


@pytest.fixture(scope="module")
def client(library: Path) -> Iterator[TestClient]:
    with _client(library, where_timeout_s=0.3, where_memory_mb=2) as c:
        yield c


def _vector() -> list[float]:
    return [float(x) for x in np.random.default_rng(0).standard_normal(DIM)]


def _requests(client: TestClient, where: str) -> list[tuple[str, object]]:
    return [("batch", client.post("/api/search/batch", params={"where": where, "k": 3},
                                  json={"vectors": [_vector()]})),
            ("similar", client.get("/api/similar/t5", params={"where": where, "k": 3}))]


@pytest.mark.parametrize(("bounds", "where", "word"), [
    ({"where_timeout_s": 0.3}, SLOW, "limit of 0.3 s"),
    ({"where_timeout_s": 60, "where_memory_mb": 1}, HUNGRY, "server's 1 MB"),
])
def test_a_filter_past_the_bounds_is_a_400_naming_where(library: Path, bounds: dict, where: str, word: str) -> None:
    with _client(library, **bounds) as client:
        for name, res in _requests(client, where):
            assert res.status_code == 400, (name, res.text)  # type: ignore[attr-defined]
            error = res.json()["error"]  # type: ignore[attr-defined]
            assert error.startswith("where: ") and word in error and "\n" not in error, (name, error)
            assert "FilterLimits" not in error  # the client's words, not the engine's Python names
        assert client.get("/api/health").json()["tracks"] == N  # still serving after the stopped filters


def test_filters_within_the_bounds_still_work(client: TestClient) -> None:
    # tight bounds (0.3 s, 2 MB) still let an ordinary filter through: it selects exactly what it says
    res = client.post("/api/search/batch", params={"where": "path LIKE '/m/00000017/%'", "k": 5},
                      json={"vectors": [_vector()]})
    assert res.status_code == 200, res.text
    assert [h["track_id"] for h in res.json()["results"][0]] == ["t17"]
    res = client.get("/api/similar/t5", params={"artist": "a3", "k": 50})
    assert res.status_code == 200, res.text
    ids = [h["track_id"] for h in res.json()["hits"]]
    assert ids and all(int(t[1:]) % 7 == 3 for t in ids)


def test_bad_where_bounds_are_refused_at_start() -> None:
    from songseek.engine.errors import QueryError
    from songseek.server import Limits

    with pytest.raises(QueryError, match="timeout_s must be a positive number"):
        Limits(where_timeout_s=0)
    with pytest.raises(QueryError, match="memory_mb must be a positive integer"):
        Limits(where_memory_mb=0)



@pytest.mark.parametrize(("where", "start"), [
    # 12 nested concatenations of the 315-byte paths: 24 MB of values per chunk of rows, which DuckDB's memory
    # limit does not count (a few hundred took gigabytes: the whole server's memory)
    ("length(" + "||".join(["path"] * 12) + ") < 0", "where: the filter needs more memory than this server's 2 MB"),
    ("EXISTS (SELECT 1 FROM information_schema.tables)",
     "bad where predicate: a subquery may read only the library's tables (tracks), not information_schema.tables"),
])
def test_filters_that_escape_the_bounds_are_refused_before_running(client: TestClient, where: str,
                                                                    start: str) -> None:
    for name, res in _requests(client, where):
        assert res.status_code == 400, (name, res.text)  # type: ignore[attr-defined]
        error = res.json()["error"]  # type: ignore[attr-defined]
        assert error.startswith(start) and "\n" not in error, (name, error)
