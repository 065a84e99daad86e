"""Duplicate groups from window vectors (no audio files: the vectors-only levels), complete linkage,
user marks, the stored table under --where, and collapsed searches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.analysis.duplicates import (
    DuplicateParams,
    candidate_pairs,
    find_duplicates,
    group_pairs,
    keep_order,
    pair_level,
    update_library,
)
from songseek.engine.analysis.fingerprint import FingerprintMatch
from songseek.engine.errors import UsageError
from songseek.engine.query.filters import filter_track_ids
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, duplicate_tracks, unit


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_library(tmp_path / "lib", duplicate_tracks())


def test_copy_and_edit_are_grouped_and_unrelated_tracks_are_not(root: Path) -> None:
    lib = Library.open(root)
    report = find_duplicates(lib, DuplicateParams(audio=False, neighbours=2))
    assert [sorted(m.track_id for m in g.members) for g in report.groups] == [["t000", "t001", "t002"]]
    g = report.groups[0]
    assert g.level == 2  # the edit is level 2 with both others; the copy is level 1 with the base
    levels = {(p.a, p.b): p.level for p in g.pairs}
    assert levels[("t000", "t001")] == 1 and levels[("t000", "t002")] == 2
    ev = next(p for p in g.pairs if (p.a, p.b) == ("t000", "t001"))
    assert ev.offset_s == -10.0 and ev.diagonal_cover == 1.0  # t000's window 1 is t001's window 0
    assert report.candidates <= 8 * 2  # two FAISS neighbours per track, not all 28 pairs
    assert g.members[0].keep and sum(m.keep for m in g.members) == 1


def test_candidate_pairs_are_the_exact_neighbours_above_the_cosine() -> None:
    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((40, 8)))
    pairs = candidate_pairs(x, 3, 0.3)
    got = {(a, b) for a, b, _ in pairs}
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    want = set()
    for i in range(40):
        order = [j for j in np.argsort(-sims[i]) if j != i][:3]
        want |= {(min(i, j), max(i, j)) for j in order if sims[i, j] >= 0.3}
    assert got == want and len(pairs) == len(want)  # each pair once, a < b
    assert [(a, b) for a, b, _ in pairs] == sorted(want)
    for a, b, cos in pairs:  # the reported cosine is the pair's own, not a rank or a rounded value
        assert abs(cos - sims[a, b]) < 1e-5


def test_complete_linkage_does_not_chain_two_songs_through_a_third() -> None:
    # 0~1 and 1~2 are duplicates but 0 and 2 are not: 1 joins one of them, never both.
    levels = {(0, 1): 1, (1, 2): 1, (0, 2): 0, (2, 3): 2}
    groups = group_pairs(4, [(1, 0, 1), (1, 1, 2), (2, 2, 3)], lambda a, b: levels.get((min(a, b), max(a, b)), 0))
    assert groups == [(1, [0, 1]), (2, [2, 3])]
    # a refused edge is retried at the worst level across: {0, 1} and 2 join at level 3
    levels = {(0, 1): 1, (1, 2): 1, (0, 2): 3}
    assert group_pairs(3, [(1, 0, 1), (1, 1, 2)], lambda a, b: levels[(min(a, b), max(a, b))]) == [(3, [0, 1, 2])]


@pytest.mark.parametrize("seed", range(6))
def test_complete_linkage_groups_hold_their_invariants_on_random_levels(seed: int) -> None:
    """Random pair levels (0: not a duplicate) and a random subset of them as found edges. Checked from the
    definition, pair by pair: inside a group every pair is a duplicate and the group's level is its worst
    pair; groups are disjoint and only joined through found edges; an edge left across two groups has a
    non-duplicate pair across them (else complete linkage would have merged them)."""
    rng = np.random.default_rng(40 + seed)
    n = int(rng.integers(6, 30))
    truth = {(a, b): int(rng.choice(4, p=[0.3, 0.3, 0.25, 0.15])) for a in range(n) for b in range(a + 1, n)}

    def level_of(a: int, b: int) -> int:
        return truth[(min(a, b), max(a, b))]

    edges = [(lv, a, b) for (a, b), lv in truth.items() if lv and rng.random() < 0.5]
    groups = group_pairs(n, edges, level_of)
    where: dict[int, int] = {}  # row -> the first row of its group
    for level, rows in groups:
        assert len(rows) >= 2 and rows == sorted(rows)
        pair_levels = [level_of(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
        assert min(pair_levels) >= 1 and level == max(pair_levels)
        for r in rows:
            assert r not in where
            where[r] = rows[0]
        joined = {rows[0]}  # connected through found edges inside the group
        while True:
            more = {y for _, a, b in edges for x, y in ((a, b), (b, a)) if x in joined and y in rows}
            if more <= joined:
                break
            joined |= more
        assert joined == set(rows)
    members = {g[1][0]: g[1] for g in groups}
    for _, a, b in edges:
        ga, gb = members.get(where.get(a, -1), [a]), members.get(where.get(b, -1), [b])
        if ga != gb:
            assert any(level_of(x, y) == 0 for x in ga for y in gb), (a, b)
    assert groups == sorted(groups, key=lambda g: g[1]) and len(groups) >= 1


def test_stored_groups_filter_searches_and_marks_survive_reruns(root: Path) -> None:
    report = update_library(root, DuplicateParams(audio=False))
    keep = report.groups[0].members[0].track_id
    lib = Library.open(root)
    visible = set(filter_track_ids(lib.tables(), "dup_keep IS NOT FALSE"))
    assert visible == {f"t{i:03d}" for i in range(8)} - ({"t000", "t001", "t002"} - {keep})
    q = lib.store.vectors(0, 1)[0]  # t000's first window: the whole group ranks first
    plain = [h.track_id for h in lib.search(vector=q, k=5, rerank="max")]
    collapsed = [h.track_id for h in lib.search(vector=q, k=5, rerank="max", collapse_duplicates=True)]
    assert set(plain[:3]) == {"t000", "t001", "t002"}
    assert collapsed[0] == plain[0] and not {"t000", "t001", "t002"} & set(collapsed[1:])
    assert len(collapsed) == 5
    # a pool of exactly k candidates held the 3 copies, so only 3 groups came back; it grows past them
    tight = [h.track_id for h in lib.search(vector=q, k=5, candidates=5, rerank="max", collapse_duplicates=True)]
    assert tight == collapsed
    # the user says t000 and t002 are not duplicates: t002 leaves the group, now and on every rerun
    update_library(root, DuplicateParams(audio=False), [("t002", "t000")])
    for _ in range(2):
        groups = update_library(root, DuplicateParams(audio=False)).groups
        assert [sorted(m.track_id for m in g.members) for g in groups] == [["t000", "t001"]]
    with pytest.raises(UsageError, match="no track 'nope'"):
        update_library(root, DuplicateParams(audio=False), [("t000", "nope")])


def test_duplicates_of_duplicates_follow_confirmed_pairs_to_closure() -> None:
    from songseek.engine.analysis.duplicates import duplicates_of_duplicates

    rng = np.random.default_rng(5)
    n = 12
    truth = {(a, b): int(rng.choice(4, p=[0.4, 0.25, 0.25, 0.1])) for a in range(n) for b in range(a + 1, n)}

    def level_of(a: int, b: int) -> int:
        return truth[(min(a, b), max(a, b))]

    # what FAISS found: every third confirmed pair; the rest are left for duplicates of duplicates
    seeds = [k for k, v in truth.items() if 1 <= v <= 2][::3]
    edges = [(truth[k], *k) for k in seeds]
    found = {(a, b) for _, a, b in duplicates_of_duplicates(edges, level_of, max_partners=50)}
    # naive reference: grow the set of confirmed (level 1-2) pairs by A~B, B~C => ask A~C, until nothing new
    confirmed = set(seeds)
    while True:
        new: set[tuple[int, int]] = set()
        for a, b in confirmed:
            for c, d in confirmed:
                if len({a, b} & {c, d}) == 1:
                    x, y = sorted({a, b} ^ {c, d})
                    if (x, y) not in confirmed and 1 <= truth[(x, y)] <= 2:
                        new.add((x, y))
        if not new:
            break
        confirmed |= new
    assert found == confirmed - set(seeds) and len(found) >= 3 and len(seeds) >= 4


def test_a_possible_version_needs_comparable_lengths() -> None:
    """Vectors align, audio does not match: a version only when neither track is under half the other
    (found by hand: a 15 s speech clip aligned with half a minute of a 133 s song)."""
    p = DuplicateParams()
    other_audio = FingerprintMatch(coverage=0.1, one_lag=0.2, two_lags=0.3, lag_s=0.0, agreement=0.5,
                                   band_db=5.0, dynamics_db=4.0, matched_s=1.0)
    assert pair_level(p, True, True, 0.9, 1.0, 0.95, other_audio) == 3
    assert pair_level(p, True, True, 0.5, 1.0, 0.95, other_audio) == 3
    assert pair_level(p, True, True, 0.13, 1.0, 0.95, other_audio) == 0
    # same recording, trimmed to a fraction of the other: the length rule is for versions only
    same = FingerprintMatch(coverage=1.0, one_lag=1.0, two_lags=1.0, lag_s=0.0, agreement=0.99, band_db=0.0,
                            dynamics_db=0.0, matched_s=15.0, lag_cover=1.0, timbre_db=0.0)
    assert pair_level(p, True, True, 0.13, 1.0, 0.95, same) == 1


def test_the_kept_file_is_the_whole_one_not_a_trim_with_a_hair_more_bit_rate() -> None:
    # found by review: trim1.wav 162.0 s at 256.00217 kbit/s was kept over the 167.4 s original at 256.00210
    facts = {0: ("pcm_s16le", True, 256.00210, 16000, 167.4, 0), 1: ("pcm_s16le", True, 256.00217, 16000, 162.0, 0),
             2: ("mp3", False, 320.0, 44100, 167.4, 5), 3: ("flac", True, 900.0, 16000, 150.0, 0)}
    assert keep_order([1, 0, 2], facts, ["b", "a", "c"]) == [0, 1, 2]  # lossless first, then the longer
    assert keep_order([0, 3], facts, ["a", "d"]) == [3, 0]  # a real difference in bit rate still decides


@pytest.mark.parametrize(("short_s", "short_first"), [(5.6, False), (49.1, False), (49.3, True), (61.5, True)])
def test_a_part_of_a_file_is_never_kept_over_the_whole_one(short_s: float, short_first: bool) -> None:
    # found on real recordings: a 5.6 s cut of Vibe Ace (61.5 s Ogg) had the higher apparent bit rate (its
    # headers spread over few seconds) and was marked keep; a lossless part loses to a lossy whole too
    facts = {0: ("vorbis", False, 112.0, 44100, 61.5, 5), 1: ("flac", True, 900.0, 44100, short_s, 5)}
    want = [1, 0] if short_first else [0, 1]  # at >= 80 % of the longest (49.2 s) a file counts as whole
    assert keep_order([0, 1], facts, ["a", "b"]) == want
    assert keep_order([1, 0], facts, ["b", "a"]) == want


def test_without_audio_level_2_needs_a_diagonal_at_the_version_cosine() -> None:
    """Vectors only: the permissive window gate (0.75) that hands pairs to the audio is not evidence of one
    recording; level 2 needs the diagonal over min_cover at version_cosine (found by review: two unrelated
    synth songs, diagonal mean 0.88, were level 2 with --no-audio)."""
    p = DuplicateParams(audio=False)
    assert pair_level(p, True, False, 0.9, 0.71, 0.88, None) == 0
    assert pair_level(p, True, True, 0.9, 0.71, 0.88, None) == 3
    assert pair_level(p, True, False, 0.9, 0.71, 0.93, None) == 2
    assert pair_level(p, True, False, 0.9, 0.3, 0.95, None) == 0  # aligned by a chain, not in place
    assert pair_level(p, True, False, 0.9, 0.9, 0.98, None) == 1


def test_a_changed_loudness_envelope_is_a_master_only_when_it_follows_the_level() -> None:
    """Found at one lag with the same bands, only the loudness envelope differs: a compressed master when
    the difference follows the loudness (level_corr), another performance (level 3 at most) when it does
    not (seed 9: two sections of one score, other note velocities, level_corr -0.24, were merged at 2).
    An edit (found at two lags) or an EQ change is level 2 whatever its envelope does."""
    p = DuplicateParams()

    def match(dynamics_db: float, level_corr: float) -> FingerprintMatch:
        return FingerprintMatch(coverage=1.0, one_lag=1.0, two_lags=1.0, lag_s=0.0, agreement=0.8, band_db=0.04,
                                dynamics_db=dynamics_db, matched_s=28.0, lag_cover=0.95, timbre_db=0.08,
                                level_corr=level_corr)

    assert pair_level(p, True, False, 1.0, 1.0, 0.95, match(3.5, 0.95)) == 2     # compressed
    assert pair_level(p, True, False, 1.0, 1.0, 0.95, match(3.5, -0.9)) == 2     # either side compressed
    assert pair_level(p, True, False, 1.0, 1.0, 0.95, match(1.04, -0.24)) == 0   # other velocities
    assert pair_level(p, True, True, 1.0, 1.0, 0.95, match(1.04, -0.24)) == 3    # ... a possible version
    assert pair_level(p, True, False, 1.0, 1.0, 0.95, match(0.5, 0.0)) == 1      # envelope kept: untouched
    # under dynamics_db, a change of master_db or more that follows the loudness is a mild compressor
    # (seed 13: 0.87-0.90 dB at |level_corr| 0.99); copies that follow it stay far below (0.16 dB)
    assert pair_level(p, True, False, 1.0, 1.0, 0.95, match(0.88, -0.99)) == 2
    assert pair_level(p, True, False, 1.0, 1.0, 0.95, match(0.16, 0.91)) == 1
    assert pair_level(p, True, False, 1.0, 1.0, 0.95, match(0.54, 0.54)) == 1    # silence-padded MP3 of real0
    assert pair_level(dataclasses.replace(p, master_db=1.0), True, False, 1.0, 1.0, 0.95, match(0.88, -0.99)) == 1
    edit = dataclasses.replace(match(1.9, -0.54), one_lag=0.5, lag_cover=0.6)    # a cut straddling blocks
    eq = dataclasses.replace(match(1.3, 0.1), band_db=3.7)
    assert pair_level(p, True, False, 1.0, 1.0, 0.95, edit) == 2 == pair_level(p, True, False, 1.0, 1.0, 0.95, eq)


def test_spans_stay_inside_both_tracks_when_the_audio_lag_refines_the_offset(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint's lag (finer than a window hop) replaces the windows' offset; the spans follow it and
    stay inside each track (a copy trimmed by 12.5 s: span_b began at -2.5 s when only the offset moved)."""
    import types

    from songseek.engine.analysis import duplicates as dup

    lib = Library.open(root)
    seconds = {str(p): float(d) for p, d in zip(lib.tracks.column("path").to_pylist(),
                                                 lib.tracks.column("duration_s").to_pylist())}

    def fake_fingerprint(ctx: object, row: int) -> object:
        return types.SimpleNamespace(seconds=seconds[str(ctx.paths[row])])  # type: ignore[attr-defined]

    match = FingerprintMatch(coverage=1.0, one_lag=1.0, two_lags=1.0, lag_s=12.5, agreement=0.9, band_db=0.0,
                             dynamics_db=0.0, matched_s=150.0, lag_cover=1.0)
    monkeypatch.setattr(dup, "_fingerprint", fake_fingerprint)
    monkeypatch.setattr(dup, "compare", lambda fa, fb: match)
    report = find_duplicates(lib, DuplicateParams(audio=True, neighbours=2))
    ev = next(p for g in report.groups for p in g.pairs if (p.a, p.b) == ("t000", "t001"))
    assert ev.offset_s == -12.5  # t001 is t000 from 12.5 s on
    assert ev.span_a == (12.5, 160.0) and ev.span_b == (0.0, 147.5)
