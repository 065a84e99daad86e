"""engine/query/search.py: behaviour the main search tests leave open (found by a mutation sweep), each
checked against a direct computation or a brute-force loop over the library's frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.errors import QueryError
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.search import (
    MAX_EXCERPT_S,
    MAX_QUERY_CHARS,
    Library,
    check_query_text,
    excerpt_bounds,
)
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table
from tests.rerank_reference import naive_scores


def test_query_text_length_limit_is_inclusive() -> None:
    check_query_text("a" * MAX_QUERY_CHARS)  # exactly the limit: accepted
    with pytest.raises(QueryError, match="characters long"):
        check_query_text("a" * (MAX_QUERY_CHARS + 1))
    for empty in ("", "   ", "\x00\x01", "\n\t"):
        with pytest.raises(QueryError, match="empty"):
            check_query_text(empty)


def test_excerpt_bounds_accept_exactly_the_longest_excerpt_and_refuse_the_rest() -> None:
    """Direct cases: [start, end) with 0 <= start < end, end - start <= max; end None means start + max."""
    assert excerpt_bounds(0.0, None) == (0.0, MAX_EXCERPT_S)
    assert excerpt_bounds(5.0, 5.0 + MAX_EXCERPT_S) == (5.0, 5.0 + MAX_EXCERPT_S)  # exactly the longest
    assert excerpt_bounds(0.0, 0.5, max_excerpt_s=0.5) == (0.0, 0.5)
    assert excerpt_bounds(0.0, 1e-3) == (0.0, 1e-3)
    bad = [(5.0, 5.0), (5.0, 4.0), (0.0, MAX_EXCERPT_S + 1e-6), (-1e-9, 1.0), (0.0, -1.0), (math.nan, 1.0),
           (0.0, math.inf)]
    for start, end in bad:
        with pytest.raises(QueryError):
            excerpt_bounds(start, end)
    for max_s in (0.0, -1.0, math.inf):
        with pytest.raises(QueryError, match="max_excerpt_s"):
            excerpt_bounds(0.0, None, max_excerpt_s=max_s)


def _table(tracks: dict[str, np.ndarray]) -> pa.Table:
    rows = [{"track_id": tid, "start_s": 10.0 * f, "end_s": 10.0 * f + 10.0, "embedding": v.tolist(),
             "path": f"/music/{tid}.flac"} for tid, vecs in tracks.items() for f, v in enumerate(vecs)]
    return pa.Table.from_pylist(rows)


def brute(lib: Library, q: np.ndarray, mode: str) -> list[tuple[str, float]]:
    """Every track scored from its own frames with plain loops, best first, ties by track id."""
    qn = q / np.linalg.norm(q)
    tracks = lib.tracks.to_pylist()
    rows = [[float(x) for x in np.asarray(lib.store.vectors(r["frame_start"], r["frame_count"])) @ qn] for r in tracks]
    scores = naive_scores(mode, rows, FusionParams())
    return sorted(((r["track_id"], s) for r, s in zip(tracks, scores, strict=True)), key=lambda x: (-x[1], x[0]))


@pytest.mark.parametrize("mode", ["fusion", "max", "none", "mean", "auto"])
def test_tracks_that_tie_are_ordered_by_track_id_not_by_where_they_sit(tmp_path: Path, mode: str) -> None:
    """Two copies of one recording whose ids sort against their rows ("aa-copy" added by a later ingest sits after
    "zz-copy"): they tie on every score, and the hit order is by track id (deterministic order), not by row."""
    rng = np.random.default_rng(4)
    same = rng.standard_normal((5, 16)).astype(np.float32)
    tracks = {"zz-copy": same, **{f"m{i:02d}": rng.standard_normal((int(rng.integers(2, 8)), 16)).astype(np.float32)
                                  for i in range(12)}}
    ingest_table(_table(tracks), tmp_path / "lib")
    ingest_table(_table({"aa-copy": same.copy()}), tmp_path / "lib")
    lib = Library.open(tmp_path / "lib")
    rows = lib.track_column("track_id").tolist()
    assert rows.index("aa-copy") > rows.index("zz-copy")
    for _ in range(4):
        q = same[int(rng.integers(0, 5))] + 0.3 * rng.standard_normal(16).astype(np.float32)
        hits = lib.search(vector=q, k=14, rerank=mode, candidates=100)
        if mode != "auto":  # the hedge ranks twins once (fusion.py); the loop reference does not
            ref = brute(lib, q, "max" if mode == "none" else mode)
            assert [h.track_id for h in hits] == [t for t, _ in ref]
        ids = [h.track_id for h in hits]
        assert ids.index("aa-copy") + 1 == ids.index("zz-copy")


def test_frames_past_the_index_are_searched_by_brute_force_at_their_own_rows(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest stopped before its index update leaves the new tracks' frames out of the index (`info`: behind
    by N frames): a search still finds them, scoring each frame at its own row, exactly as brute force."""
    from songseek.engine.storage.writer import LibraryWriter

    ingest_table(vector_table(20, 16, seed=1, max_frames=10), tmp_path / "lib")

    def interrupted(self: LibraryWriter, *args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(LibraryWriter, "update_index", interrupted)
    more = vector_table(15, 16, seed=2, max_frames=10)
    more = more.set_column(0, "track_id", pa.array(["n" + t for t in more.column("track_id").to_pylist()]))
    more = more.set_column(more.schema.get_field_index("path"), "path",
                           pa.array(["/new" + p for p in more.column("path").to_pylist()]))
    with pytest.raises(KeyboardInterrupt):
        ingest_table(more, tmp_path / "lib")
    monkeypatch.undo()
    lib = Library.open(tmp_path / "lib")
    assert 0 < lib.manifest.index_frames < lib.store.n_rows  # the index is behind
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.standard_normal(16).astype(np.float32)
        hits = lib.search(vector=q, k=10, rerank="max", candidates=10)
        ref = brute(lib, q, "max")[:10]
        assert [h.track_id for h in hits] == [t for t, _ in ref]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in ref], atol=1e-5)


