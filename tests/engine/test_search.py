"""The query engine against naive numpy references on seeded vector libraries."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.errors import IncompatibleLibraryError, QueryError
from songseek.engine.query.candidates import ExactPolicy
from songseek.engine.query.diversity import cap_per_artist
from songseek.engine.query.fusion import FusionParams, params_for_hop
from songseek.engine.query.search import Hit, Library, SearchKwargs, SearchOptions, Segment
from songseek.engine.query.stats import library_stats
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table
from tests.rerank_parts_reference import assert_best_segment, naive_segment_keys
from tests.rerank_reference import naive_scores


@pytest.fixture
def lib(tmp_path: Path) -> Library:
    ingest_table(vector_table(60, 24, seed=3), tmp_path / "lib")
    return Library.open(tmp_path / "lib")


def naive_rank(lib: Library, q: np.ndarray, mode: str, params: FusionParams) -> list[tuple[str, float]]:
    """Score every track from its own frames with plain loops (no FAISS, no candidate cut)."""
    q = q / np.linalg.norm(q)
    tracks = lib.tracks.to_pylist()
    rows = [list((lib.store.vectors(r["frame_start"], r["frame_count"]) @ q).astype(np.float32)) for r in tracks]
    # every track is a candidate: the query's scale comes from all of them (naive_scores standardises)
    scores = naive_scores(mode, rows, params)
    out = [(r["track_id"], float(sc)) for r, sc in zip(tracks, scores, strict=True)]
    return sorted(out, key=lambda x: (-x[1], x[0]))


@pytest.mark.parametrize("mode", ["auto", "hedge", "part", "whole", "fusion", "blend", "mean", "max", "none"])
def test_search_matches_naive_reference_when_all_tracks_are_candidates(lib: Library, mode: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        q = rng.standard_normal(24).astype(np.float32)
        hits = lib.search(vector=q, k=10, rerank=mode, candidates=1000)
        ref = naive_rank(lib, q, "max" if mode == "none" else mode, FusionParams())[:10]
        assert [h.track_id for h in hits] == [t for t, _ in ref]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in ref], rtol=1e-5, atol=1e-5)
        assert [h.rank for h in hits] == list(range(1, 11))
        # the segment: the best run of frames under the mode's rule, in the seconds of those frames
        # (vector_table's frame f spans 10 f to 10 f + 10 s); a near-tie (1e-5) may go either way
        tracks = lib.tracks.to_pylist()
        qn = q / np.linalg.norm(q)
        rows = [[float(x) for x in lib.store.vectors(r["frame_start"], r["frame_count"]) @ qn] for r in tracks]
        keys = dict(zip([r["track_id"] for r in tracks], naive_segment_keys(mode, rows), strict=True))
        for h in hits:
            first, last = round(h.segment.start_s / 10), round(h.segment.end_s / 10) - 1
            assert (h.segment.start_s, h.segment.end_s) == (10.0 * first, 10.0 * last + 10.0)
            assert_best_segment(keys[h.track_id], first, last, what=(mode, h.track_id, h.segment))


def test_none_rerank_orders_by_best_window_and_segment_is_that_window(lib: Library) -> None:
    q = np.random.default_rng(5).standard_normal(24).astype(np.float32)
    hits = lib.search(vector=q, k=5, rerank="none")
    ref = naive_rank(lib, q, "max", FusionParams())[:5]
    assert [h.track_id for h in hits] == [t for t, _ in ref]
    for h in hits:
        assert h.segment.end_s - h.segment.start_s == pytest.approx(10.0)
        assert h.candidate_score == pytest.approx(h.score)


def test_segment_times_come_from_the_frames_table(lib: Library) -> None:
    q = np.random.default_rng(6).standard_normal(24).astype(np.float32)
    for h in lib.search(vector=q, k=10):
        assert 0.0 <= h.segment.start_s < h.segment.end_s <= h.duration_s + 1e-9


def test_where_filter_never_returns_fewer_than_k_when_enough_match(lib: Library) -> None:
    q = np.random.default_rng(7).standard_normal(24).astype(np.float32)
    hits = lib.search(vector=q, k=15, where="artist = 'artist1'", candidates=15)
    assert len(hits) == 15 and all(h.artist == "artist1" for h in hits)
    matching = {r["track_id"] for r in lib.tracks.to_pylist() if r["artist"] == "artist1"}
    ref = [t for t, _ in naive_rank(lib, q, "max", FusionParams()) if t in matching][:15]
    assert [h.track_id for h in lib.search(vector=q, k=15, where="artist = 'artist1'", rerank="none")] == ref


def test_results_are_deterministic(lib: Library) -> None:
    q = np.random.default_rng(8).standard_normal(24).astype(np.float32)
    assert lib.search(vector=q, k=10) == lib.search(vector=q, k=10)


def test_exact_path_equals_index_path_on_flat_index(lib: Library) -> None:
    q = np.random.default_rng(9).standard_normal((4, 24)).astype(np.float32)
    a = lib.search_vectors(q, SearchOptions(k=10))
    b = lib.search_vectors(q, SearchOptions(k=10, exact=True))
    assert [[h.track_id for h in hs] for hs in a] == [[h.track_id for h in hs] for hs in b]


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": -3}, {"rerank": "best"}, {"candidates": 0}])
def test_bad_options_raise_query_error(lib: Library, kwargs: dict[str, Any]) -> None:
    with pytest.raises(QueryError):
        lib.search(vector=np.ones(24, np.float32), **kwargs)


def test_keyword_options_are_the_search_options_fields(lib: Library) -> None:
    assert set(SearchKwargs.__annotations__) == {f.name for f in dataclasses.fields(SearchOptions)}
    q = lib.store.vectors(0, 1)[0]
    assert [h.track_id for h in lib.search(vector=q, k=3, rerank="max")] == \
        [h.track_id for h in lib.search(vector=q, options=SearchOptions(k=3, rerank="max"))]
    with pytest.raises(QueryError, match="not both"):
        lib.search(vector=q, options=SearchOptions(k=3), k=5)


def test_wrong_dimension_and_text_on_precomputed_library(lib: Library) -> None:
    with pytest.raises(QueryError, match=r"\(n, 24\)"):
        lib.search(vector=np.ones(5, np.float32))
    with pytest.raises(QueryError, match="precomputed"):
        lib.search("jazz")


def test_k_larger_than_library_returns_every_track(lib: Library) -> None:
    hits = lib.search(vector=np.ones(24, np.float32), k=500)
    assert len(hits) == lib.n_tracks == 60


def test_library_built_with_other_encoder_is_refused(tmp_path: Path) -> None:
    from songseek.engine.encoders.fake import FakeEncoder

    enc = FakeEncoder()
    ingest_table(vector_table(5, 32, seed=1), tmp_path / "lib", encoder=enc.info)
    other = FakeEncoder(dim=16)
    with pytest.raises(IncompatibleLibraryError, match="dim"):
        Library.open(tmp_path / "lib", encoder=other)


def test_info_counts(lib: Library) -> None:
    stats = library_stats(lib)
    assert stats.tracks == 60
    assert stats.frames == sum(r["frame_count"] for r in lib.tracks.to_pylist())
    assert stats.dead_frames == 0 and stats.index == "Flat" and stats.encoder == "precomputed"


def test_nprobe_must_be_positive(lib: Library) -> None:
    with pytest.raises(QueryError, match="nprobe"):
        lib.search(vector=np.ones(24, np.float32), nprobe=0)


def test_where_predicates_are_remembered_per_library(lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.engine.query import search as search_mod

    calls: list[str] = []
    real = search_mod.filter_track_ids

    def counting(tables: dict[str, object], where: str, limits: Any) -> np.ndarray:
        calls.append(where)
        return real(tables, where, limits)

    monkeypatch.setattr(search_mod, "filter_track_ids", counting)
    lib = Library.open(lib.root, policy=ExactPolicy(where_cache=2))
    q = np.random.default_rng(3).standard_normal(lib.manifest.dim).astype(np.float32)
    first = [h.track_id for h in lib.search(vector=q, k=5, where="artist = 'artist1'")]
    again = [h.track_id for h in lib.search(vector=q, k=5, where="artist = 'artist1'")]
    assert first == again and calls == ["artist = 'artist1'"]
    for _ in range(2):  # a bad predicate is never remembered: the same clear error each time
        with pytest.raises(QueryError, match="bad where predicate"):
            lib.search(vector=q, k=5, where="no_such_column = 1")
    lib.search(vector=q, k=5, where="artist = 'artist2'")
    lib.search(vector=q, k=5, where="artist = 'artist0'")  # evicts artist1 (the cache holds 2)
    lib.search(vector=q, k=5, where="artist = 'artist1'")
    assert calls.count("artist = 'artist1'") == 2
    lib.search(vector=q, k=5, where="artist = 'artist0'")  # still held: the cache holds 2
    assert calls.count("artist = 'artist0'") == 1
    kept = lib.allowed_rows("artist = 'artist1'")
    assert kept is not None and not kept.flags.writeable


def test_segments_span_the_asked_seconds_when_windows_overlap(tmp_path: Path) -> None:
    """10 s windows every 5 s: a 30 s segment is 5 frames (0-30 s), not 6 (0-35 s); params_for_hop counts
    the frames that cover the seconds, and a stride in steps."""
    assert params_for_hop(5.0, segment_s=30.0, window_s=10.0).segment_kernel == 5
    assert params_for_hop(10.0, segment_s=30.0).segment_kernel == 3  # window = hop: as before
    p = params_for_hop(5.0, kernel_s=20.0, stride_s=10.0, window_s=10.0)
    assert (p.kernel, p.stride) == (3, 2)
    table = vector_table(8, 16, seed=4, min_frames=8, max_frames=20, hop=5.0)
    table = table.set_column(table.schema.get_field_index("end_s"), "end_s",
                             pa.array([s + 10.0 for s in table.column("start_s").to_pylist()]))
    ingest_table(table, tmp_path / "lib")
    lib = Library.open(tmp_path / "lib")
    assert (lib.manifest.window_s, lib.manifest.hop_s) == (10.0, 5.0)
    q = np.random.default_rng(9).standard_normal(16).astype(np.float32)
    for mode in ("auto", "fusion", "part", "mean"):
        for h in lib.search(vector=q, k=8, rerank=mode):
            assert h.segment.end_s - h.segment.start_s <= 30.0 + 1e-9, (mode, h.segment)


def brute_best_window(lib: Library, q: np.ndarray, keep: set[str] | None = None) -> list[str]:
    """Track ids by best window over every frame (ties: track id), only those in ``keep`` when given."""
    qn = (q / np.linalg.norm(q)).astype(np.float32)
    best = [(-float((np.asarray(lib.store.vectors(r["frame_start"], r["frame_count"])) @ qn).max()), r["track_id"])
            for r in lib.tracks.to_pylist() if keep is None or r["track_id"] in keep]
    return [t for _, t in sorted(best)]


def test_ivf_filter_still_returns_k_hits_when_the_probed_lists_hold_too_few(tmp_path: Path) -> None:
    """A filter over more frames than ``subset_frames`` goes through FAISS; where the probed IVF lists hold
    fewer than k matching tracks, the exact masked scan must fill in (docs/api.md: k hits whenever k match)."""
    ingest_table(vector_table(300, 16, seed=5, max_frames=20), tmp_path / "lib", index_factory="IVF16,Flat")
    lib = Library.open(tmp_path / "lib", policy=ExactPolicy(subset_frames=0))  # as a large library would
    assert "IVF" in lib.manifest.index_description
    keep = {r["track_id"] for r in lib.tracks.to_pylist() if r["year"] == 1960}
    assert len(keep) == 8
    rng = np.random.default_rng(2)
    for _ in range(5):
        q = rng.standard_normal(16).astype(np.float32)
        hits = lib.search(vector=q, k=20, where="year = 1960", nprobe=1, candidates=20, rerank="max")
        assert [h.track_id for h in hits] == brute_best_window(lib, q, keep)
        hits = lib.search(vector=q, k=5, where="year = 1960", nprobe=1, candidates=5, rerank="max")
        assert len(hits) == 5 and {h.track_id for h in hits} <= keep


@pytest.mark.parametrize("kwargs", [{"k": 2.5}, {"k": "3"}, {"candidates": 3.5}, {"nprobe": 1.5}, {"k": True}])
def test_option_counts_must_be_integers(lib: Library, kwargs: dict[str, Any]) -> None:
    with pytest.raises(QueryError, match="integer"):
        lib.search(vector=np.ones(24, np.float32), **kwargs)


def test_several_vectors_given_to_search_name_their_own_shape(lib: Library) -> None:
    with pytest.raises(QueryError, match=r"\(2, 24\).*search_vectors"):
        lib.search(vector=np.ones((2, 24), np.float32))
    assert len(lib.search(vector=np.ones((1, 24), np.float32), k=2)) == 2  # one row is one vector


def test_cap_per_artist_equals_a_naive_walk() -> None:
    """cap_per_artist against a plain loop: walk the ranking, count each artist's hits, skip those past the
    cap, stop at k, renumber 1..n; hits with no artist are never capped. Bad caps and k are refused."""
    rng = np.random.default_rng(41)
    seg = Segment(0.0, 10.0)
    for _ in range(300):
        artists = [None if a == 0 else f"a{a}" for a in rng.integers(0, 4, int(rng.integers(0, 25))).tolist()]
        hits = [Hit(rank=i + 1, track_id=f"t{i}", path=f"{i}.wav", score=-float(i), segment=seg, r_k=0.0,
                    r_t=0.0, best_window=0.0, candidate_score=0.0, artist=a) for i, a in enumerate(artists)]
        per_artist, k = int(rng.integers(1, 4)), int(rng.integers(1, 12))
        counts: dict[str, int] = {}
        ref = []
        for h in hits:
            if h.artist is not None:
                counts[h.artist] = counts.get(h.artist, 0) + 1
                if counts[h.artist] > per_artist:
                    continue
            ref.append(h.track_id)
        ref = ref[:k]
        got = cap_per_artist(hits, per_artist, k)
        assert [h.track_id for h in got] == ref
        assert [h.rank for h in got] == list(range(1, len(ref) + 1))
    for per_artist, k in [(0, 5), (-1, 5), (1, 0), (2, -3)]:
        with pytest.raises(QueryError):
            cap_per_artist(hits, per_artist, k)
