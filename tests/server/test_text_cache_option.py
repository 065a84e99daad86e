"""`songseek serve --cache-texts` (ServerConfig.cache_texts): a restarted server finds the query text vectors
the last one kept in the library's text-cache/ folder; without it the folder is never written."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from songseek.engine.encoders.text_cache import SHARED_CACHE
from songseek.server import ServerConfig, create_app
from tests.server.server_helpers import QUERY, LiveServer


def _search(library: Path, cache_texts: bool) -> list[str]:
    live = LiveServer(create_app(ServerConfig(library=library, cache_texts=cache_texts)))
    try:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            res = client.get("/api/search", params={"q": QUERY, "k": 3})
            assert res.status_code == 200, res.text
            return [h["track_id"] for h in res.json()["hits"]]
    finally:
        live.stop()


def test_a_restarted_server_reads_the_kept_text_vectors(library: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    shutil.copytree(library, kept)
    SHARED_CACHE.clear()  # the process-wide cache: it only saves work, so other tests lose nothing
    first = _search(kept, cache_texts=True)
    assert list((kept / "text-cache").glob("*.npz"))
    SHARED_CACHE.clear()  # a new process, in effect: only the folder remembers
    second = _search(kept, cache_texts=True)
    assert second == first
    assert (SHARED_CACHE.hits, SHARED_CACHE.misses) == (1, 0)

    plain = tmp_path / "plain"
    shutil.copytree(library, plain)
    assert _search(plain, cache_texts=False) == first
    assert not (plain / "text-cache").exists()
