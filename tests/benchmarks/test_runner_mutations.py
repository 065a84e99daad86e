"""benchmarks/runner.py behaviour that a mutation sweep found unpinned: the search plan's boundaries,
exact ranks past the first page, the relevant track's segment, bootstrap clusters, query subsets and
query-file preparation. References are plain loops over the window vectors or the query rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.benchmarks.datasets import load_queries
from songseek.benchmarks.runner import (
    EXHAUSTIVE_MAX,
    audio_to_text,
    prepare_queries,
    rank_queries,
    search_plan,
    subset_queries,
    text_to_audio,
    track_groups,
    unknown_ids_note,
)
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import FusionParams
from tests.benchmarks.runner_helpers import engine_order, naive_track_scores, open_quiet, track_frames


# ------------------------------------------------------------------------------------------ search plan
def test_search_plan_boundaries() -> None:
    with pytest.raises(UsageError, match="--candidates must be >= 0"):
        search_plan(40, candidates=-1)
    # candidates equal to the number of tracks: every track is reranked, exact
    at = search_plan(40, ks=(1, 5), candidates=40)
    assert at.exhaustive and at.exact and at.candidates == 40 and at.k == 10 and at.full_k == 40
    below = search_plan(40, ks=(1, 5), candidates=39)
    assert not below.exhaustive and not below.exact and below.candidates == 39 and below.full_k == 0
    # the default is exhaustive up to and including EXHAUSTIVE_MAX tracks, then 200 candidates
    assert search_plan(EXHAUSTIVE_MAX).exhaustive and search_plan(EXHAUSTIVE_MAX).full_k == EXHAUSTIVE_MAX
    over = search_plan(EXHAUSTIVE_MAX + 1)
    assert not over.exhaustive and over.candidates == 200 and over.k == 100
    # fewer candidates than the deepest cut-off: widened to it (the engine cannot return more than it reranks)
    assert search_plan(1000, ks=(1, 5, 10, 20, 100), candidates=50).candidates == 100



def naive_orders(table: pa.Table, seed: int, n: int, mode: str) -> tuple[np.ndarray, list[list[str]]]:
    """``n`` seeded random query vectors and each one's naive track order under ``mode``."""
    frames = track_frames(table)
    vecs = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    return vecs, [engine_order(naive_track_scores(frames, q, mode)) for q in vecs]

def test_rank_queries_refuses_unknown_or_no_modes(vec_lib: tuple[Path, pa.Table]) -> None:
    root, _ = vec_lib
    lib = open_quiet(root)
    vecs = np.ones((2, 16), np.float32)
    plan = search_plan(lib.n_tracks)
    for modes in (["max", "bogus"], []):
        with pytest.raises(UsageError, match="rerank modes are"):
            rank_queries(lib, vecs, [["t0001"], ["t0002"]], modes, FusionParams(), plan)


# ------------------------------------------------------------------------------------------ exact ranks
def test_exhaustive_ranks_past_the_first_page_are_exact_and_not_misses(vec_lib: tuple[Path, pa.Table]) -> None:
    # ks=(1, 5): the engine is asked for the top 10 of 40 tracks; a relevant track ranked below that must be
    # searched for again (exhaustive plan), never given the worst rank or counted as a miss.
    root, table = vec_lib
    lib = open_quiet(root)
    vecs, orders = naive_orders(table, 21, 12, "mean")
    # relevant: the naive 40th (last), 39th, 25th, 11th, ... track; each query one
    picks = [39, 38, 24, 10, 11, 15, 30, 0, 5, 20, 35, 12]
    rel = [[orders[i][p]] for i, p in enumerate(picks)]
    res, misses = text_to_audio(lib, vecs, rel, ["mean"], FusionParams(), ks=(1, 5))
    want = [p + 1 for p in picks]
    assert res["mean"].ranks is not None and res["mean"].ranks.tolist() == want
    assert misses == {"mean": 0}
    assert res["mean"].metrics["MedR"] == float(np.median(want))
    assert res["mean"].metrics["R@5"] == sum(w <= 5 for w in want) / len(want)


def test_segment_is_the_relevant_tracks_not_the_top_hits(vec_lib: tuple[Path, pa.Table]) -> None:
    root, table = vec_lib
    lib = open_quiet(root)
    vecs, orders = naive_orders(table, 4, 8, "max")
    frames = track_frames(table)
    rel = [[orders[i][3 + i]] for i in range(8)]  # never the top hit
    plan = search_plan(lib.n_tracks, ks=(1, 5, 10))
    qr = rank_queries(lib, vecs, rel, ["max"], FusionParams(), plan)["max"]
    assert qr.ranks.tolist() == [4 + i for i in range(8)]
    starts = table.column("start_s").to_numpy()
    ids = np.asarray(table.column("track_id").to_pylist())
    for i, q in enumerate(vecs):
        # max rerank: the segment is the relevant track's best-scoring window (10 s windows, hop 10 s)
        t = rel[i][0]
        f = frames[t]
        best = int(np.argmax(f @ (q / np.linalg.norm(q)).astype(np.float32)))
        start = float(np.sort(starts[ids == t])[best])
        assert qr.seg_start_s[i] <= start < qr.seg_end_s[i], i
        assert qr.seg_start_s[i] >= 0.0 and qr.seg_end_s[i] <= 10.0 * len(f)


