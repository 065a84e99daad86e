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
        DuplicateParams(**kwargs).validated()
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