def test_a_filtered_search_cuts_tied_candidates_as_the_unfiltered_one(tmp_path: Path) -> None:
    """Two copies tie on every frame; with room for one candidate, the filtered (subset) route keeps the same one
    as the index route and the exact scan: the lower track row (best_per_track's tie rule)."""
    rng = np.random.default_rng(6)
    same = rng.standard_normal((4, 16)).astype(np.float32)
    others = {f"m{i:02d}": rng.standard_normal((3, 16)).astype(np.float32) for i in range(6)}
    ingest_table(_table({"zz-copy": same, **others}), tmp_path / "lib")
    ingest_table(_table({"aa-copy": same.copy()}), tmp_path / "lib")
    lib = Library.open(tmp_path / "lib")
    rows = lib.track_column("track_id").tolist()
    assert rows.index("zz-copy") < rows.index("aa-copy")
    q = same[2]
    where = "track_id IN ('aa-copy', 'zz-copy', 'm01')"
    for exact in (False, True):
        plain = lib.search(vector=q, k=1, candidates=1, rerank="none", exact=exact)
        filtered = lib.search(vector=q, k=1, candidates=1, rerank="none", where=where, exact=exact)
        assert [h.track_id for h in plain] == [h.track_id for h in filtered] == ["zz-copy"], exact


def test_collapsed_duplicates_keep_the_hits_best_first(tmp_path: Path) -> None:
    """collapse_duplicates keeps the best-ranked member of each group and the hits stay in score order; group
    labels that sort against the ranking ("g9" best, "g0" worst) must not reorder them. Reference: brute force
    over every track, then a walk that keeps the first member of each group."""
    from songseek.engine.storage.writer import LibraryWriter

    ingest_table(vector_table(16, 12, seed=8, max_frames=6), tmp_path / "lib")
    lib = Library.open(tmp_path / "lib")
    q = np.random.default_rng(1).standard_normal(12).astype(np.float32)
    ranked = [t for t, _ in brute(lib, q, "max")]
    # pairs of neighbours in the ranking form groups, labelled in reverse order of their rank
    members = ranked[:12]
    groups = {t: f"g{9 - i // 2:d}" if i < 12 else t for i, t in enumerate(members)}
    with LibraryWriter(tmp_path / "lib") as w:
        w.put_table("duplicates", pa.table({"track_id": pa.array(members, pa.string()),
                                            "dup_group": pa.array([groups[t] for t in members], pa.string())}))
        w.commit()
    lib = Library.open(tmp_path / "lib")
    hits = lib.search(vector=q, k=8, rerank="max", candidates=100, collapse_duplicates=True)
    seen: set[str] = set()
    want = []
    for t in ranked:
        g = groups.get(t, t)
        if g not in seen:
            seen.add(g)
            want.append(t)
    assert [h.track_id for h in hits] == want[:8]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
