"""The JSON API over a real small library: parity with `songseek search --json`, audio with Range,
batch, clip upload, more-like-this, track timelines, filters, per-artist cap and limits."""

from __future__ import annotations

import shutil
import typing
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest

from songseek.engine.audio import decode
from songseek.engine.errors import QueryError
from songseek.engine.query.fusion import RERANK_MODES, RerankSettings, params_for_hop
from songseek.engine.query.kind import resolve_mode
from songseek.engine.query.search import Library
from songseek.engine.storage.writer import LibraryWriter
from songseek.server import Limits
from songseek.server.query import SearchParams
from tests.server.server_helpers import QUERY, LiveServer, cli_search


def open_lib(library: Path) -> Library:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Library.open(library)


@pytest.fixture(scope="module")
def client(served: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=served.url, timeout=60)


def test_health_counts_match_the_library(client: httpx.Client, library: Path) -> None:
    lib = open_lib(library)
    body = client.get("/api/health").json()
    assert body["tracks"] == lib.n_tracks == 7
    assert body["frames"] == int(lib.tracks.column("frame_count").to_numpy().sum()) > 0
    assert (body["encoder"], body["generation"]) == ("demo", lib.manifest.generation)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_search_matches_the_cli(client: httpx.Client, library: Path, k: int) -> None:
    want = cli_search(library, QUERY, "-k", str(k))
    got = client.get("/api/search", params={"q": QUERY, "k": k}).json()["hits"]
    keys = ("rank", "track_id", "start_s", "end_s", "score", "path", "title", "artist")
    assert [{x: h[x] for x in keys} for h in got] == [{x: h[x] for x in keys} for h in want]
    assert all(h["audio_url"] == f"/api/audio/{h['track_id']}#t={h['start_s']:g},{h['end_s']:g}" for h in got)


def test_search_options_match_the_cli(client: httpx.Client, library: Path) -> None:
    want = cli_search(library, QUERY, "-k", "4", "--rerank", "mean", "--exact", "--candidates", "5",
                      "--where", "year >= 1992")
    got = client.get("/api/search", params={"q": QUERY, "k": 4, "rerank": "mean", "exact": "true",
                                            "candidates": 5, "where": "year >= 1992"}).json()["hits"]
    assert [(h["track_id"], h["start_s"], h["end_s"]) for h in got] == \
        [(h["track_id"], h["start_s"], h["end_s"]) for h in want]


def test_audio_range_gives_206_and_the_bytes(client: httpx.Client, library: Path) -> None:
    hit = client.get("/api/search", params={"q": QUERY, "k": 1}).json()["hits"][0]
    url = hit["audio_url"].split("#")[0]
    part = client.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    whole = Path(hit["path"]).read_bytes()
    assert part.content == whole[:100]
    assert part.headers["content-type"] == "audio/flac"
    assert part.headers["content-range"] == f"bytes 0-99/{len(whole)}"
    full = client.get(url)
    assert full.status_code == 200 and full.content == whole


def test_aiff_is_transcoded_to_wav(client: httpx.Client, library: Path) -> None:
    lib = open_lib(library)
    paths = lib.tracks.column("path").to_pylist()
    tid = lib.tracks.column("track_id")[next(i for i, p in enumerate(paths) if p.endswith(".aiff"))].as_py()
    res = client.get(f"/api/audio/{tid}")
    assert res.status_code == 200 and res.headers["content-type"] == "audio/wav"
    assert res.content[:4] == b"RIFF" and res.content[8:12] == b"WAVE"
    src = decode(Path(paths[[p.endswith(".aiff") for p in paths].index(True)]), 16000)
    tmp = library.parent / "served.wav"
    tmp.write_bytes(res.content)
    assert abs(len(decode(tmp, 16000)) - len(src)) <= 16  # the same audio, as long
    assert client.get(f"/api/audio/{tid}", headers={"Range": "bytes=0-99"}).status_code == 206


