"""Query input: every bad query gets one clear error (QueryError, exit code 2 in the CLI), `--where` runs
read-only in a sandbox, and any combination of query parameters either errors clearly or returns a
well-formed ranking (hypothesis)."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.encoders.base import l2_normalize
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import DecodeError, QueryError
from songseek.engine.query import search as search_module
from songseek.engine.query.fusion import RERANK_MODES
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import Manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")
N_TRACKS = 6


@pytest.fixture(scope="module")
def lib_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("q") / "lib"
    rng = np.random.default_rng(0)
    with LibraryWriter(root, Manifest(encoder=FakeEncoder().info, window_s=10.0, hop_s=10.0)) as w:
        for i in range(N_TRACKS):
            n = 1 + i % 4
            starts = np.arange(n) * 10.0
            w.add_track(TrackRecord(track_id=f"t{i}", path=f"/music/{i}.wav", artist=["A", "B"][i % 2],
                                    year=2000 + i, duration_s=10.0 * n),
                        l2_normalize(rng.standard_normal((n, 32)).astype(np.float32)), starts, starts + 10)
        w.commit()
        w.update_index()
    return root


@pytest.fixture(scope="module")
def lib(lib_path: Path) -> Library:
    return Library.open(lib_path, encoder=FakeEncoder())   # given: no device probing (torch) needed


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    if "torch" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torch", None)  # the fake encoder needs none; saves seconds


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\x00", "\x00\x01\x1b \u200b\x7f"])
def test_empty_text_query(lib: Library, text: str) -> None:
    with pytest.raises(QueryError, match="the text query is empty"):
        lib.search(text)


@pytest.mark.parametrize("k", [0, -1, -100])
def test_k_not_positive(lib: Library, k: int) -> None:
    with pytest.raises(QueryError, match=f"k must be at least 1 \\(got {k}\\)"):
        lib.search("jazz", k=k)


def test_k_larger_than_library_returns_every_track(lib: Library) -> None:
    hits = lib.search("jazz", k=10_000)
    assert len(hits) == N_TRACKS and [h.rank for h in hits] == list(range(1, N_TRACKS + 1))


def test_bad_vectors_and_options(lib: Library) -> None:
    with pytest.raises(QueryError, match=r"query vectors must be \(n, 32\)"):
        lib.search_vectors(np.ones((1, 31), np.float32))
    with pytest.raises(QueryError, match="NaN or inf"):
        lib.search_vectors(np.full((1, 32), np.nan, np.float32))
    with pytest.raises(QueryError, match="unknown rerank mode 'bogus'"):
        lib.search("x", rerank="bogus")
    with pytest.raises(QueryError, match="candidates must be at least 1"):
        lib.search("x", candidates=0)
    with pytest.raises(QueryError, match="exactly one of"):
        lib.search("x", vector=np.ones(32))


@pytest.mark.parametrize("scale", [1e-200, 1e-310, 1e15])
def test_a_query_vectors_magnitude_does_not_matter(lib: Library, scale: float) -> None:
    """Only a vector's direction is searched: the squares of 1e-200 underflow float64 and 1e-310 is subnormal,
    yet such a vector is searched as its unit vector, not refused as zero."""
    v = np.random.default_rng(5).standard_normal((2, 32))
    want = lib.search_vectors(v, k=5, rerank="mean")
    got = lib.search_vectors(v * scale, k=5, rerank="mean")
    assert [[(h.track_id, h.score) for h in hits] for hits in got] == [
        [(h.track_id, h.score) for h in hits] for hits in want]


@pytest.mark.parametrize("where, message", [
    ("artist ==== 'A'", "bad where predicate: operator ==== is unknown"),
    ("artist = = 'A'", "bad where predicate: .*syntax error"),
    ("no_such_column = 1", "bad where predicate: .*no_such_column.*Columns: track_id, path"),
    ("artist = 'A'; DROP TABLE tracks", "bad where predicate: syntax error"),
    ("1=1); SELECT (1", "one SQL predicate, not statements"),
    ("1=1); DROP TABLE tracks; SELECT (1", "bad where predicate"),
    ("   ", "where is empty"),
    # reading files, globbing, sniffing: table functions are refused by the syntax-tree check (and DuckDB
    # runs with external access off anyway)
    ("track_id IN (SELECT column0 FROM read_csv('/etc/passwd'))", r"table function read_csv\(\) is not allowed"),
    ("1=1) UNION SELECT content FROM read_text('/etc/passwd') --", "syntax error"),  # -- cannot eat the ')'
    ("1=1) UNION SELECT content FROM read_text('/etc/passwd') WHERE (1=1", "changed the query around it"),
    ("track_id IN (SELECT file FROM glob('/etc/*'))", r"table function glob\(\) is not allowed"),
    ("EXISTS (SELECT * FROM read_parquet('/tmp/x.parquet'))", r"table function read_parquet\(\) is not allowed"),
    ("EXISTS (SELECT * FROM sniff_csv('/etc/passwd'))", r"table function sniff_csv\(\) is not allowed"),
    # writing or changing settings is not expressible in a predicate
    ("(SELECT set_config('enable_external_access', 'true')) IS NULL", r"function set_config\(\) is not allowed"),
    ("getenv('HOME') IS NOT NULL", r"function getenv\(\) is not allowed"),
])
def test_bad_or_hostile_where(lib: Library, where: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        lib.search("jazz", where=where)


def test_where_that_escapes_its_parentheses_is_refused(lib: Library) -> None:
    with pytest.raises(QueryError, match="changed the query around it"):
        lib.search("jazz", where="1=1) UNION ALL SELECT path FROM tracks WHERE (1=1", k=100)
    assert {h.track_id for h in lib.search("jazz", where="artist = 'A' AND year > 2001", k=100)} == {"t2", "t4"}


@settings(max_examples=60, deadline=None)
@given(k=st.integers(-3, 3 * N_TRACKS), candidates=st.integers(-2, 12),
       rerank=st.sampled_from([*RERANK_MODES, "bogus"]), exact=st.booleans(),
       where=st.sampled_from([None, "artist = 'A'", "year >= 2003", "year > 3000", "artist = "]),
       seed=st.integers(0, 1000))
def test_any_query_parameters_error_clearly_or_rank_well(lib: Library, k: int, candidates: int, rerank: str,
                                                         exact: bool, where: str | None, seed: int) -> None:
    q = l2_normalize(np.random.default_rng(seed).standard_normal((1, 32)).astype(np.float32))
    opts = SearchOptions(k=k, candidates=candidates, rerank=rerank, exact=exact, where=where)
    bad = k <= 0 or candidates <= 0 or rerank == "bogus" or where == "artist = "
    if bad:
        with pytest.raises(QueryError):
            lib.search_vectors(q, opts)
        return
    hits = lib.search_vectors(q, opts)[0]
    allowed = {"artist = 'A'": {0, 2, 4}, "year >= 2003": {3, 4, 5}, "year > 3000": set()}.get(
        where or "", set(range(N_TRACKS)))
    assert len(hits) == min(k, len(allowed), max(candidates, k))
    assert {h.track_id for h in hits} <= {f"t{i}" for i in allowed}
    assert len({h.track_id for h in hits}) == len(hits)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    for h in hits:
        assert 0 <= h.segment.start_s < h.segment.end_s <= h.duration_s + 1e-9


def test_cli_query_errors_exit_2(lib_path: Path, no_torch: None, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["search", "--library", str(lib_path)]
    long_query = "jazz " * 10_000
    bad_npy = tmp_path / "bad.npy"
    bad_npy.write_bytes(b"not numpy")
    strings_npy = tmp_path / "strings.npy"
    np.save(strings_npy, np.array(["a", "b"]))
    complex_npy, zero_npy, huge_npy = tmp_path / "c.npy", tmp_path / "z.npy", tmp_path / "h.npy"
    np.save(complex_npy, np.ones((1, 32), np.complex128))
    np.save(zero_npy, np.stack([np.ones(32, np.float32), np.zeros(32, np.float32)]))
    np.save(huge_npy, np.full((1, 32), 1e38, np.float32))
    empty_file = tmp_path / "empty.txt"
    empty_file.write_text("\n \n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 jazz".encode("latin-1"))
    cases = [
        ([*base, ""], "the text query is empty"),
        ([*base, "   "], "the text query is empty"),
        ([*base, long_query], "50,000 characters long; at most 20,000"),
        ([*base, "jazz", "-k", "0"], "k must be at least 1"),
        ([*base, "jazz", "--where", "artist ==== 1"], "bad where predicate"),
        ([*base, "jazz", "--where", "EXISTS (FROM read_text('/etc/hostname'))"], "read_text() is not allowed"),
        ([*base, "--query-vectors", str(bad_npy)], "not a .npy file of float vectors"),
        ([*base, "--query-vectors", str(strings_npy)], "query vectors must hold real numbers, not <U1"),
        ([*base, "--query-vectors", str(complex_npy)], "query vectors must hold real numbers, not complex128"),
        ([*base, "--query-vectors", str(zero_npy)], "query vector 1 is zero"),
        ([*base, "--query-vectors", str(huge_npy)], "values up to 1e+38; at most ±1e+18"),
        ([*base, "--query-vectors", str(tmp_path)], "not a regular file"),
        ([*base, "jazz", "--segment-s", "0"], "--segment-s must be a finite number of seconds above 0"),
        ([*base, "jazz", "--segment-s", "nan"], "--segment-s must be a finite number"),
        ([*base, "jazz", "--kernel-s", "-1"], "--kernel-s must be a finite number"),
        ([*base, "jazz", "--where-timeout", "0"], "--where-timeout must be a finite number of seconds above 0"),
        ([*base, "jazz", "--where-timeout", "inf"], "--where-timeout must be a finite number of seconds above 0"),
        ([*base, "--audio", str(bad_npy), "--start", "nan"], "--start must be a finite number"),
        ([*base, "--audio", str(bad_npy), "--start", "5", "--end", "5"],
         "the excerpt end (--end=5) must be after its start (--start=5)"),
        ([*base, "--audio", str(bad_npy), "--end", "600"], "at most --max-excerpt=60 s"),
        ([*base, "--query-file", str(empty_file)], "no queries in the file"),
        ([*base, "--query-file", str(latin1)], "not UTF-8 text"),
        ([*base, "--query-file", str(tmp_path / "missing.txt")], "cannot read"),
        ([*base, "jazz", "--audio", str(tmp_path / "x.wav")], "exactly one of"),
        (["search", "jazz", "--library", str(tmp_path / "nolib")], "no library at"),
    ]
    for args, message in cases:
        t = time.perf_counter()
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args[:4], r.output)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], (args[:4], r.output)   # one clear line
        assert time.perf_counter() - t < 10
    r = runner.invoke(app, [*base, "jazz", "-k", "100", "--json", "--rerank", "max"])
    assert r.exit_code == 0 and "the library has 6 tracks; showing all of them" in r.output


def test_audio_query_that_fails_to_decode(lib_path: Path, no_torch: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    with pytest.raises(DecodeError, match="bad.mp3") as err:  # the library's typed error, one line
        Library.open(lib_path).search(audio=bad)
    assert "\n" not in str(err.value)
    r = CliRunner().invoke(app, ["search", "--library", str(lib_path), "--audio", str(bad)])
    assert r.exit_code == 2 and "bad.mp3" in r.output


def test_threads_sharing_a_library_load_its_model_and_index_once(lib_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    loads = {"encoder": 0, "index": 0}
    real_load_index = faiss_index.load_index

    def slow_encoder(*args: object, **kwargs: object) -> FakeEncoder:
        loads["encoder"] += 1
        time.sleep(0.2)  # a real model takes seconds: every thread arrives while it loads
        return FakeEncoder()

    def slow_index(*args: object, **kwargs: object) -> object:
        loads["index"] += 1
        time.sleep(0.2)
        return real_load_index(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(search_module, "load_encoder", slow_encoder)
    monkeypatch.setattr(faiss_index, "load_index", slow_index)
    shared = Library.open(lib_path)
    with ThreadPoolExecutor(6) as pool:
        hits = list(pool.map(lambda i: shared.search(f"query {i}", k=3, rerank="max"), range(12)))
    assert loads == {"encoder": 1, "index": 1} and all(len(h) == 3 for h in hits)


def test_an_audio_excerpts_segment_is_no_longer_than_the_excerpt(lib: Library,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10 s clip matches one 10 s window; a 25 s clip may cover 2 (under a pooling mode: by default a clip of
    several windows is aligned window by window, tests/engine/test_align.py). Text keeps the 3-window
    segment, and the scores do not depend on it."""
    seen: list[float] = []
    real = search_module.longtext.chunk_scores

    def spy(sims: np.ndarray, lengths: np.ndarray, params: object, mode: str) -> object:
        seen.append(params.segment_kernel)  # type: ignore[attr-defined]
        return real(sims, lengths, params, mode=mode)  # type: ignore[arg-type]

    monkeypatch.setattr(search_module.longtext, "chunk_scores", spy)
    sr = lib.encoder.info.sample_rate
    clip = np.sin(2 * np.pi * 440 * np.arange(60 * sr) / sr).astype(np.float32)
    short = lib.search(audio=clip, end_s=10, k=5)
    lib.search(audio=clip, end_s=25, k=5, rerank="hedge")
    lib.search(audio=clip, end_s=60, k=5, rerank="hedge")
    lib.search("a text query", k=5)
    assert seen == [1.0, 2.0, 3.0, 3.0]
    assert all(h.segment.end_s - h.segment.start_s <= 10.0 for h in short)
    full = lib.search(audio=clip, end_s=10, k=5)  # the default rerank (hedge for a one-window clip)
    monkeypatch.setattr(search_module.Library, "_excerpt_segment", lambda self, opts, excerpt_s: opts)
    assert [(h.track_id, h.score) for h in lib.search(audio=clip, end_s=10, k=5)] == \
        [(h.track_id, h.score) for h in full]  # the same ranking and scores with the 3-window segment
