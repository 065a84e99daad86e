"""Query by example with an excerpt of several windows (engine/query/align.py): scores and segments against a
plain loop over offsets, scale-free, and the search path that runs it (auto on a 2+ window excerpt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.align import POOLING_RANK_WEIGHT, align_rerank, align_scores
from songseek.engine.query.fusion import rerank_scores
from songseek.engine.query.search import Library, SearchOptions
from songseek.indexers.pipeline import IndexConfig, index_paths
from tests.audio_helpers import SR, tone_track, write_wav

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")


def naive_align(s: np.ndarray, length: int) -> tuple[float, int, int]:
    """The best mean over the excerpt's diagonal, offset by offset (the shorter one slides in the longer)."""
    c = s.shape[0]
    if length >= c:
        means = [sum(s[j, o + j] for j in range(c)) / c for o in range(length - c + 1)]
        o = int(np.argmax(means))  # the first of equal means
        return means[o], o, o + c - 1
    means = [sum(s[o + i, i] for i in range(length)) / length for o in range(c - length + 1)]
    return max(means), 0, length - 1


@pytest.mark.parametrize("seed", range(6))
def test_scores_and_segments_match_a_loop_over_offsets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 6))
    lengths = rng.integers(1, 12, size=9)
    sims = rng.uniform(-1, 1, size=(9, c, int(lengths.max())))
    for b, n in enumerate(lengths):
        sims[b, :, n:] = 50.0  # padding past a track's end must never be read
    score, first, last = align_scores(sims, lengths)
    for b, n in enumerate(lengths):
        want = naive_align(sims[b, :, :n], int(n))
        assert score[b] == pytest.approx(want[0], abs=1e-12)
        assert (first[b], last[b]) == want[1:]


def test_ties_go_to_the_earliest_offset_and_one_window_is_max_pooling() -> None:
    sims = np.array([[[0.2, 0.5, 0.2, 0.5, 0.1]]])  # one excerpt window: the best window, the first of two
    score, first, last = align_scores(sims, np.array([5]))
    assert (score[0], first[0], last[0]) == (0.5, 1, 1)
    ref = rerank_scores("align", sims[:, 0], np.array([5]))
    assert (ref.score[0], ref.seg_first[0]) == (np.float32(0.5), 1)
    repeat = np.tile(np.eye(2), (1, 3))[None]  # the excerpt's two windows line up at offsets 0, 2 and 4
    score, first, last = align_scores(repeat, np.array([6]))
    assert (score[0], first[0], last[0]) == (1.0, 0, 1)


def test_any_increasing_affine_map_keeps_the_order_and_the_segments() -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(2, 15, size=30)
    sims = rng.uniform(-0.2, 0.6, size=(30, 4, 15))
    score, first, last = align_scores(sims, lengths)
    score2, first2, last2 = align_scores(0.01 * sims + 0.9, lengths)
    assert np.array_equal(np.argsort(-score, kind="stable"), np.argsort(-score2, kind="stable"))
    assert np.array_equal(first, first2) and np.array_equal(last, last2)


def naive_hedged(align: list[float], pooled: list[list[float]], w: float = 2.0) -> list[tuple[int, float]]:
    """(row, score) best first: rows by min(alignment rank, w x rank under each list of ``pooled``), ties to
    the better alignment rank; the alignment scores, best first, handed out in that order. w = 2 is the
    documented weight (docs/fusion.md, "Session 13"), written out so that a changed constant fails here."""
    def ranks(v: list[float]) -> list[int]:
        order = sorted(range(len(v)), key=lambda i: (-v[i], i))
        return [order.index(i) + 1 for i in range(len(v))]

    ra, others = ranks(align), [ranks(p) for p in pooled]
    order = sorted(range(len(align)), key=lambda i: (min([ra[i]] + [w * r[i] for r in others]), ra[i], i))
    return list(zip(order, sorted(align, reverse=True)))


def poolings(s: np.ndarray) -> tuple[float, float]:
    """Mean and max pooling of the excerpt's mean vector, up to a constant: of the column sums of s."""
    column = [sum(s[j, t] for j in range(s.shape[0])) for t in range(s.shape[1])]
    return sum(column) / len(column), max(column)


