"""Outlier scores against brute-force numpy kNN; planted outliers; reasons against a naive Δcos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.analysis.outliers import explain, find_outliers, knn_scores, rank_outliers
from songseek.engine.analysis.pooling import pooled_track_vectors
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import IncompatibleLibraryError, UsageError
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, noisy_copies, unit

ENC = FakeEncoder()


def brute_knn(q: np.ndarray, ref: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - ref[None, :, :]) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("k", [1, 4])
def test_knn_scores_match_brute_force(exclude_self: bool, k: int) -> None:
    rng = np.random.default_rng(k)
    ref = unit(rng.standard_normal((60, 16)))
    q = ref if exclude_self else unit(rng.standard_normal((25, 16)))
    score, rows, dist = knn_scores(q, ref, k, exclude_self)
    np.testing.assert_allclose(score, brute_knn(q, ref, k, exclude_self), atol=1e-5)
    np.testing.assert_allclose(dist, np.linalg.norm(q[:, None] - ref[rows], axis=-1), atol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= -1e-6)  # nearest first
    if exclude_self:
        assert not np.any(rows == np.arange(len(q))[:, None])


def test_a_duplicate_is_a_neighbour_at_distance_zero() -> None:
    rng = np.random.default_rng(0)
    ref = unit(rng.standard_normal((10, 8)))
    ref[3] = ref[7]
    score, rows, dist = knn_scores(ref, ref, 1, exclude_self=True)
    assert rows[3, 0] == 7 and rows[7, 0] == 3 and dist[3, 0] == pytest.approx(0, abs=1e-6)


def test_k_larger_than_the_reference_is_an_error() -> None:
    ref = unit(np.eye(4, 8))
    with pytest.raises(UsageError, match="needs at least 5"):
        knn_scores(ref, ref, 4, exclude_self=True)


def test_explain_matches_naive_delta_cosine() -> None:
    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal(12))[0]
    nb = unit(rng.standard_normal((4, 12)))
    t = unit(rng.standard_normal((9, 12)))
    names = [f"d{i}" for i in range(9)]
    reasons = explain(x, nb, t, names, top=4)
    diffs = [float(t[i] @ x - np.mean([t[i] @ n for n in nb])) for i in range(9)]
    want = sorted(range(9), key=lambda i: -abs(diffs[i]))[:4]
    assert [r.descriptor for r in reasons] == [names[i] for i in want]
    for r, i in zip(reasons, want):
        assert r.difference == pytest.approx(diffs[i], abs=1e-6)
        assert r.outlier - r.neighbours == pytest.approx(r.difference, abs=1e-9)


def _clustered(root: Path, seed: int = 0, with_outlier: bool = True) -> Path:
    """Three clusters of 8 tracks around three descriptor texts; track t024 sits near "noise"."""
    rng = np.random.default_rng(seed)
    centers = ENC.embed_text(["solo piano", "rock music", "jazz"])
    tracks = [noisy_copies(centers[i % 3], int(rng.integers(2, 5)), 0.6, rng) for i in range(24)]
    if with_outlier:
        tracks.append(noisy_copies(ENC.embed_text(["noise"])[0], 3, 0.6, rng))
    return build_library(root, tracks)


def test_planted_outlier_ranks_first_with_the_planted_reason(tmp_path: Path) -> None:
    lib = Library.open(_clustered(tmp_path / "lib"))
    found = find_outliers(lib, k=4, top=5, descriptors=["noise", "solo piano", "rock music", "jazz", "speech"])
    assert found[0].track_id == "t024" and found[0].rank == 1
    # the outlier sounds far more like "noise" than its neighbours (the largest positive Δcos); the
    # neighbours' own cluster text shows up with a negative Δ ("less jazz than its neighbours")
    positive = max(found[0].reasons, key=lambda r: r.difference)
    assert positive.descriptor == "noise" and positive.difference > 0.5
    assert len(found[0].reasons) == 3
    assert [o.score for o in found] == sorted((o.score for o in found), reverse=True)
    # the scores are Eq. 1 on pooled track vectors, brute force
    vecs = pooled_track_vectors(lib.store, lib.tracks.column("frame_start").to_numpy(),
                                lib.tracks.column("frame_count").to_numpy())
    brute = brute_knn(vecs, vecs, 4, True)
    ids = lib.tracks.column("track_id").to_pylist()
    for o in found:
        assert o.score == pytest.approx(brute[ids.index(o.track_id)], abs=1e-5)
        assert o.track_id not in o.neighbours
    js = found[0].to_json()
    assert {"track_id", "path", "score", "reasons"} <= set(js) and {"descriptor", "difference"} <= set(js["reasons"][0])


def test_pooled_vectors_are_normalised_means(tmp_path: Path) -> None:
    lib = Library.open(_clustered(tmp_path / "lib"))
    for row in lib.tracks.to_pylist()[:5]:
        v = lib.store.vectors(row["frame_start"], row["frame_count"]).mean(0)
        got = pooled_track_vectors(lib.store, np.array([row["frame_start"]]), np.array([row["frame_count"]]))[0]
        np.testing.assert_allclose(got, v / np.linalg.norm(v), atol=1e-6)


def test_reference_library_scores_every_track_against_it(tmp_path: Path) -> None:
    ref = Library.open(_clustered(tmp_path / "ref", seed=1, with_outlier=False))
    lib = Library.open(_clustered(tmp_path / "lib", seed=2))
    found = find_outliers(lib, k=3, top=30, reference=ref)
    assert found[0].track_id == "t024" and len(found) == 25 and found[0].reasons == ()
    assert set(found[0].neighbours) <= set(ref.tracks.column("track_id").to_pylist())


def test_reference_with_another_encoder_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    info = EncoderInfo("other", "ckpt", 32, 16000)
    other = Library.open(build_library(tmp_path / "other", [rng.standard_normal((2, 32)) for _ in range(5)],
                                       encoder=info))
    lib = Library.open(_clustered(tmp_path / "lib"))
    with pytest.raises(IncompatibleLibraryError):
        find_outliers(lib, reference=other)


def test_rank_outliers_ties_break_by_track_id() -> None:
    v = unit(np.tile(np.eye(1, 4), (6, 1)) + 0.0)
    out = rank_outliers([f"x{i}" for i in (5, 3, 1, 4, 2, 0)], ["p"] * 6, v, k=2, top=6)
    assert [o.track_id for o in out] == [f"x{i}" for i in range(6)]


def test_where_restricts_to_one_folder_and_finds_the_stray_file(tmp_path: Path) -> None:
    """A "jazz folder" of 10 tracks with one rock track in it; the rest of the library is rock."""
    rng = np.random.default_rng(4)
    jazz, rock = ENC.embed_text(["jazz", "rock music"])
    tracks = [noisy_copies(jazz, 3, 0.6, rng) for _ in range(9)] + [noisy_copies(rock, 3, 0.6, rng)]
    tracks += [noisy_copies(rock, 3, 0.6, rng) for _ in range(20)]
    ids = [f"jazz{i}" for i in range(10)] + [f"rock{i}" for i in range(20)]
    lib = Library.open(build_library(tmp_path / "lib", tracks, ids=ids))
    found = find_outliers(lib, k=3, top=3, where="track_id LIKE 'jazz%'", descriptors=["jazz", "rock music"])
    assert found[0].track_id == "jazz9" and all(n.startswith("jazz") for n in found[0].neighbours)
    assert {r.descriptor: r.difference for r in found[0].reasons}["rock music"] > 0.5
    # without the filter the stray track has 20 rock neighbours and is not an outlier at all
    assert "jazz9" not in [o.track_id for o in find_outliers(lib, k=3, top=3)]
