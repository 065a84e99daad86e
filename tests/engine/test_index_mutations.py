"""Boundaries of engine/storage/index.py's rules that a mutation sweep found unpinned, each against the rule
as docs/performance.md and docs/scale.md state it, computed directly."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from songseek.engine.encoders.base import l2_normalize
from songseek.engine.storage import index as faiss_index


def test_auto_moves_from_flat_to_ivf_at_exactly_the_threshold() -> None:
    """docs/robustness.md: `auto` crosses from Flat to IVF at 50,000 frames (IVF_THRESHOLD)."""
    assert faiss_index.IVF_THRESHOLD == 50_000
    assert faiss_index.auto_factory(49_999, 512) == "Flat"
    assert faiss_index.auto_factory(50_000, 512) == "IVF256,SQfp16"  # √50,000 ≈ 224 → the floor of 256 lists


def test_the_coarse_quantizer_is_an_hnsw_graph_from_exactly_16384_lists() -> None:
    n = 16_384 ** 2  # √n = 16,384 lists exactly, and past PQ_THRESHOLD: PQ codes
    assert faiss_index.auto_factory(n, 512) == "IVF16384_HNSW32,PQ64"
    half = 8_192 ** 2 + 8_192 ** 2 // 2  # √ ≈ 10,033 → 8,192 lists (the nearest power of two in log scale)
    assert faiss_index.auto_factory(half, 512) == "IVF8192,PQ64"


@pytest.mark.parametrize("n_frames", [60_000, 75_000, 99_999, 123_457])
def test_default_nprobe_scans_at_least_min_scan_frames(n_frames: int) -> None:
    """The smallest number of lists whose expected frames (n/nlist each) reach MIN_SCAN_FRAMES, found by
    counting up, when that is above the other two rules."""
    nlist = 256
    p = 1
    while p * n_frames / nlist < faiss_index.MIN_SCAN_FRAMES:
        p += 1
    want = min(nlist, max(faiss_index.MIN_NPROBE, round(nlist / 32), p))
    assert faiss_index.default_nprobe(f"IVF{nlist},SQfp16", n_frames) == want
    assert want * n_frames / nlist >= faiss_index.MIN_SCAN_FRAMES > (want - 1) * n_frames / nlist


@pytest.mark.parametrize("factory", ["IVF16,SQ6", "IVF16,SQ4", "SQ8"])
def test_bytes_per_frame_of_the_other_scalar_quantizers(factory: str) -> None:
    """The estimate equals the slope of the serialized index against frames (as for SQfp16/SQ8 in
    test_index_scale), for 6-bit and 4-bit codes and a scalar quantizer without IVF lists."""
    dim = 16
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.standard_normal((3000, dim))).astype(np.float32)
    idx = faiss_index.build_index(factory, dim, x[:1000])  # trained once; sizes at 1000 and 3000 frames
    idx.add(x[:1000])
    sizes = [len(faiss.serialize_index(idx))]
    idx.add(x[1000:])
    sizes.append(len(faiss.serialize_index(idx)))
    slope = (sizes[1] - sizes[0]) / 2000
    assert slope == pytest.approx(faiss_index.bytes_per_frame(factory, dim), rel=0.02)


def test_a_pq_index_without_ivf_lists_is_trained_on_a_sample() -> None:
    """`--index-factory PQ4` (product quantisation, no IVF) needs training too: rows are sampled for it."""
    rows = faiss_index.training_rows(3000, "PQ4")
    assert rows is not None and len(rows) == 3000  # at most every row (MIN_PQ_TRAIN is more)
    assert faiss_index.training_rows(3000, "Flat") is None
    assert faiss_index.training_rows(3000, "HNSW8") is None


def test_a_built_ivf_index_probes_the_default_number_of_lists() -> None:
    """build_index sets the index's own nprobe (what a search without an explicit nprobe uses) to the
    default rule: 1/32 of the lists, at least MIN_NPROBE (32), at most every list."""
    rng = np.random.default_rng(1)
    x = l2_normalize(rng.standard_normal((4000, 8))).astype(np.float32)
    for nlist, want in ((64, 32), (16, 16)):  # 64/32 = 2 → MIN_NPROBE; 16 lists → all 16
        idx = faiss_index.build_index(f"IVF{nlist},Flat", 8, x)
        assert faiss.extract_index_ivf(idx).nprobe == want


@pytest.mark.parametrize("setting, size, want", [("1", 10, True), ("0", 5000, False), ("auto", 1025, True),
                                                 ("auto", 1024, False)])
def test_want_mmap_follows_the_setting_and_half_the_available_memory(
        tmp_path, monkeypatch: pytest.MonkeyPatch, setting: str, size: int, want: bool) -> None:
    """With 2 kB available, "auto" maps a file over 1 kB (half of it) and not one of exactly 1 kB."""
    import io

    path = tmp_path / "index.faiss"
    path.write_bytes(b"\0" * size)
    meminfo = "MemTotal:       8 kB\nMemAvailable:       2 kB\n"
    monkeypatch.setattr(faiss_index, "INDEX_MMAP", setting)
    monkeypatch.setattr(faiss_index, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert faiss_index.want_mmap(path) is want


def test_want_mmap_is_false_where_the_available_memory_cannot_be_read(tmp_path, monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    import io

    path = tmp_path / "index.faiss"
    path.write_bytes(b"\0" * 10)
    monkeypatch.setattr(faiss_index, "INDEX_MMAP", "auto")
    monkeypatch.setattr(faiss_index, "open", lambda *a, **k: io.StringIO("MemTotal: 8 kB\n"), raising=False)
    assert faiss_index.want_mmap(path) is False


def test_k_beyond_the_rows_is_clamped_in_both_searches() -> None:
    """k over the row count gives every row once, best first (plain numpy sort as the reference), not
    padding or an error; the faiss path clamps the same way."""
    rng = np.random.default_rng(5)
    v = l2_normalize(rng.standard_normal((7, 16)).astype(np.float32))
    q = l2_normalize(rng.standard_normal((2, 16)).astype(np.float32))
    want_rows = [sorted(range(7), key=lambda r: -float(q[i] @ v[r])) for i in range(2)]
    s, r = faiss_index.exact_search(v, q, 50)
    assert r.tolist() == want_rows and s.shape == (2, 7)
    index = faiss.IndexFlatIP(16)
    index.add(v)
    s2, r2 = faiss_index.search(index, q, 50)
    assert r2.tolist() == want_rows and s2.shape == (2, 7)
    s3, r3 = faiss_index.search(index, q, 0)  # k below 1: one row (the best)
    assert r3.tolist() == [[w[0]] for w in want_rows]
    empty = faiss.IndexFlatIP(16)
    assert faiss_index.search(empty, q, 5)[1].shape == (2, 1)