@pytest.mark.parametrize("seed", range(4))
def test_the_align_mode_hedges_the_alignment_with_both_poolings(seed: int) -> None:
    rng = np.random.default_rng(10 + seed)
    lengths = rng.integers(1, 10, size=12)
    sims = rng.uniform(-1, 1, size=(12, 3, int(lengths.max())))
    sims[::3] -= 1.5  # tracks whose every similarity is negative: padding must not look better
    for b, n in enumerate(lengths):
        sims[b, :, n:] = 0.0
    score, first, last = align_rerank(sims, lengths)
    assert POOLING_RANK_WEIGHT == 2.0
    al = [naive_align(sims[b, :, :n], int(n)) for b, n in enumerate(lengths)]
    pools = [poolings(sims[b, :, :n]) for b, n in enumerate(lengths)]
    got = sorted(range(12), key=lambda b: -score[b])
    want = naive_hedged([a[0] for a in al], [[p[0] for p in pools], [p[1] for p in pools]])
    assert got == [row for row, _ in want]
    np.testing.assert_allclose(score[got], [sc for _, sc in want], atol=1e-12)
    assert [(f, t) for f, t in zip(first, last)] == [a[1:] for a in al]  # segments: the alignment's
    assert got[0] == int(np.argmax([a[0] for a in al]))  # the first hit is the alignment's best


@pytest.mark.parametrize(("shape", "lengths"), [((2, 3), [2, 2]), ((2, 0, 4), [2, 2]), ((2, 3, 4), [0, 2]),
                                                ((2, 3, 4), [2, 5]), ((2, 3, 4), [2])])
def test_bad_shapes_are_refused(shape: tuple[int, ...], lengths: list[int]) -> None:
    with pytest.raises(UsageError, match="align_scores"):
        align_scores(np.zeros(shape), np.array(lengths))


# -- the search path ---------------------------------------------------------------------------------------
FREQS = [110.0, 165.0, 220.0, 330.0, 440.0, 660.0, 880.0, 1320.0]


@pytest.fixture(scope="module")
def tone_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Library, dict[str, np.ndarray]]:
    """Seven tracks of 10 s tones drawn from one small set, so tracks share windows but not their order."""
    root = tmp_path_factory.mktemp("align")
    rng = np.random.default_rng(11)
    audio = {}
    for i in range(7):
        freqs = [FREQS[j] for j in rng.integers(0, len(FREQS), size=int(rng.integers(3, 8)))]
        audio[f"t{i}.wav"] = tone_track(freqs, 10, seed=i).astype(np.float32)
        write_wav(root / "music" / f"t{i}.wav", audio[f"t{i}.wav"])
    index_paths([root / "music"], root / "lib", FakeEncoder(), IndexConfig(window_s=10, hop_s=10))
    return Library.open(root / "lib", encoder=FakeEncoder()), audio


def naive_ranking(lib: Library, q: np.ndarray) -> list[tuple[str, float, int]]:
    """(file name, score, first window) of every track: naive_align over its stored windows, hedged with the
    poolings of the excerpt's mean vector (naive_hedged)."""
    rows = sorted(lib.tracks.to_pylist(), key=lambda r: r["track_id"])
    aligned, pools = [], []
    for row in rows:
        s = (q @ lib.store.vectors(row["frame_start"], row["frame_count"]).T).astype(np.float64)
        aligned.append(naive_align(s, row["frame_count"]))
        pools.append(poolings(s))
    return [(Path(rows[i]["path"]).name, score, aligned[i][1])
            for i, score in naive_hedged([a[0] for a in aligned], [[p[0] for p in pools], [p[1] for p in pools]])]


