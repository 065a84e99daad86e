"""Speed benchmarks and synthetic libraries: structure of the reports, and every agreement / recall figure
checked against a naive reference. No timing is asserted."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from songseek.benchmarks.speed import (
    Agreement,
    brute_force_topk,
    latency,
    queries_from_library,
    recall_at_k,
    run_index_speed,
    run_query_speed,
    topk_agreement,
)
from songseek.benchmarks.synthetic import (
    SyntheticSpec,
    cached_library,
    iter_tracks,
    make_queries,
    track_lengths,
)
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.candidates import ExactPolicy
from songseek.engine.query.search import Library, SearchOptions

SPEC = SyntheticSpec(n_frames=5000, dim=32, n_clusters=16, shard_frames=2000)


def _frames(spec: SyntheticSpec) -> np.ndarray:
    return np.concatenate([f for _, f in iter_tracks(spec)])


# -- pure metrics ----------------------------------------------------------------------------------

def _naive_agreement(a: list[list[str]], e: list[list[str]], k: int) -> tuple[float, float, float]:
    ident = [x[:k] == y[:k] for x, y in zip(a, e)]
    same = [sorted(x[:k]) == sorted(y[:k]) for x, y in zip(a, e)]
    over = [sum(1 for t in y[:k] if t in x[:k]) / len(y[:k]) for x, y in zip(a, e)]
    return float(np.mean(ident)), float(np.mean(same)), float(np.mean(over))


def test_topk_agreement_matches_naive_reference() -> None:
    rng = np.random.default_rng(0)
    ids = [f"t{i}" for i in range(30)]
    exact = [list(rng.permutation(ids)[:12]) for _ in range(50)]
    approx = []
    for e in exact:  # some identical, some reordered, some with swapped-in tracks
        kind = rng.integers(0, 3)
        a = list(e)
        if kind == 1:
            a[:10] = list(rng.permutation(a[:10]))
        elif kind == 2:
            a[rng.integers(0, 10)] = "other"
        approx.append(a)
    for k in (1, 5, 10):
        got = topk_agreement(approx, exact, k)
        assert isinstance(got, Agreement) and got.queries == 50 and got.k == k
        assert (got.identical, got.same_set, got.overlap) == pytest.approx(_naive_agreement(approx, exact, k))
    assert 0 < topk_agreement(approx, exact, 10).identical < 1


def test_topk_agreement_rejects_mismatched_lengths() -> None:
    with pytest.raises(UsageError):
        topk_agreement([["a"]], [], 10)
    assert math.isnan(topk_agreement([], [], 10).identical)


def test_recall_at_k_matches_naive_reference_with_padding() -> None:
    rng = np.random.default_rng(1)
    exact = np.stack([rng.permutation(200)[:20] for _ in range(40)])
    approx = exact.copy()
    for i in range(40):
        drop = rng.choice(20, size=i % 7, replace=False)
        approx[i, drop] = rng.integers(200, 300, size=len(drop))  # wrong rows
    approx[3, -4:] = -1
    exact[5, -2:] = -1
    naive = np.mean([len(set(a[a >= 0]) & set(e[e >= 0])) / len(set(e[e >= 0])) for a, e in zip(approx, exact)])
    assert recall_at_k(approx, exact) == pytest.approx(naive)
    assert recall_at_k(exact, exact) == 1.0


def test_brute_force_topk_over_shards_is_numpy_topk() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((700, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    scores, rows = brute_force_topk([x[:300], x[300:310], x[310:]], q, 50)
    ref = np.argsort(-(x @ q), kind="stable")[:50]
    np.testing.assert_array_equal(rows, ref)
    np.testing.assert_allclose(scores, (x @ q)[ref], rtol=1e-5, atol=1e-5)


def _naive_percentile(values: list[float], p: float) -> float:
    """The textbook linear-interpolation percentile: position p/100 * (n - 1) in the sorted values."""
    s = sorted(values)
    pos = p / 100 * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def test_latency_figures_match_naive_percentiles() -> None:
    rng = np.random.default_rng(3)
    seconds = (rng.exponential(0.01, size=37) + 0.001).tolist()  # skewed: p50, p95 and the mean all differ
    ms = [x * 1e3 for x in seconds]
    lat = latency("x", "what", seconds, 3 * 2**20, baseline_p50_ms=2.0)
    assert lat.p50_ms == pytest.approx(_naive_percentile(ms, 50), rel=1e-12)
    assert lat.p95_ms == pytest.approx(_naive_percentile(ms, 95), rel=1e-12)
    assert lat.mean_ms == pytest.approx(sum(ms) / len(ms), rel=1e-12)
    assert lat.memory_mb == 3.0
    assert lat.vs_baseline == pytest.approx(_naive_percentile(ms, 50) / 2.0, rel=1e-12)
    assert math.isnan(latency("x", "w", seconds, 0, baseline_p50_ms=0.0).vs_baseline)


# -- synthetic libraries ---------------------------------------------------------------------------

def test_synthetic_vectors_are_seeded_unit_and_clustered() -> None:
    lengths = track_lengths(SPEC)
    assert lengths.sum() == SPEC.n_frames and lengths.min() >= 1 and lengths.max() <= SPEC.max_frames
    a, b = _frames(SPEC), _frames(SPEC)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (SPEC.n_frames, SPEC.dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    sims = a[:300] @ a.T
    same = owner[:300, None] == owner[None]
    assert sims[same].mean() > sims[~same].mean() + 0.3  # frames of one track lie together
    other = _frames(SyntheticSpec(n_frames=5000, dim=32, n_clusters=16, shard_frames=2000, seed=1))
    assert not np.allclose(a, other)


def test_synthetic_queries_sit_at_the_asked_cosine_with_one_frame() -> None:
    q = make_queries(SPEC, 40)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    best = (q @ _frames(SPEC).T).max(axis=1)
    assert (best >= SPEC.query_cosine - 1e-4).all()
    np.testing.assert_array_equal(q, make_queries(SPEC, 40))


def test_cached_library_is_built_once_and_shares_shards_between_factories(tmp_path: Path) -> None:
    root = cached_library(SPEC, tmp_path, "Flat")
    shard = next(root.glob("frames-*.arrow"))
    mtime = shard.stat().st_mtime_ns
    assert cached_library(SPEC, tmp_path, "Flat") == root
    assert shard.stat().st_mtime_ns == mtime
    ivf = cached_library(SPEC, tmp_path, "IVF16,Flat")
    assert ivf != root and (ivf / shard.name).stat().st_ino == shard.stat().st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(ivf)
    assert lib.store.n_rows == SPEC.n_frames and lib.manifest.index_description == "IVF16,Flat"
    assert len(lib.manifest.frame_shards) == 3  # 2000-frame shards
    np.testing.assert_allclose(lib.store.rows(0, SPEC.n_frames), _frames(SPEC), atol=1e-6)


# -- query speed -----------------------------------------------------------------------------------

def _exact_reference(lib: Library, queries: np.ndarray) -> np.ndarray:
    allv = lib.store.rows(0, lib.store.n_rows)
    return np.stack([np.argsort(-(allv @ q), kind="stable")[:100] for q in queries])


@pytest.mark.parametrize("factory", ["Flat", "IVF32,SQfp16"])
def test_query_speed_report_structure_and_figures(tmp_path: Path, factory: str) -> None:
    root = cached_library(SPEC, tmp_path, factory)
    queries = make_queries(SPEC, 12)
    report = run_query_speed(root, queries, k=5, candidates=20, nprobe=2, warmup=1)
    names = [lat.name for lat in report.latencies]
    assert names == ["baseline", "faiss", "candidates", "fusion", "query", "exact"]
    for lat in report.latencies:
        assert 0 < lat.p50_ms <= lat.p95_ms and lat.mean_ms > 0 and lat.memory_mb >= 0
    assert report.latencies[0].vs_baseline == 1.0
    base = report.latencies[0].p50_ms
    for lat in report.latencies:  # every row's ratio is its p50 over the baseline's, not the other way round
        assert lat.vs_baseline == pytest.approx(lat.p50_ms / base, rel=1e-12), lat.name
    assert report.frames == SPEC.n_frames and report.dim == SPEC.dim and report.queries == 12
    assert report.index == factory and report.nprobe == (2 if factory.startswith("IVF") else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(root)
    # Agreement and recall, recomputed naively from the engine's two paths and numpy brute force.
    approx = [[h.track_id for h in lib.search_vectors(q[None], SearchOptions(k=5, candidates=20, nprobe=2))[0]]
              for q in queries]
    exact = [[h.track_id for h in lib.search_vectors(q[None], SearchOptions(k=5, candidates=20, exact=True))[0]]
             for q in queries]
    assert (report.agreement.identical, report.agreement.same_set, report.agreement.overlap) == pytest.approx(
        _naive_agreement(approx, exact, 5))
    import faiss

    if factory.startswith("IVF"):
        faiss.extract_index_ivf(lib.index).nprobe = 2
    got = np.stack([lib.index.search(q[None], 100)[1][0] for q in queries])
    truth = _exact_reference(lib, queries)
    assert report.frame_recall_at_100 == pytest.approx(recall_at_k(got, truth))
    if factory == "Flat":
        assert report.frame_recall_at_100 == 1.0 and report.agreement.identical == 1.0
    assert report.to_json()["agreement"]["k"] == 5


def test_query_speed_times_the_int8_scan_of_the_exact_path(tmp_path: Path) -> None:
    root = cached_library(SPEC, tmp_path, "IVF32,SQfp16")
    report = run_query_speed(root, make_queries(SPEC, 6), k=5, candidates=20, warmup=1, faiss_threads=1,
                             policy=ExactPolicy(fp32_frames=0))  # the int8 copy even at this size
    names = [lat.name for lat in report.latencies]
    assert names == ["baseline", "faiss", "candidates", "fusion", "query", "int8-scan", "exact"]
    assert report.exact_setup_s > 0 and report.faiss_threads == 1
    width = -(-SPEC.dim // 64) * 64  # codes padded to a multiple of 64, + a 2-byte scale per frame
    assert report.latencies[names.index("int8-scan")].memory_mb == pytest.approx(SPEC.n_frames * (width + 2) / 2**20)


def test_queries_from_library_are_unit_and_near_frames(tmp_path: Path) -> None:
    root = cached_library(SPEC, tmp_path, "Flat")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(root)
    q = queries_from_library(lib, 10, cosine=0.6, seed=3)
    assert q.shape == (10, SPEC.dim) and q.dtype == np.float32
    best = (q @ lib.store.rows(0, lib.store.n_rows).T).max(axis=1)
    assert (best >= 0.6 - 1e-4).all()


# -- index speed -----------------------------------------------------------------------------------

def test_index_speed_counts_the_same_windows_both_ways(tmp_path: Path) -> None:
    import soundfile as sf

    src = tmp_path / "audio"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i, seconds in enumerate((3.5, 7.0, 1.2)):
        sf.write(src / f"f{i}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)).astype(np.float32), 16000)
    r = run_index_speed([src], FakeEncoder(), batch_size=4, workers=2, window_s=2.0, hop_s=1.0, work=tmp_path)
    # 3.5 s → starts 0,1 + tail at 2; 7 s → starts 0..5; 1.2 s → one padded window
    assert r.files == 3 and r.windows == 3 + 6 + 1
    assert r.audio_s == pytest.approx(3.5 + 7.0 + 1.2)
    assert r.end_to_end_windows_per_s == pytest.approx(r.windows / r.end_to_end_s)
    assert r.model_only_windows_per_s == pytest.approx(r.windows / r.model_only_s)
    assert r.ratio == pytest.approx(r.end_to_end_windows_per_s / r.model_only_windows_per_s)
    assert r.to_json()["batch_size"] == 4 and r.random_weights
    assert not list(tmp_path.glob("songseek-index-speed-*"))  # the throw-away library is gone


def test_index_speed_needs_files_and_repeats(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        run_index_speed([tmp_path], FakeEncoder(), repeats=0)
    with pytest.raises(UsageError, match="no audio files"):
        run_index_speed([tmp_path], FakeEncoder())