# ------------------------------------------------------------------------------------------ clusters
def test_track_groups_do_not_depend_on_order_or_repeats() -> None:
    groups = track_groups([["b", "a"], ["a", "b"], ["a", "b", "a"], ["c"], ["a"]])
    assert groups[0] == groups[1] == groups[2] == ("a", "b")
    assert groups[3] == ("c",) and groups[4] == ("a",)
    assert len(set(groups)) == 3


# ------------------------------------------------------------------------------------------ query subsets
def _write_queries(path: Path, ids: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": q, "vector": [1.0, float(i)], "relevant": "t0000"}) + "\n"
                            for i, q in enumerate(ids)))


def test_subset_queries_is_order_free_keeps_file_order_and_refuses_zero(tmp_path: Path) -> None:
    ids = [f"q{i:02d}" for i in range(30)]
    shuffled = list(np.random.default_rng(1).permutation(ids))
    _write_queries(tmp_path / "a.jsonl", ids)
    _write_queries(tmp_path / "b.jsonl", shuffled)
    a = subset_queries(load_queries(tmp_path / "a.jsonl"), 7, seed=3)
    b = subset_queries(load_queries(tmp_path / "b.jsonl"), 7, seed=3)
    picked_a = [q.query_id for q in a.queries]
    picked_b = [q.query_id for q in b.queries]
    # the same ids whatever the row order: drawn from the ids sorted (a plain rng draw over sorted ids)
    want = sorted(sorted(ids)[int(j)] for j in np.random.default_rng(3).choice(30, size=7, replace=False))
    assert sorted(picked_a) == sorted(picked_b) == want
    # each keeps its own file's order
    assert picked_a == [q for q in ids if q in want]
    assert picked_b == [q for q in shuffled if q in want]
    with pytest.raises(UsageError, match="subset size must be >= 1"):
        subset_queries(load_queries(tmp_path / "a.jsonl"), 0)


# ------------------------------------------------------------------------------------------ query files
def test_prepare_queries_counts_unknown_ids_and_dedupes(vec_lib: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, _ = vec_lib
    rows = [
        {"vector": [1.0] * 16, "relevant": ["t0001", "t0001", "nope1", "nope2"]},
        {"vector": [0.5] * 16, "relevant": ["nope3", "t0002", "nope4", "nope5"], "start_s": 0.0, "end_s": 10.0},
        {"vector": [0.2] * 16, "relevant": ["t0003"]},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = prepare_queries(open_quiet(root), load_queries(path))
    assert p.relevant == [["t0001"], ["t0002"], ["t0003"]]
    assert p.unknown_relevant == 5  # every unknown id, not one per query
    assert p.unknown_examples == ("nope1", "nope2", "nope3")  # the first three
    assert p.spans is not None
    np.testing.assert_array_equal(np.isnan(p.spans), [[True, True], [False, False], [True, True]])
    assert p.spans[1].tolist() == [0.0, 10.0]


def test_queries_mixing_text_and_vectors_are_refused(vec_lib: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, _ = vec_lib
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"vector": [1.0] * 16, "relevant": "t0001"}) + "\n"
                    + json.dumps({"query": "soft piano", "relevant": "t0002"}) + "\n")
    with pytest.raises(UsageError, match="mix of text and vector queries"):
        prepare_queries(open_quiet(root), load_queries(path))


# ------------------------------------------------------------------------------------------ audio → text
def test_audio_to_text_none_mode_scores_by_the_best_window(vec_lib: tuple[Path, pa.Table]) -> None:
    # "none" (no rerank) is the engine's first stage: a track scores a caption by its best window (max).
    root, table = vec_lib
    lib = open_quiet(root)
    frames = track_frames(table)
    ids = list(frames)[:10]
    rng = np.random.default_rng(8)
    caps = rng.standard_normal((15, 16)).astype(np.float32)
    relevant = [[i, 10 + i // 2] for i in range(10)]
    res = audio_to_text(lib, caps, [(t, None) for t in ids], relevant, ["none"], FusionParams())
    want = []
    for q, t in enumerate(ids):
        sc = [float(np.max(frames[t] @ c)) for c in caps]
        best = max(sc[j] for j in relevant[q])
        want.append(1 + sum(1 for j in range(15) if sc[j] > best or (sc[j] == best and j not in relevant[q])))
    assert res["none"].ranks is not None and res["none"].ranks.tolist() == want


def test_unknown_ids_note_only_when_some_are_unknown() -> None:
    assert unknown_ids_note(0, [], "/lib") is None
    note = unknown_ids_note(4, ["x1", "x2", "x3"], "/lib")
    assert note is not None
    assert note.startswith("4 relevant id(s) of the queries are not tracks of /lib (first: x1, x2, x3)")
