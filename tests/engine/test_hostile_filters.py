"""Hostile `where` predicates (docs/robustness.md, "Hostile input"): parsed by DuckDB's own parser, bounded
in time (a timer calls interrupt()) and in size (functions that can build values without bound, table
functions, joins and WITH are refused before anything runs), Ctrl-C still stops a running filter."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.errors import QueryError
from songseek.engine.query.filters import FilterLimits, conjoin, filter_track_ids, sql
from tests.filter_helpers import SLOW_PREDICATE, big_tables

REPO = str(Path(__file__).resolve().parents[2])  # the child process imports tests.filter_helpers from here


def _tables(n: int = 6) -> dict[str, pa.Table]:
    return {"tracks": pa.table({"track_id": [f"t{i}" for i in range(n)],
                                "path": [f"/music/{i};x.wav" for i in range(n)],
                                "artist": [["A;B", "C"][i % 2] for i in range(n)],
                                "year": list(range(2000, 2000 + n))}),
            "tags": pa.table({"track_id": [f"t{i}" for i in range(n)], "tag_jazz": [i / n for i in range(n)]})}


def test_semicolons_and_comments_inside_the_predicate_are_just_text() -> None:
    t = _tables()
    assert sorted(filter_track_ids(t, "artist = 'A;B'")) == ["t0", "t2", "t4"]
    assert sorted(filter_track_ids(t, "path LIKE '%;x.wav' AND year < 2002 -- a trailing comment")) == ["t0", "t1"]
    assert sorted(filter_track_ids(t, "tag('jazz') > 0.5")) == ["t4", "t5"]
    # subqueries over the library's own tables are fine
    assert sorted(filter_track_ids(t, "track_id IN (SELECT track_id FROM tags WHERE tag_jazz < 0.2)")) == ["t0", "t1"]


def test_conjoin_keeps_each_predicate_inside_its_own_parentheses() -> None:
    t = _tables()
    both = conjoin(["artist = 'A;B' OR year = 2001", "year < 2004"])
    assert sorted(filter_track_ids(t, both)) == ["t0", "t1", "t2"]  # (A;B or 2001) and before 2004
    # parentheses inside strings and comments do not count; a trailing comment swallows nothing after it
    assert sorted(filter_track_ids(t, conjoin(["path LIKE '%(%' OR year < 2003 -- )", "year > 2000"]))) == \
        ["t1", "t2"]
    for escape, message in (("true) OR (true", "closes a parenthesis it did not open"),
                            ("(year > 2000", "is never closed"), ("year > 2000 /* ) */ OR (1=1", "never closed")):
        with pytest.raises(QueryError, match=message):
            conjoin([escape, "artist = 'nobody'"])


@pytest.mark.parametrize("where", ["artist=", "year > 2000 AND", "(year > 2000", "year > 2000 -- c\nAND"])
def test_an_incomplete_predicate_is_named_not_the_parenthesis_wrapped_around_it(where: str) -> None:
    """DuckDB reported 'syntax error at or near ")"': a ')' the user never typed."""
    with pytest.raises(QueryError) as err:
        filter_track_ids(_tables(), where)
    assert str(err.value).startswith(f'bad where predicate "{where}": incomplete expression'.replace("\n", "\\n"))
    with pytest.raises(QueryError, match='syntax error at or near "bar"'):  # errors inside the text stay DuckDB's
        filter_track_ids(_tables(), "artist bar")


@pytest.mark.parametrize("where, message", [
    ("length(repeat(path, 1000000000)) > 0", r"function repeat\(\) is not allowed"),
    ("length(lpad(path, 2000000000, 'x')) > 0", r"function lpad\(\) is not allowed"),
    ("length(printf('%2000000000d', 1)) > 0", r"function printf\(\) is not allowed"),
    ("length(replace(path, '/', path)) > 0", r"function replace\(\) is not allowed"),
    ("(SELECT length(string_agg(path, '')) FROM tracks) > 0", r"function string_agg\(\) is not allowed"),
    ("len(range(1000000000)) > 0", r"function range\(\) is not allowed"),
    ("EXISTS (SELECT * FROM range(1000000000000))", r"table function range\(\) is not allowed"),
    ("EXISTS (SELECT * FROM generate_series(1, 1000000000000))", r"table function generate_series\(\)"),
    ("EXISTS (SELECT 1 FROM tracks a, tracks b, tracks c)", "joins are not allowed"),
    ("EXISTS (SELECT 1 FROM tracks a CROSS JOIN tracks b)", "joins are not allowed"),
    ("EXISTS (SELECT 1 FROM (SELECT path || path AS p FROM tracks))", "only the library's tables"),
    ("EXISTS (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r)", "WITH"),
    ("len(list_transform([1, 2], x -> x + 1)) > 0", r"list_transform\(\) is not allowed"),
    # a wrong shape: the UNION of a list or a struct after a closing parenthesis
    ("1=1) UNION SELECT [1, 2] FROM tracks WHERE (1=1", "changed the query around it"),
    ("1=1) UNION SELECT {'a': 1} FROM tracks WHERE (1=1", "changed the query around it"),
    ("1=1) ORDER BY (1", "changed the query around it"),
    ("1=1) LIMIT (1", "changed the query around it"),
    ("x" * 10_001, "at most 10,000 are accepted"),
])
def test_generators_and_wrong_shapes_are_refused_before_running(where: str, message: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(QueryError, match=message) as err:
        filter_track_ids(_tables(), where)
    assert "\n" not in str(err.value)
    assert time.perf_counter() - t0 < 20  # refused at once (generous: a cold first call on a slow machine)


def test_a_slow_predicate_is_interrupted_at_its_time_limit() -> None:
    t0 = time.perf_counter()
    with pytest.raises(QueryError, match=r"ran past its time limit of 0.3 s \(FilterLimits.timeout_s\)"):
        filter_track_ids(big_tables(), SLOW_PREDICATE, FilterLimits(timeout_s=0.3))
    assert time.perf_counter() - t0 < 20   # stopped (generous: the machine is shared), not minutes
    with pytest.raises(QueryError, match="ran past its time limit"):
        sql(big_tables(), f"SELECT count(*) FROM tracks WHERE {SLOW_PREDICATE}", FilterLimits(timeout_s=0.3))


def test_a_filter_past_its_memory_limit_is_stopped_with_a_typed_error() -> None:
    from songseek.engine.errors import FilterLimitError

    tables = {"tracks": pa.table({"track_id": [f"t{i}" for i in range(3000)],
                                  "path": [f"/m/{i:08d}/{'x' * 300}.wav" for i in range(3000)]})}
    hungry = "path IN (SELECT max(path) OVER (ORDER BY path DESC) FROM tracks)"
    with pytest.raises(FilterLimitError, match=r"memory limit of 1 MB \(FilterLimits.memory_mb\)") as err:
        filter_track_ids(tables, hungry, FilterLimits(memory_mb=1))
    assert (err.value.limit, err.value.value) == ("memory_mb", 1)
    assert len(filter_track_ids(tables, hungry, FilterLimits(memory_mb=64))) == 1  # the same query fits in 64 MB


@pytest.mark.parametrize("limits, message", [
    (FilterLimits(timeout_s=0), "timeout_s must be a positive number"),
    (FilterLimits(timeout_s=float("nan")), "timeout_s must be a positive number"),
    (FilterLimits(memory_mb=0), "memory_mb must be a positive integer"),
    (FilterLimits(threads=True), "threads must be a positive integer"),
])
def test_bad_limits_name_the_parameter(limits: FilterLimits, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        filter_track_ids(_tables(), "year > 0", limits)


@pytest.mark.parametrize("delay_s", [0.0, 0.5, 2.0])   # while setting up, just started, well under way
def test_ctrl_c_stops_a_running_filter(delay_s: float) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from tests.filter_helpers import SLOW_PREDICATE, big_tables
        from songseek.engine.query.filters import FilterLimits, filter_track_ids
        tables = big_tables()
        try:  # "ready" inside: a Ctrl-C that lands as soon as it is read must not escape the handler
            print("ready", flush=True)
            filter_track_ids(tables, SLOW_PREDICATE, FilterLimits(timeout_s=300))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """)
    # SIGINT may be ignored by whatever started the tests (a background job): the child gets it back
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(delay_s)
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in out
    assert time.perf_counter() - t0 < 30