def test_batch_texts_and_vectors_match_single_searches(client: httpx.Client, library: Path) -> None:
    texts = [QUERY, "fast drums", "a quiet drone"]
    got = client.post("/api/search/batch", params={"k": 3}, json={"texts": texts}).json()["results"]
    for text, hits in zip(texts, got):
        one = client.get("/api/search", params={"q": text, "k": 3}).json()["hits"]
        # a batch embeds texts together: the same ranking, scores equal up to float32 rounding
        assert [(h["track_id"], h["start_s"], h["end_s"]) for h in hits] == \
            [(h["track_id"], h["start_s"], h["end_s"]) for h in one]
        np.testing.assert_allclose([h["score"] for h in hits], [h["score"] for h in one], rtol=1e-5)
    lib = open_lib(library)
    vecs = np.random.default_rng(0).standard_normal((2, lib.manifest.dim)).astype(np.float32)
    got = client.post("/api/search/batch", params={"k": 2}, json={"vectors": vecs.tolist()}).json()["results"]
    want = lib.search_vectors(vecs, None)
    assert [[h["track_id"] for h in hits] for hits in got] == [[h.track_id for h in hits[:2]] for hits in want]


def test_similar_uses_the_stored_vectors_and_leaves_the_track_out(client: httpx.Client, library: Path) -> None:
    lib = open_lib(library)
    row = 2
    tid = lib.tracks.column("track_id")[row].as_py()
    start, count = lib.tracks.column("frame_start")[row].as_py(), lib.tracks.column("frame_count")[row].as_py()
    q = np.asarray(lib.store.vectors(start, count)).mean(axis=0)
    q /= np.linalg.norm(q)
    want = [h.track_id for h in lib.search(vector=q, k=4) if h.track_id != tid][:3]
    got = client.get(f"/api/similar/{tid}", params={"k": 3}).json()["hits"]
    assert [h["track_id"] for h in got] == want and [h["rank"] for h in got] == [1, 2, 3]
    # one segment: only the windows overlapping it make the query
    s0, e0 = lib.store.start_s[start], lib.store.end_s[start]
    q1 = np.asarray(lib.store.vectors(start, 1))[0]
    want1 = [h.track_id for h in lib.search(vector=q1 / np.linalg.norm(q1), k=4) if h.track_id != tid][:3]
    got1 = client.get(f"/api/similar/{tid}", params={"k": 3, "start": s0, "end": e0 - 0.01}).json()["hits"]
    assert [h["track_id"] for h in got1] == want1
    assert client.get("/api/similar/nope").status_code == 404


def test_track_timeline_is_the_naive_similarity_and_the_search_segment(client: httpx.Client, library: Path) -> None:
    lib = open_lib(library)
    hit = lib.search(QUERY, k=1)[0]
    body = client.get(f"/api/tracks/{hit.track_id}", params={"q": QUERY}).json()
    row = lib.tracks.column("track_id").to_pylist().index(hit.track_id)
    start, count = lib.tracks.column("frame_start")[row].as_py(), lib.tracks.column("frame_count")[row].as_py()
    naive = np.asarray(lib.store.vectors(start, count)) @ lib.embed_text([QUERY])[0]
    tl = body["timeline"]
    np.testing.assert_allclose(tl["similarity"], naive, rtol=1e-5, atol=1e-6)
    assert len(body["windows"]) == count
    # the attention is softmax(cos / tau) over the track's windows, tau the library's fusion temperature
    tau = lib.rerank_settings().params.temperature
    weights = [float(np.exp((s - max(naive)) / tau)) for s in naive]
    np.testing.assert_allclose(tl["attention"], [w / sum(weights) for w in weights], rtol=1e-5, atol=1e-7)
    assert (tl["segment"]["start_s"], tl["segment"]["end_s"]) == (hit.segment.start_s, hit.segment.end_s)
    assert body["artist"] in ("Ada Lovelace Trio", "O'Brien & Sons", "Cluster", None)
    assert hit.rerank == resolve_mode("auto", lib.query_kind(QUERY))


