"""Duplicate-detection edge cases pinned by a mutation sweep: parameter and level parsing guards, the
candidate cosine and level-1 bounds (inclusive), and which pairs duplicates-of-duplicates follows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.analysis.duplicates import (
    DuplicateParams,
    candidate_pairs,
    duplicates_of_duplicates,
    find_duplicates,
    pair_level,
    parse_level,
)
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, unit


@pytest.mark.parametrize("kwargs", [{"min_level": 0}, {"min_level": 4}, {"neighbours": 0}])
def test_out_of_range_params_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError, match="must be"):
        DuplicateParams(**kwargs).validated()  # type: ignore[arg-type]
    DuplicateParams(min_level=1, neighbours=1).validated()  # the smallest legal values


@pytest.mark.parametrize("text, level", [("Master", 2), (" VERSION ", 3), ("Same-Recording", 1), ("2", 2)])
def test_level_names_are_case_and_space_insensitive(text: str, level: int) -> None:
    assert parse_level(text) == level


def test_candidate_cosine_bound_is_inclusive_and_tiny_inputs_have_no_pairs() -> None:
    e = np.eye(4, dtype=np.float32)
    x = np.stack([e[0], e[0], e[1]])  # rows 0 and 1 identical: inner product exactly 1.0
    assert [(a, b) for a, b, _ in candidate_pairs(x, 2, 1.0)] == [(0, 1)]
    assert candidate_pairs(x[:1], 3, 0.0) == []
    assert candidate_pairs(np.zeros((0, 4), np.float32), 3, 0.0) == []


def test_vectors_only_level_bounds_are_inclusive() -> None:
    p = DuplicateParams(audio=False)
    assert pair_level(p, True, False, 1.0, p.level1_cover, p.level1_cosine, None) == 1
    assert pair_level(p, True, False, 1.0, p.min_cover, p.version_cosine, None) == 2


def test_duplicates_of_duplicates_follow_a_track_with_exactly_max_partners() -> None:
    """0~1 and 1~2 confirmed: track 1 has 2 partners, so 0~2 is asked when max_partners is 2, not when 1."""
    edges = [(1, 0, 1), (1, 1, 2)]
    asked: list[tuple[int, int]] = []

    def level_of(a: int, b: int) -> int:
        asked.append((min(a, b), max(a, b)))
        return 1

    assert duplicates_of_duplicates(edges, level_of, max_partners=2) == [(1, 0, 2)]
    assert asked == [(0, 2)]
    assert duplicates_of_duplicates(edges, level_of, max_partners=1) == []


def test_possible_versions_are_not_followed_as_duplicates_of_duplicates() -> None:
    """Only confirmed pairs (levels 1-2) are followed: two level-3 flags say nothing about the third pair."""
    assert duplicates_of_duplicates([(3, 0, 1), (3, 1, 2)], lambda a, b: 1, max_partners=50) == []
    assert duplicates_of_duplicates([(2, 0, 1), (3, 1, 2)], lambda a, b: 1, max_partners=50) == []


def test_keep_order_breaks_full_ties_by_track_id_then_prefers_sample_rate_length_and_tags() -> None:
    from songseek.engine.analysis.duplicates import keep_order

    same = ("mp3", False, 320.0, 44100, 200.0, 3)
    facts = {5: same, 2: same, 9: same}
    assert keep_order([5, 2, 9], facts, ["c", "b", "a"]) == [9, 2, 5]  # by id: a, b, c
    # one fact better at a time, everything else equal: the better file first whatever the ids say
    for better in (("mp3", False, 320.0, 48000, 200.0, 3), ("mp3", False, 320.0, 44100, 201.0, 3),
                   ("mp3", False, 320.0, 44100, 200.0, 4)):
        assert keep_order([0, 1], {0: same, 1: better}, ["a", "z"]) == [1, 0]
    # bit rates inside one KBPS_STEP are equal (then the id decides); a full step apart they are not
    assert keep_order([0, 1], {0: same, 1: ("mp3", False, 322.0, 44100, 200.0, 3)}, ["a", "z"]) == [0, 1]
    assert keep_order([0, 1], {0: same, 1: ("mp3", False, 340.0, 44100, 200.0, 3)}, ["a", "z"]) == [1, 0]


def test_an_exact_copy_reports_a_pooled_cosine_of_at_most_one(tmp_path: Path) -> None:
    """Seed 10: the two equal pooled float32 vectors have a dot product of 1.0000001; a cosine is <= 1."""
    rng = np.random.default_rng(10)
    base = unit(rng.standard_normal((6, 32)))
    others = [unit(rng.standard_normal((6, 32))) for _ in range(2)]
    lib = Library.open(build_library(tmp_path / "lib", [base, base.copy(), *others]))
    report = find_duplicates(lib, DuplicateParams(audio=False, neighbours=2))
    [ev] = [p for g in report.groups for p in g.pairs if (p.a, p.b) == ("t000", "t001")]
    assert ev.level == 1 and ev.pooled_cosine == pytest.approx(1.0, abs=1e-6) and ev.pooled_cosine <= 1.0


def test_members_count_only_filled_tags(tmp_path: Path) -> None:
    """Empty tag cells are no tags: the copy with the filled-in artist and title is the one to keep."""
    import pyarrow as pa

    from songseek.indexers.ingest import ingest_table

    rng = np.random.default_rng(10)
    base = unit(rng.standard_normal((6, 32)))
    tracks = {"t000": (base, "", ""), "t001": (base.copy(), "Someone", "A Song"),
              "t002": (unit(rng.standard_normal((6, 32))), "", "x")}
    rows = [{"track_id": tid, "start_s": f * 10.0, "end_s": f * 10.0 + 10.0, "embedding": v.tolist(),
             "path": f"/music/{tid}.wav", "artist": artist, "title": title}
            for tid, (vecs, artist, title) in tracks.items() for f, v in enumerate(vecs)]
    ingest_table(pa.Table.from_pylist(rows), tmp_path / "lib", encoder=FakeEncoder().info)
    report = find_duplicates(Library.open(tmp_path / "lib"), DuplicateParams(audio=False, neighbours=2))
    [group] = report.groups
    want = {tid: sum(cell != "" for cell in cells) for tid, (_, *cells) in tracks.items()}
    assert {m.track_id: m.tags for m in group.members} == {"t000": want["t000"], "t001": want["t001"]}
    assert group.members[0].track_id == "t001" and group.members[0].keep
    # the files are gone: the format comes from the name, and a .wav is lossless
    assert all(m.codec == "wav" and m.lossless for m in group.members)


def test_a_track_with_no_marks_left_reads_as_no_exclusions() -> None:
    import pyarrow as pa

    from songseek.engine.analysis.duplicates import excluded_pairs

    table = pa.table({"track_id": ["b", "a"],
                      "not_duplicate_of": pa.array([None, ["c", "b"]], pa.list_(pa.string()))})
    assert excluded_pairs(table) == {("a", "c"), ("a", "b")}


def test_not_duplicates_table_lists_each_pair_in_both_rows() -> None:
    from songseek.engine.analysis.duplicates import not_duplicates_table

    table = not_duplicates_table({("a", "b"), ("a", "c")})
    assert table.to_pylist() == [{"track_id": "a", "not_duplicate_of": ["b", "c"]},
                                 {"track_id": "b", "not_duplicate_of": ["a"]},
                                 {"track_id": "c", "not_duplicate_of": ["a"]}]


def test_stored_summary_counts_groups_per_level() -> None:
    from songseek.engine.analysis.duplicates import DuplicateGroup, duplicates_table, stored_summary

    levels = [1, 2, 2, 3, 2]
    groups = [DuplicateGroup(f"g{i}", lv, (), ()) for i, lv in enumerate(levels)]
    summary = stored_summary(duplicates_table(groups, DuplicateParams()))
    assert summary["groups"] == 5 and summary["found"]
    assert summary["by_level"] == {str(lv): sum(x == lv for x in levels) for lv in (1, 2, 3)}


def test_a_track_cannot_be_marked_as_not_a_duplicate_of_itself(tmp_path: Path) -> None:
    from songseek.engine.analysis.duplicates import NOT_DUPLICATES_TABLE, update_library

    rng = np.random.default_rng(0)
    root = build_library(tmp_path / "lib", [unit(rng.standard_normal((3, 32))) for _ in range(3)])
    with pytest.raises(UsageError, match="cannot be paired with itself"):
        update_library(root, DuplicateParams(audio=False), [("t001", "t001")])
    assert NOT_DUPLICATES_TABLE not in Library.open(root).tables()  # nothing written


def test_member_bit_rate_is_size_times_8_over_1000_per_second() -> None:
    """kbit/s are SI (1000 bit/s): 1 MB over 25 s is 320 kbit/s; no length gives 0, no size 0."""
    from types import SimpleNamespace

    import pyarrow as pa

    from songseek.engine.analysis.duplicates import _member_facts

    sizes, durs = [1_000_000, 7_340_032, None, 500], [25.0, 183.5, 60.0, None]
    tracks = pa.table({"path": [f"/nonexistent/t{i}.mp3" for i in range(4)],
                       "duration_s": pa.array(durs, pa.float64()), "size": pa.array(sizes, pa.int64())})
    lib = SimpleNamespace(tracks=tracks)
    for row, (size, dur) in enumerate(zip(sizes, durs, strict=True)):
        want = (size or 0) * 8 / 1000 / dur if dur else 0.0
        codec, lossless, kbps, _, _, _ = _member_facts(lib, row)  # type: ignore[arg-type]
        assert kbps == pytest.approx(want) and codec == "mp3" and not lossless
    assert _member_facts(lib, 0)[2] == pytest.approx(320.0)  # type: ignore[arg-type]


def _two_groups_library(root: Path) -> Path:
    """t000 a track, t001 its exact copy, t002 another master of it (window cosine about 0.95: level 2 with
    the vectors alone); t003 and t004 another song and its exact copy (level 1); t005 an unrelated track."""
    rng = np.random.default_rng(21)
    base = unit(rng.standard_normal((12, 32)))
    master = unit(base + 0.33 * unit(rng.standard_normal((12, 32))))
    song = unit(rng.standard_normal((10, 32)))
    return build_library(root, [base, base.copy(), master, song, song.copy(), unit(rng.standard_normal((8, 32)))])


def test_members_give_their_own_level_to_the_kept_file_and_groups_sort_by_level_then_id(tmp_path: Path) -> None:
    lib = Library.open(_two_groups_library(tmp_path / "lib"))
    report = find_duplicates(lib, DuplicateParams(audio=False, neighbours=5))
    # groups: level first, then the kept track's id (a plain sort of (level, id))
    assert [(g.level, g.group_id) for g in report.groups] == sorted((g.level, g.group_id) for g in report.groups)
    assert [(g.level, g.group_id) for g in report.groups] == [(1, "t003"), (2, "t000")]
    for g in report.groups:
        keep = g.members[0].track_id
        by_pair = {frozenset((p.a, p.b)): p.level for p in g.pairs}
        for m in g.members:
            assert m.level == (0 if m.keep else by_pair[frozenset((keep, m.track_id))])
    [g2] = [g for g in report.groups if g.level == 2]
    assert {m.track_id: m.level for m in g2.members} == {"t000": 0, "t001": 1, "t002": 2}


def test_the_span_ends_at_the_track_s_own_end_not_its_last_window_s(tmp_path: Path) -> None:
    """t000: 6 windows of 10 s but 55 s long (the last window padded); t001: the same 6 then 2 more, 80 s.
    At offset 0 the span on t000 ends at 55 s (its length), not at 60 s (its last window's end)."""
    import pyarrow as pa

    from songseek.indexers.ingest import ingest_table

    rng = np.random.default_rng(3)
    a = unit(rng.standard_normal((6, 32)))
    b = np.concatenate([a, unit(rng.standard_normal((2, 32)))])
    rows = [{"track_id": tid, "start_s": f * 10.0, "end_s": f * 10.0 + 10.0, "embedding": v.tolist(),
             "path": f"/music/{tid}.wav", "duration_s": dur}
            for tid, vecs, dur in (("t000", a, 55.0), ("t001", b, 80.0)) for f, v in enumerate(vecs)]
    ingest_table(pa.Table.from_pylist(rows), tmp_path / "lib", encoder=FakeEncoder().info)
    report = find_duplicates(Library.open(tmp_path / "lib"), DuplicateParams(audio=False, neighbours=2))
    [ev] = [p for g in report.groups for p in g.pairs]
    assert ev.offset_s == 0.0 and ev.level == 1
    assert ev.span_a == (0.0, 55.0) and ev.span_b == (0.0, 55.0)


def test_a_diagonal_covering_exactly_min_cover_is_aligned(tmp_path: Path) -> None:
    """t001 shares 3 of t000's 6 windows (the rest unrelated): cover exactly 0.5 = min_cover is aligned, so
    the pair is a master/edit (level 2) from the vectors, not only a possible version (level 3)."""
    rng = np.random.default_rng(5)
    a = unit(rng.standard_normal((6, 32)))
    b = np.concatenate([a[:3], unit(rng.standard_normal((3, 32)))])
    lib = Library.open(build_library(tmp_path / "lib", [a, b]))
    p = DuplicateParams(audio=False, neighbours=2, candidate_cosine=0.0)
    report = find_duplicates(lib, p)
    [ev] = [e for g in report.groups for e in g.pairs]
    assert ev.diagonal_cover == p.min_cover and ev.level == 2
    # a hair stricter and the same pair is not aligned: only a possible version (3) remains, or nothing
    strict = find_duplicates(lib, DuplicateParams(audio=False, neighbours=2, candidate_cosine=0.0, min_cover=0.51))
    assert all(e.level != 2 for g in strict.groups for e in g.pairs)


def test_a_version_chain_covering_exactly_min_cover_is_a_possible_version(tmp_path: Path) -> None:
    """t001 holds t000's first 3 windows in order but each followed by an unrelated one: no diagonal, a
    monotone chain of 3 of 6 windows (exactly min_cover), so vectors alone call it a possible version (3)."""
    rng = np.random.default_rng(6)
    a = unit(rng.standard_normal((6, 32)))
    noise = unit(rng.standard_normal((3, 32)))
    b = np.stack([a[0], noise[0], a[1], noise[1], a[2], noise[2]])
    lib = Library.open(build_library(tmp_path / "lib", [a, b]))
    report = find_duplicates(lib, DuplicateParams(audio=False, neighbours=2, candidate_cosine=0.0))
    [ev] = [e for g in report.groups for e in g.pairs]
    assert ev.version_cover == 0.5 and ev.diagonal_cover < 0.5 and ev.level == 3
