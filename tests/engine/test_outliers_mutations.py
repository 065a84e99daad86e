"""Outlier edge cases pinned by a mutation sweep: argument guards, the k boundary, the default index, tie
order of reasons, and a reference library with its own track ids (neighbours and reasons against it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.analysis import outliers
from songseek.engine.analysis.outliers import explain, find_outliers, knn_scores, rank_outliers
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, noisy_copies, unit

ENC = FakeEncoder()


def naive_pooled(lib: Library) -> dict[str, np.ndarray]:
    """track id → unit mean of its stored window vectors (plain loop over the tracks table)."""
    out = {}
    for row in lib.tracks.to_pylist():
        v = np.asarray(lib.store.vectors(row["frame_start"], row["frame_count"]), np.float64).mean(axis=0)
        out[row["track_id"]] = v / np.sqrt(sum(x * x for x in v))
    return out


def test_k_below_one_and_mismatched_self_reference_are_errors() -> None:
    ref = unit(np.random.default_rng(0).standard_normal((6, 8)))
    with pytest.raises(UsageError, match="at least 1"):
        knn_scores(ref, ref, 0)
    with pytest.raises(UsageError, match="exclude_self"):
        knn_scores(ref[:3], ref, 2, exclude_self=True)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_k_may_use_every_available_reference(exclude_self: bool) -> None:
    rng = np.random.default_rng(1)
    ref = unit(rng.standard_normal((5, 8)))
    k = 4 if exclude_self else 5
    score, rows, _ = knn_scores(ref, ref, k, exclude_self)
    for i in range(5):
        d = [float(np.sqrt(sum((a - b) ** 2 for a, b in zip(ref[i].tolist(), ref[j].tolist()))))
             for j in range(5) if not (exclude_self and j == i)]
        assert score[i] == pytest.approx(sum(d) / k, abs=1e-5)
        assert sorted(rows[i].tolist()) == [j for j in range(5) if not (exclude_self and j == i)]


def test_default_index_is_exact_flat_up_to_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outliers, "HNSW_THRESHOLD", 10)
    rng = np.random.default_rng(2)
    assert "HNSW" not in type(outliers._l2_index(unit(rng.standard_normal((10, 8))), None)).__name__
    assert "HNSW" in type(outliers._l2_index(unit(rng.standard_normal((11, 8))), None)).__name__


def test_explain_ties_follow_descriptor_order() -> None:
    """Exact ties: x = e0 and its neighbours e1, so the differences are 0, 1, 0, 1, -1 exactly."""
    e = np.eye(4)
    x, nb = e[0], np.stack([e[1], e[1]])
    t = np.stack([e[2], e[0], e[3], e[0], e[1]])
    names = ["a", "b", "c", "d", "e"]
    diffs = [float(t[i] @ x - (t[i] @ nb[0] + t[i] @ nb[1]) / 2) for i in range(5)]
    want = sorted(range(5), key=lambda i: (-abs(diffs[i]), i))
    got = explain(x, nb, t, names, top=5)
    assert [r.descriptor for r in got] == [names[i] for i in want] == ["b", "d", "e", "a", "c"]
    assert [r.difference for r in got] == [diffs[i] for i in want]


def test_explain_guards() -> None:
    e = np.eye(4)
    with pytest.raises(UsageError, match="2 descriptors but 3"):
        explain(e[0], e[1:3], e[:3], ["a", "b"])
    assert explain(e[0], e[1:3], e[:3], ["a", "b", "c"], top=-1) == ()
    assert explain(e[0], e[1:3], e[:3], ["a", "b", "c"], top=0) == ()


def test_rank_outliers_guards_and_counts() -> None:
    rng = np.random.default_rng(3)
    v = unit(rng.standard_normal((6, 8)))
    ids, paths = [f"x{i}" for i in range(6)], [f"/p/x{i}" for i in range(6)]
    with pytest.raises(UsageError, match="4 reference vectors but 3 reference ids"):
        rank_outliers(ids, paths, v, k=2, reference=v[:4], reference_ids=ids[:3])
    assert rank_outliers(ids, paths, v, k=2, top=-1) == []
    assert rank_outliers(ids, paths, v, k=2, top=0) == []
    t = unit(rng.standard_normal((5, 8)))
    found = rank_outliers(ids, paths, v, k=2, top=10, descriptor_vectors=t, descriptors=list("abcde"), n_reasons=2)
    assert len(found) == 6 and all(len(o.reasons) == 2 for o in found)
    assert all(o.path == f"/p/{o.track_id}" for o in found)


def test_reference_library_neighbours_and_reasons_use_the_reference(tmp_path: Path) -> None:
    """The reference has its own ids (r...); neighbours are named by them and reasons compare the track with
    the reference tracks' vectors, checked by brute force."""
    rng = np.random.default_rng(5)
    jazz, rock, noise = ENC.embed_text(["jazz", "rock music", "noise"])
    ref_tracks = [noisy_copies((jazz, rock)[i % 2], 3, 0.6, rng) for i in range(10)]
    ref = Library.open(build_library(tmp_path / "ref", ref_tracks, ids=[f"r{i:02d}" for i in range(10)]))
    tracks = [noisy_copies(jazz, 3, 0.6, rng), noisy_copies(noise, 3, 0.6, rng), noisy_copies(rock, 3, 0.6, rng)]
    lib = Library.open(build_library(tmp_path / "lib", tracks))
    descriptors = ["jazz", "rock music", "noise", "speech"]
    found = find_outliers(lib, k=3, top=10, reference=ref, descriptors=descriptors, n_reasons=4)
    assert found[0].track_id == "t001" and len(found) == 3
    mine, theirs = naive_pooled(lib), naive_pooled(ref)
    texts = ENC.embed_text(descriptors).astype(np.float64)
    for o in found:
        x = mine[o.track_id]
        by_dist = sorted(theirs, key=lambda r: float(np.linalg.norm(x - theirs[r])))[:3]
        assert list(o.neighbours) == by_dist
        assert o.score == pytest.approx(sum(float(np.linalg.norm(x - theirs[r])) for r in by_dist) / 3, abs=1e-5)
        diffs = {d: float(texts[j] @ x) - sum(float(texts[j] @ theirs[r]) for r in by_dist) / 3
                 for j, d in enumerate(descriptors)}
        assert {r.descriptor: r.difference for r in o.reasons} == pytest.approx(diffs, abs=1e-5)


def test_where_keeps_each_track_with_its_own_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    jazz, rock = ENC.embed_text(["jazz", "rock music"])
    tracks = [noisy_copies(rock, 2, 0.6, rng) for _ in range(4)] + [noisy_copies(jazz, 2, 0.6, rng) for _ in range(6)]
    ids = [f"rock{i}" for i in range(4)] + [f"jazz{i}" for i in range(6)]
    lib = Library.open(build_library(tmp_path / "lib", tracks, ids=ids))
    found = find_outliers(lib, k=2, top=10, where="track_id LIKE 'rock%'")
    assert sorted(o.track_id for o in found) == [f"rock{i}" for i in range(4)]
    assert all(o.path == f"/music/{o.track_id}.wav" for o in found)