@pytest.mark.parametrize("start_s", [20.0, 23.0])
def test_an_excerpt_of_several_windows_is_aligned_and_found_where_it_is(
        tone_library: tuple[Library, dict[str, np.ndarray]], start_s: float) -> None:
    lib, audio = tone_library
    name = max(audio, key=lambda n: len(audio[n]))
    clip = audio[name][int(start_s * SR):int((start_s + 30) * SR)]
    q = lib.embed_excerpt(clip)
    assert q.shape == (3, lib.manifest.dim)
    hits = lib.search(audio=clip, k=lib.n_tracks, exact=True)
    want = naive_ranking(lib, q)
    assert [h.rerank for h in hits] == ["align"] * len(hits)
    assert [Path(h.path).name for h in hits] == [w[0] for w in want]
    np.testing.assert_allclose([h.score for h in hits], [w[1] for w in want], atol=1e-5)
    assert [h.segment.start_s for h in hits] == [10.0 * w[2] for w in want]
    assert Path(hits[0].path).name == name and hits[0].segment.start_s == 20.0  # 23 s: most of it is 20-30
    assert hits[0].segment.end_s == 50.0


def test_a_stated_mode_or_a_one_window_excerpt_keeps_the_mean_vector(
        tone_library: tuple[Library, dict[str, np.ndarray]]) -> None:
    lib, audio = tone_library
    clip = audio["t0.wav"][: 30 * SR]
    assert {h.rerank for h in lib.search(audio=clip, k=3, rerank="hedge")} == {"hedge"}
    assert {h.rerank for h in lib.search(audio=clip[: 10 * SR], k=3)} == {"hedge"}  # one window: auto = hedge
    assert not lib.excerpt_aligns(20.0, SearchOptions(rerank="max"))
    # a tail under a tenth of a window is dropped (engine/audio/windowing.py): 10.5 s is one window, 11 s two
    assert [lib.excerpt_aligns(s, SearchOptions()) for s in (10.0, 10.5, 11.0)] == [False, False, True]
    assert lib.excerpt_aligns(10.0, SearchOptions(rerank="align"))
    one = lib.search(audio=clip[: 10 * SR], k=lib.n_tracks, rerank="align")  # asked for: max pooling
    by_max = lib.search(audio=clip[: 10 * SR], k=lib.n_tracks, rerank="max")
    assert [(h.track_id, h.segment.start_s) for h in one] == [(h.track_id, h.segment.start_s) for h in by_max]



def test_an_excerpt_is_cut_on_the_librarys_hop(tone_library: tuple[Library, dict[str, np.ndarray]],
                                                 tmp_path: Path) -> None:
    """10 s windows every 5 s: a 30 s excerpt is 5 windows, slid 5 s at a time along each track."""
    _, audio = tone_library
    music = tmp_path / "music"
    for name, x in audio.items():
        write_wav(music / name, x)
    index_paths([music], tmp_path / "lib", FakeEncoder(), IndexConfig(window_s=10, hop_s=5))
    lib = Library.open(tmp_path / "lib", encoder=FakeEncoder())
    name = max(audio, key=lambda n: len(audio[n]))
    clip = audio[name][20 * SR:50 * SR]
    q = lib.embed_excerpt(clip)
    assert q.shape == (5, lib.manifest.dim)
    hits = lib.search(audio=clip, k=lib.n_tracks, exact=True)
    want = naive_ranking(lib, q)
    assert [Path(h.path).name for h in hits] == [w[0] for w in want]
    assert [h.segment.start_s for h in hits] == [5.0 * w[2] for w in want]
    assert (Path(hits[0].path).name, hits[0].segment.start_s, hits[0].segment.end_s) == (name, 20.0, 50.0)


def test_padding_never_counts_as_a_tracks_best_window() -> None:
    """Every track but the first scores below zero; the short one (padded) lowest of all. Padding read as 0
    would make the short track the best under max pooling and lift it up the hedged order."""
    sims = np.full((6, 2, 4), -0.3)
    sims[0] = 0.5
    sims[0, [0, 1], [0, 1]] = 1.0
    for b in range(1, 5):
        sims[b] -= 0.05 * b
    sims[5, :, :2], sims[5, :, 2:] = -0.9, 0.0
    lengths = np.array([4, 4, 4, 4, 4, 2])
    score, _, _ = align_rerank(sims, lengths)
    assert list(np.argsort(-score, kind="stable")) == [0, 1, 2, 3, 4, 5]