def test_filter_limits_are_parameters_of_the_library_and_of_each_search(tmp_path: Path) -> None:
    from songseek.engine.encoders.base import l2_normalize
    from songseek.engine.encoders.fake import FakeEncoder
    from songseek.engine.query.search import Library, SearchOptions
    from songseek.engine.storage.manifest import Manifest
    from songseek.engine.storage.store import TrackRecord
    from songseek.engine.storage.writer import LibraryWriter

    root = tmp_path / "lib"
    rng = np.random.default_rng(0)
    with LibraryWriter(root, Manifest(encoder=FakeEncoder().info, window_s=10.0, hop_s=10.0)) as w:
        for i in range(3000):
            w.add_track(TrackRecord(track_id=f"t{i}", path=f"/m/{i:08d}.wav", duration_s=10.0),
                        l2_normalize(rng.standard_normal((1, 32)).astype(np.float32)), np.zeros(1), np.full(1, 10.0))
        w.commit()
    q = rng.standard_normal(32).astype(np.float32)
    lib = Library.open(root, encoder=FakeEncoder(), filter_limits=FilterLimits(timeout_s=0.05))
    slow = "EXISTS (SELECT 1 FROM tracks t2 WHERE levenshtein(t2.path, tracks.path) = 1000)"
    with pytest.raises(QueryError, match="time limit of 0.05 s"):
        lib.search(vector=q, where=slow)
    with pytest.raises(QueryError, match="time limit of 0.1 s"):
        lib.search(vector=q, options=SearchOptions(where=slow, filter_limits=FilterLimits(timeout_s=0.1)))
    assert [h.track_id for h in lib.search(vector=q, where="path LIKE '%0001.wav'")] == ["t1"]


