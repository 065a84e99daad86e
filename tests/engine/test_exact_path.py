"""The exact path (float16 scan + float32 certificate) against naive float32 brute force, and the index
defaults that `bench query-speed` tunes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from songseek.engine import index as faiss_index
from songseek.engine import search as search_mod
from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.manifest import Manifest
from songseek.engine.search import Library, SearchOptions
from songseek.engine.store import TrackRecord
from songseek.engine.writer import LibraryWriter

DIM = 24


def _build(root: Path, factory: str, n_tracks: int = 150, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((6, DIM)))
    info = EncoderInfo(name="precomputed", checkpoint="", dim=DIM, sample_rate=0)
    tracks = []
    with LibraryWriter(root, Manifest(encoder=info, window_s=10.0, hop_s=10.0, index_factory=factory)) as w:
        for t in range(n_tracks):
            n = int(rng.integers(1, 30))
            v = l2_normalize(centres[t % 6] + 0.7 * rng.standard_normal((n, DIM)))
            tracks.append(v)
            starts = np.arange(n) * 10.0
            w.add_track(TrackRecord(track_id=f"t{t:04d}", path=f"{t}.wav"), v, starts, starts + 10)
            if t % 50 == 49:
                w.commit()  # several shards
        w.commit()
        w.update_index(factory)
    return tracks


def _open(root: Path) -> Library:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Library.open(root)


def _naive(lib: Library, q: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Best frame per live track in float64, best first (ties: lower track row)."""
    best = []
    for s, c in zip(lib._cols["frame_start"], lib._cols["frame_count"]):
        vecs = lib.store.rows(int(s), int(s + c)).astype(np.float64)
        best.append((vecs @ q.astype(np.float64)).max())
    b = np.asarray(best)
    order = np.lexsort((np.arange(len(b)), -b))[:want]
    return order, b[order]


@pytest.mark.parametrize("factory", ["IVF4,Flat", "Flat"])
def test_exact_candidates_equal_naive_brute_force(tmp_path: Path, factory: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_mod, "EXACT_FP32_FRAMES", 0)  # use the float16 copy at this tiny size
    _build(tmp_path / "lib", factory)
    lib = _open(tmp_path / "lib")
    rng = np.random.default_rng(1)
    for _ in range(12):
        q = l2_normalize(rng.standard_normal(DIM))
        for want in (5, 40):
            rows, scores = lib._exact_candidates(q, want, None)
            ref_rows, ref_scores = _naive(lib, q, want)
            np.testing.assert_array_equal(rows, ref_rows)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    if factory == "Flat":
        assert lib._scanner is None  # a flat float32 index is exact already
    else:
        assert lib._scanner is not None and lib._scanner.ntotal == lib.store.n_rows


def test_exact_path_falls_back_to_float32_when_it_cannot_certify(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_mod, "EXACT_FP32_FRAMES", 0)
    _build(tmp_path / "lib", "IVF4,Flat")
    lib = _open(tmp_path / "lib")
    lib._exact_queries = 1
    scanner = lib._fp16_scanner()
    scanner.margin = 10.0  # no float16 result can be proven complete: every query must fall back
    calls: list[int] = []
    search = scanner.search

    def spy(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(k)
        return search(q, k)

    monkeypatch.setattr(scanner, "search", spy)
    q = l2_normalize(np.random.default_rng(2).standard_normal(DIM))
    rows, scores = lib._exact_candidates(q, 20, None)
    ref_rows, ref_scores = _naive(lib, q, 20)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert calls and calls == sorted(calls)  # it tried growing kf before falling back


def test_exact_search_results_match_the_default_path_on_a_flat_library(tmp_path: Path) -> None:
    _build(tmp_path / "lib", "Flat")
    lib = _open(tmp_path / "lib")
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = l2_normalize(rng.standard_normal((1, DIM)))
        a = lib.search_vectors(q, SearchOptions(k=10, candidates=30))[0]
        e = lib.search_vectors(q, SearchOptions(k=10, candidates=30, exact=True))[0]
        assert [h.track_id for h in a] == [h.track_id for h in e]
        assert [h.score for h in a] == pytest.approx([h.score for h in e])


def test_fp16_margin_bounds_the_float16_error() -> None:
    rng = np.random.default_rng(4)
    for dim in (16, 512):
        v = l2_normalize(rng.standard_normal((2000, dim)))
        q = l2_normalize(rng.standard_normal(dim))
        err = np.abs(v.astype(np.float16).astype(np.float64) @ q - v.astype(np.float64) @ q)
        margin = faiss_index.fp16_margin(dim, 1.0)
        assert err.max() < margin < 2e-3


def test_fp16_scanner_scores_are_within_margin(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shards = [l2_normalize(rng.standard_normal((n, DIM))) for n in (100, 7, 300)]
    scanner = faiss_index.Fp16Scanner(shards)
    q = l2_normalize(rng.standard_normal(DIM))
    scores, rows = scanner.search(q, 50)
    allv = np.concatenate(shards)
    assert scanner.ntotal == 407 and scanner.nbytes == 407 * DIM * 2
    assert np.abs(scores - allv[rows] @ q).max() <= scanner.margin
    assert set(rows) >= set(np.argsort(-(allv @ q))[:40])  # a margin this small keeps the clear top


def test_index_defaults() -> None:
    assert faiss_index.auto_factory(faiss_index.IVF_THRESHOLD - 1, 512) == "Flat"
    big = faiss_index.auto_factory(1_000_000, 512)
    assert big.startswith("IVF") and big.endswith(",SQfp16")
    nlist = faiss_index.ivf_nlist(big)
    assert nlist & (nlist - 1) == 0  # a power of two
    assert faiss_index.default_nprobe("Flat") == 1
    assert faiss_index.default_nprobe("IVF1024,SQfp16") == max(faiss_index.MIN_NPROBE,
                                                               round(1024 * faiss_index.NPROBE_FRACTION))
    assert faiss_index.default_nprobe("IVF4,Flat") == 4  # never more lists than there are
    # small libraries probe enough lists to scan about MIN_SCAN_FRAMES frames
    assert faiss_index.default_nprobe("IVF256,SQfp16", 50_000) == int(np.ceil(256 * faiss_index.MIN_SCAN_FRAMES
                                                                               / 50_000))
    assert faiss_index.default_nprobe("IVF1024,SQfp16", 1_000_000) == 32
    assert faiss_index.ivf_nlist("HNSW32") == 0 and faiss_index.training_sample([np.zeros((3, 4))], "Flat") is None


def test_fp16_scanner_split_over_parts_matches_one_index() -> None:
    from songseek.engine.index import Fp16Scanner

    rng = np.random.default_rng(4)
    shards = [l2_normalize(rng.standard_normal((n, 16))) for n in (700, 50, 1250)]
    q = l2_normalize(rng.standard_normal(16))
    one, three = Fp16Scanner(shards, batch=300, parts=1), Fp16Scanner(shards, batch=300, parts=3)
    assert one.ntotal == three.ntotal == 2000
    s1, r1 = one.search(q, 50)
    s3, r3 = three.search(q, 50)
    np.testing.assert_array_equal(r1, r3)
    np.testing.assert_allclose(s1, s3)
    # and both agree with float32 brute force on the rows they return
    allv = np.concatenate(shards)
    np.testing.assert_array_equal(np.sort(r3[:10]), np.sort(np.argsort(-(allv @ q))[:10]))