@pytest.mark.parametrize("rerank", [None, "hedge", "fusion"])
def test_track_timelines_give_every_hit_its_search_segment_and_score(client: httpx.Client, library: Path,
                                                                     rerank: str | None) -> None:
    """The same candidates and rerank as search, for every track it returns (not the track alone: the
    rerank standardises over the candidates), a long text's chunks included."""
    lib = open_lib(library)
    extra = {"rerank": rerank} if rerank else {}
    long_text = " ".join(f"Part {i}: a soft piano with slow strings and a quiet drone." for i in range(12))
    for text in (QUERY, long_text):
        for hit in lib.search(text, k=lib.n_tracks, **extra):  # type: ignore[arg-type]
            tl = client.get(f"/api/tracks/{hit.track_id}", params={"q": text, **extra}).json()["timeline"]
            assert (tl["segment"]["start_s"], tl["segment"]["end_s"]) == (hit.segment.start_s, hit.segment.end_s)
            assert tl["score"] == pytest.approx(hit.score, abs=1e-6)


def test_clip_upload_searches_like_the_cli(client: httpx.Client, library: Path) -> None:
    lib = open_lib(library)
    path = Path(lib.tracks.column("path")[1].as_py())
    want = cli_search(library, "--audio", str(path), "--start", "5", "--end", "25", "-k", "3")
    with path.open("rb") as f:
        res = client.post("/api/search/audio", params={"k": 3}, files={"file": (path.name, f, "audio/flac")},
                          data={"start": "5", "end": "25"})
    assert res.status_code == 200, res.text
    got = res.json()["hits"]
    assert [(h["track_id"], h["start_s"], h["end_s"]) for h in got] == \
        [(h["track_id"], h["start_s"], h["end_s"]) for h in want]
    assert got[0]["track_id"] == lib.tracks.column("track_id")[1].as_py() or \
        got[0]["path"].endswith(".aiff")  # track 0 and its AIFF copy sound the same
    with path.open("rb") as f:  # an excerpt past the clip's end: the error names the upload, no server path
        past = client.post("/api/search/audio", files={"file": ("mine.flac", f, "audio/flac")},
                           data={"start": "90000", "end": "90010"})
    assert past.status_code == 400 and "mine.flac" in past.json()["error"]
    assert "songseek-clip" not in past.json()["error"]


def test_filters_and_per_artist_cap(client: httpx.Client, library: Path) -> None:
    artist = "O'Brien & Sons"  # a quote inside: the literal must be escaped, not break the predicate
    got = client.get("/api/search", params={"q": QUERY, "k": 7, "artist": artist}).json()["hits"]
    want = cli_search(library, QUERY, "-k", "7", "--where", "artist = 'O''Brien & Sons'")
    assert [h["track_id"] for h in got] == [h["track_id"] for h in want] and len(got) == 2
    got = client.get("/api/search", params={"q": QUERY, "k": 7, "genre": "jazz", "year_min": 1992,
                                            "year_max": 1995}).json()["hits"]
    want = cli_search(library, QUERY, "-k", "7", "--where", "genre = 'jazz' AND year >= 1992 AND year <= 1995")
    assert [h["track_id"] for h in got] == [h["track_id"] for h in want]
    # a where that closes a parenthesis it did not open would reach past the artist filter: refused
    escape = client.get("/api/search", params={"q": QUERY, "where": "true) OR (true", "artist": "nobody"})
    assert escape.status_code == 400 and "did not open" in escape.json()["error"]
    capped = client.get("/api/search", params={"q": QUERY, "k": 7, "per_artist": 1}).json()["hits"]
    full = client.get("/api/search", params={"q": QUERY, "k": 7}).json()["hits"]
    seen: set = set()
    naive = []
    for h in full:  # the naive reference: walk the full ranking, keep an artist's first hit
        if h["artist"] is None or h["artist"] not in seen:
            naive.append(h["track_id"])
            seen.add(h["artist"])
    assert [h["track_id"] for h in capped] == naive
    assert [h["rank"] for h in capped] == list(range(1, len(naive) + 1))