def test_sql_tag_lookup_matches_a_naive_reference_over_many_chunks() -> None:
    """`sql`'s tag() looks each row's track_id up in the tags table, chunk by chunk (DuckDB's are 2048 rows):
    over several chunks, shuffled tags rows, tracks without a tags row (NULL) and tags rows without a track,
    each row gets its own track's value, with the label varying from row to row."""
    rng = np.random.default_rng(7)
    n = 5000
    track_ids = [f"t{i:05d}" for i in range(n)]
    tagged = [t for t in track_ids if rng.random() < 0.8] + [f"gone{i}" for i in range(50)]
    tagged = [tagged[i] for i in rng.permutation(len(tagged))]
    jazz = rng.random(len(tagged)).astype(np.float32)
    rock = rng.random(len(tagged)).astype(np.float32)
    tracks = pa.table({"track_id": track_ids, "pick": [["jazz", "Rock"][i % 2] for i in range(n)]})
    tags = pa.table({"track_id": tagged, "tag_jazz": pa.array(jazz), "tag_rock": pa.array(rock)})
    tables = {"tracks": tracks, "tags": tags}
    ref = {"jazz": dict(zip(tagged, jazz.tolist())), "rock": dict(zip(tagged, rock.tolist()))}

    got = sql(tables, "SELECT track_id, tag('jazz') AS j, tag(pick) AS p, typeof(tag('rock')) AS ty "
                      "FROM tracks ORDER BY random()").to_pylist()
    assert len(got) == n and {r["ty"] for r in got} == {"FLOAT"}  # float32 scores stay float32
    for r in got:
        i = int(r["track_id"][1:])
        assert r["j"] == ref["jazz"].get(r["track_id"])
        assert r["p"] == ref[["jazz", "rock"][i % 2]].get(r["track_id"])
    assert sum(r["j"] is None for r in got) == n - (len(tagged) - 50) > 0

    hits = sql(tables, "SELECT track_id FROM tracks WHERE tag('rock') > 0.5 ORDER BY 1").column(0).to_pylist()
    assert hits == sorted(t for t in track_ids if ref["rock"].get(t, 0.0) > 0.5)
    # a float64 tag column makes every tag() DOUBLE, with the same values
    tables["tags"] = tags.set_column(1, "tag_jazz", tags.column("tag_jazz").cast(pa.float64()))
    got = sql(tables, "SELECT track_id, tag('rock') AS r, typeof(tag('rock')) AS ty FROM tracks").to_pylist()
    assert {r["ty"] for r in got} == {"DOUBLE"}
    assert all(r["r"] == ref["rock"].get(r["track_id"]) for r in got)
    with pytest.raises(QueryError, match="unknown tag 'polka'; known tags: jazz, rock"):
        sql(tables, "SELECT tag(CASE WHEN track_id = 't04999' THEN 'polka' ELSE 'jazz' END) FROM tracks")