@pytest.mark.parametrize(("params", "status", "word"), [
    ({"q": QUERY, "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"q": QUERY, "k": 1000}, 400, "k must be"),
    ({"q": "x" * 3000}, 400, "characters"),
    ({"q": "   "}, 400, "empty"),
    ({"q": QUERY, "where": "nosuchcolumn = 1"}, 400, "bad where predicate"),
    ({"q": QUERY, "where": "x" * 3000}, 400, "where is"),
    ({"q": QUERY, "rerank": "magic"}, 422, "rerank"),
    ({"q": QUERY, "tag": "jazz"}, 400, "no tags"),
    ({"q": QUERY, "candidates": 0}, 422, "candidates"),
    ({"q": QUERY, "candidates": 10**6}, 400, "candidates must be"),
    ({"q": QUERY, "year_min": 2005, "year_max": 1990}, 400, "year_min (2005) is after year_max (1990); swap them"),
    # a subnormal tau made 1/tau infinite: NaN scores went out as null (found by the schema fuzzer)
    ({"q": QUERY, "temperature": 2.2250738585e-313}, 400, "temperature must be > 0"),
])
def test_bad_requests_get_one_line_4xx(client: httpx.Client, params: dict, status: int, word: str) -> None:
    res = client.get("/api/search", params=params)
    assert res.status_code == status, res.text
    assert word in res.json()["error"] and "\n" not in res.json()["error"]


def test_unknown_and_missing_tracks_are_404(client: httpx.Client) -> None:
    for url in ("/api/audio/nope", "/api/tracks/nope"):
        res = client.get(url)
        assert res.status_code == 404 and "no track" in res.json()["error"]


def test_facets_list_the_tagged_values(client: httpx.Client) -> None:
    body = client.get("/api/facets").json()
    assert set(body["artists"]) == {"Ada Lovelace Trio", "O'Brien & Sons", "Cluster"}
    assert body["genres"] == ["ambient", "jazz"] and (body["year_min"], body["year_max"]) == (1990, 1995)
    assert body["tags"] == []


def test_page_is_served_offline(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]  # no CDN
    assert client.get("/static/app.js").status_code == 200
    assert "access-control-allow-origin" not in client.get("/api/health", headers={"Origin": "http://evil"}).headers


def test_the_servers_rerank_modes_are_the_engines() -> None:
    assert set(typing.get_args(typing.get_args(SearchParams.model_fields["rerank"].annotation)[0])) == \
        set(RERANK_MODES)


def test_a_librarys_saved_rerank_is_the_servers_default_as_the_clis(library: Path, tmp_path: Path) -> None:
    """No rerank option in the request: the library's saved settings (`bench rerank --save`), as in
    `songseek search`, not a mode of the server's own."""
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    lib = open_lib(copy)
    with LibraryWriter(copy) as writer:
        params = params_for_hop(lib.manifest.hop_s, segment_s=20.0, window_s=lib.manifest.window_s)
        writer.set_rerank(RerankSettings("mean", params).to_json())
        writer.commit()
    lib = open_lib(copy)
    opts = SearchParams.model_validate({}).options(lib)
    assert opts.rerank is None and opts.fusion is None  # the engine reads the manifest
    got = [(h.track_id, h.segment.start_s, h.segment.end_s) for h in lib.search(QUERY, options=opts)]
    want = cli_search(copy, QUERY, "-k", "10")
    assert got == [(h["track_id"], h["start_s"], h["end_s"]) for h in want]
    explicit = cli_search(copy, QUERY, "-k", "10", "--rerank", "mean", "--segment-s", "20")
    assert got == [(h["track_id"], h["start_s"], h["end_s"]) for h in explicit]
    # a value given in the request goes on top of the saved parameters
    tuned = SearchParams.model_validate({"temperature": 0.5}).options(lib)
    assert tuned.fusion is not None and tuned.fusion.temperature == 0.5
    assert tuned.fusion.segment_kernel == lib.rerank_settings().params.segment_kernel


@pytest.mark.parametrize("per_artist", [1, 2])
def test_per_artist_cap_fills_k_from_the_whole_ranking(client: httpx.Client, per_artist: int) -> None:
    """For every k the capped list is the naive cap over the full ranking, cut at k: the cap looks past the
    first k hits to fill k, and never returns more than k."""
    for q in (QUERY, "a loud drum beat", "quiet strings"):
        full = client.get("/api/search", params={"q": q, "k": 7}).json()["hits"]
        naive: list[str] = []
        count: dict = {}
        for h in full:
            key = h["artist"] if h["artist"] is not None else h["track_id"]  # no artist: never capped
            if count.get(key, 0) < per_artist:
                naive.append(h["track_id"])
                count[key] = count.get(key, 0) + 1
        for k in range(1, 8):
            got = client.get("/api/search", params={"q": q, "k": k, "per_artist": per_artist}).json()["hits"]
            assert [h["track_id"] for h in got] == naive[:k], (q, k)


def _check_refused(limits: Limits, **fields: object) -> None:
    with pytest.raises(QueryError):
        SearchParams.model_validate(fields).checked(limits)


def test_checked_accepts_each_limit_and_refuses_one_past_it() -> None:
    limits = Limits(max_k=5, max_candidates=9, max_nprobe=4, where_chars=12, max_query_chars=6)
    at_limits = {"k": 5, "candidates": 9, "nprobe": 4, "where": "x" * 12, "artist": "a" * 6, "album": "b" * 6,
                 "genre": "c" * 6, "tag": "d" * 6}
    ok = SearchParams.model_validate(at_limits)
    assert ok.checked(limits) is ok
    for name, past in [("k", 6), ("candidates", 10), ("nprobe", 5), ("where", "x" * 13), ("artist", "a" * 7),
                       ("album", "b" * 7), ("genre", "c" * 7), ("tag", "d" * 7)]:
        _check_refused(limits, **{**at_limits, name: past})  # every other value at its limit: accepted


@pytest.mark.parametrize("name", ["kernel_s", "stride_s", "segment_s", "temperature"])
def test_checked_refuses_fusion_values_that_are_not_positive(name: str) -> None:
    limits = Limits()
    assert SearchParams.model_validate({name: 1e-3}).checked(limits) is not None
    for bad in (0.0, -1.0, 1e6, float("nan"), float("inf")):
        if name == "segment_s" and not bad > 0:
            continue  # refused by the model itself (gt=0): a 422
        _check_refused(limits, **{name: bad})


def test_predicate_selects_what_a_naive_filter_selects() -> None:
    """The structured filters, run by DuckDB over a small table, select exactly the rows a Python filter does:
    inclusive year bounds, quotes inside names, and the tag threshold given (not the default)."""
    import duckdb

    rows = [("O'Brien", "A", "jazz", y, s) for y, s in [(1990, 0.1), (1991, 0.29), (1992, 0.3), (1993, 0.5),
                                                           (1994, 0.7), (1995, 0.71), (1996, 0.9)]]
    rows += [("Cluster", "B", "ambient", 1993, 0.9), ("O''Brien", "A", "jazz", 1993, 0.9)]
    con = duckdb.connect()
    con.execute("CREATE TABLE tracks (artist VARCHAR, album VARCHAR, genre VARCHAR, year INTEGER, jazz DOUBLE)")
    con.executemany("INSERT INTO tracks VALUES (?, ?, ?, ?, ?)", rows)
    cases: list[tuple[dict[str, typing.Any], typing.Callable[[typing.Any], bool]]] = [
        ({"artist": "O'Brien", "year_min": 1992, "year_max": 1995},
         lambda r: r[0] == "O'Brien" and 1992 <= r[3] <= 1995),
        ({"genre": "jazz", "year_min": 1993}, lambda r: r[2] == "jazz" and r[3] >= 1993),
        ({"album": "A", "year_max": 1991}, lambda r: r[1] == "A" and r[3] <= 1991),
        ({"tag": "jazz"}, lambda r: r[4] >= 0.3),
        ({"tag": "jazz", "tag_min": 0.7}, lambda r: r[4] >= 0.7),
        ({"tag": "jazz", "tag_min": 0.05, "where": "year <> 1996"}, lambda r: r[4] >= 0.05 and r[3] != 1996),
    ]
    for fields, keep in cases:
        where = SearchParams.model_validate(fields).predicate(has_tags=True)
        assert where is not None and ("tag" in fields) == ("tag('jazz')" in where)
        where = where.replace("tag('jazz')", "jazz")  # the engine's tag() read from this table's column
        got = con.execute(f"SELECT * FROM tracks WHERE {where} ORDER BY ALL").fetchall()
        assert got == sorted(r for r in rows if keep(r)), fields
    assert SearchParams.model_validate({}).predicate(has_tags=False) is None


@pytest.mark.parametrize("where", ["", "   ", "\n\t"])
def test_an_empty_where_is_refused_not_ignored(where: str) -> None:
    with pytest.raises(QueryError, match="where is empty"):
        SearchParams.model_validate({"where": where, "artist": "x"}).predicate(has_tags=False)


def test_track_details_are_the_librarys_columns_and_windows(client: httpx.Client, library: Path) -> None:
    lib = open_lib(library)
    cols = lib.tracks.to_pylist()
    for rec in cols:
        body = client.get(f"/api/tracks/{rec['track_id']}").json()
        first, count = rec["frame_start"], rec["frame_count"]
        want = [{"start_s": float(lib.store.start_s[i]), "end_s": float(lib.store.end_s[i])}
                for i in range(first, first + count)]
        assert body["windows"] == want and count > 1
        assert body["duration_s"] == pytest.approx(rec["duration_s"]) and body["duration_s"] > 0
        assert body["year"] == rec["year"] and (body["artist"], body["title"]) == (rec["artist"], rec["title"])
        assert body["audio_url"] == f"/api/audio/{rec['track_id']}" and "timeline" not in body
    assert sorted(client.get(f"/api/tracks/{r['track_id']}").json()["year"] or 0 for r in cols) == \
        sorted(r["year"] or 0 for r in cols)


def _naive_timeline(lib: Library, tid: str, query: np.ndarray, tau: float) -> tuple[np.ndarray, list[float]]:
    row = lib.tracks.column("track_id").to_pylist().index(tid)
    start, count = lib.tracks.column("frame_start")[row].as_py(), lib.tracks.column("frame_count")[row].as_py()
    sims = np.asarray(lib.store.vectors(start, count), np.float64) @ query
    weights = [float(np.exp((s - max(sims)) / tau)) for s in sims]
    return sims, [w / sum(weights) for w in weights]


def test_track_timeline_takes_the_requests_temperature_and_a_long_texts_mean(client: httpx.Client,
                                                                             library: Path) -> None:
    from songseek.engine.query import longtext

    lib = open_lib(library)
    tid = lib.tracks.column("track_id")[3].as_py()
    q = np.asarray(lib.embed_text([QUERY])[0], np.float64)
    tl = client.get(f"/api/tracks/{tid}", params={"q": QUERY, "temperature": 0.013}).json()["timeline"]
    sims, att = _naive_timeline(lib, tid, q, 0.013)
    np.testing.assert_allclose(tl["similarity"], sims, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tl["attention"], att, rtol=1e-5, atol=1e-7)
    # a long text: the timeline's query is the unit mean of its chunk vectors
    long_text = " ".join(f"Part {i}: a soft piano with slow strings and a quiet drone." for i in range(12))
    chunks = np.asarray(longtext.embed_chunked(lib.encoder, [long_text])[0].vectors, np.float64)
    assert len(chunks) > 1
    mean = chunks.mean(axis=0)
    tl = client.get(f"/api/tracks/{tid}", params={"q": long_text}).json()["timeline"]
    sims, att = _naive_timeline(lib, tid, mean / np.linalg.norm(mean), lib.rerank_settings().params.temperature)
    np.testing.assert_allclose(tl["similarity"], sims, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tl["attention"], att, rtol=1e-5, atol=1e-7)


def test_track_timeline_for_more_like_this(client: httpx.Client, library: Path) -> None:
    lib = open_lib(library)
    tid, like = lib.tracks.column("track_id")[1].as_py(), lib.tracks.column("track_id")[4].as_py()
    row = 4
    start, count = lib.tracks.column("frame_start")[row].as_py(), lib.tracks.column("frame_count")[row].as_py()
    q = np.asarray(lib.store.vectors(start, count), np.float64).mean(axis=0)
    body = client.get(f"/api/tracks/{tid}", params={"like": like}).json()
    sims, att = _naive_timeline(lib, tid, q / np.linalg.norm(q), lib.rerank_settings().params.temperature)
    np.testing.assert_allclose(body["timeline"]["similarity"], sims, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(body["timeline"]["attention"], att, rtol=1e-5, atol=1e-7)


def test_track_and_peaks_bounds(client: httpx.Client) -> None:
    tid = client.get("/api/search", params={"q": QUERY, "k": 1}).json()["hits"][0]["track_id"]
    for q, word in (("   ", "empty"), ("x" * 2001, "q is longer than 2000")):
        res = client.get(f"/api/tracks/{tid}", params={"q": q})
        assert res.status_code == 400 and word in res.json()["error"], res.text
    assert client.get(f"/api/tracks/{tid}", params={"q": "x" * 2000}).status_code == 200
    peaks = client.get(f"/api/tracks/{tid}/peaks", params={"n": 4000})  # the default max_peaks itself
    assert peaks.status_code == 200, peaks.text


def test_facets_keep_the_most_common_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FACET_LIMIT values, the most common are kept (then listed in order): against collections.Counter."""
    from collections import Counter

    from starlette.testclient import TestClient

    from songseek.engine.encoders.base import EncoderInfo, l2_normalize
    from songseek.engine.storage.manifest import Manifest
    from songseek.engine.storage.store import TrackRecord
    from songseek.server import ServerConfig, create_app, track_routes

    artists = ["e"] * 5 + ["b"] * 4 + ["d"] * 3 + ["a"] * 2 + ["c"] * 1
    rng = np.random.default_rng(0)
    info = EncoderInfo(name="precomputed", checkpoint="", dim=4, sample_rate=0)
    with LibraryWriter(tmp_path / "lib", Manifest(encoder=info, window_s=10.0, hop_s=10.0)) as w:
        for i, a in enumerate(artists):
            w.add_track(TrackRecord(track_id=f"t{i}", path=f"/m/{i}.wav", duration_s=10.0, artist=a,
                                    year=2000 + (i * 7) % 11),
                        l2_normalize(rng.standard_normal((1, 4)).astype(np.float32)), np.array([0.0]),
                        np.array([10.0]))
        w.commit()
    monkeypatch.setattr(track_routes, "FACET_LIMIT", 3)
    with TestClient(create_app(ServerConfig(library=tmp_path / "lib")), base_url="http://127.0.0.1") as c:
        body = c.get("/api/facets").json()
    assert body["artists"] == sorted(a for a, _ in Counter(artists).most_common(3)) == ["b", "d", "e"]
    years = [2000 + (i * 7) % 11 for i in range(len(artists))]
    assert (body["year_min"], body["year_max"]) == (min(years), max(years))
