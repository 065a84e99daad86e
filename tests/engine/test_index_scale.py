"""Building the FAISS index without the library in RAM: bounded reads from the shards, the same index as
an in-memory build, the auto factory's tiers, and the memory per frame each factory is documented with."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.store import FrameStore, TrackRecord, VectorReader
from songseek.engine.storage.writer import LibraryWriter, build_from_reader

DIM = 32


@pytest.fixture(autouse=True)
def one_faiss_thread() -> object:
    """k-means and PQ training on one OpenMP thread: on a shared 2-core runner spinning threads made one
    training take minutes instead of a second."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _library(root: Path, factory: str, n_tracks: int = 120, seed: int = 0) -> np.ndarray:
    """A library of seeded clustered frames in several shards; returns every frame in row order."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((8, DIM)))
    info = EncoderInfo(name="precomputed", checkpoint="", dim=DIM, sample_rate=0)
    frames = []
    with LibraryWriter(root, Manifest(encoder=info, window_s=10.0, hop_s=10.0, index_factory=factory)) as w:
        for t in range(n_tracks):
            n = int(rng.integers(5, 40))
            v = l2_normalize(centres[t % 8] + 0.6 * rng.standard_normal((n, DIM)))
            frames.append(v)
            starts = np.arange(n) * 10.0
            w.add_track(TrackRecord(track_id=f"t{t:04d}", path=f"{t}.wav"), v, starts, starts + 10)
            if t % 37 == 36:
                w.commit()
        w.commit()
    return np.concatenate(frames)


def test_reader_batches_and_gather_equal_the_mapped_rows(tmp_path: Path) -> None:
    frames = _library(tmp_path, "Flat")
    m = read_manifest(tmp_path)
    assert len(m.frame_shards) >= 3
    reader = VectorReader(tmp_path, m)
    assert reader.n_rows == len(frames) == FrameStore(tmp_path, m).n_rows
    for start, stop, batch in [(0, None, 100), (37, 1500, 64), (len(frames) - 5, None, 7), (10, 10, 4)]:
        got = [b.copy() for b in reader.batches(start, stop, batch)]
        want = frames[start:stop]
        assert all(len(b) <= batch for b in got)
        np.testing.assert_array_equal(np.concatenate(got) if got else np.zeros((0, DIM), np.float32), want)
    rows = np.sort(np.random.default_rng(1).choice(len(frames), 300, replace=False))
    np.testing.assert_array_equal(reader.gather(rows), frames[rows])


def test_reader_refuses_a_truncated_shard(tmp_path: Path) -> None:
    from songseek.engine.errors import LibraryError

    _library(tmp_path, "Flat", n_tracks=40)
    m = read_manifest(tmp_path)
    shard = tmp_path / m.frame_shards[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(LibraryError, match="repair"):
        list(VectorReader(tmp_path, m).batches())


@pytest.mark.parametrize("factory", ["IVF8,PQ8x4", "IVF8,SQfp16", "Flat"])
def test_streamed_build_equals_an_in_memory_build(tmp_path: Path, factory: str) -> None:
    frames = _library(tmp_path, factory)
    with LibraryWriter(tmp_path) as w:
        assert w.update_index(factory) == "rebuilt"
    m = read_manifest(tmp_path)
    assert m.index_frames == len(frames)
    streamed = faiss_index.load_index(tmp_path / m.index_file, use_gpu=False, mmap=False)
    # the pre-issue-15 build: everything in memory, the same seeded sample
    ref = faiss_index.build_index(factory, DIM, faiss_index.training_sample([frames], factory))
    faiss_index.add_rows(ref, [frames], 0)
    q = l2_normalize(np.random.default_rng(5).standard_normal((20, DIM)))
    for idx in (streamed, ref):
        faiss_index.set_nprobe(idx, 4)
    scores, rows = faiss_index.search(streamed, q, 10)
    np.testing.assert_array_equal(rows, faiss_index.search(ref, q, 10)[1])
    assert rows.shape == scores.shape == (20, 10) and (rows >= 0).all()
    # against brute force: the exact inner products of the returned rows, best first; for Flat, the
    # exact top 10 of every frame (numpy, no FAISS)
    exact = q.astype(np.float64) @ frames.T.astype(np.float64)
    if factory == "Flat":
        np.testing.assert_array_equal(rows, np.argsort(-exact, axis=1, kind="stable")[:, :10])
        np.testing.assert_allclose(scores, np.take_along_axis(exact, rows, 1), atol=1e-5)
    else:  # IVF probes some lists and codes are lossy: the approximate scores still rank the rows
        assert (np.diff(scores, axis=1) <= 1e-6).all()
        if factory.endswith("SQfp16"):  # half floats: scores within fp16 rounding of the exact ones
            np.testing.assert_allclose(scores, np.take_along_axis(exact, rows, 1), atol=3e-3)
    # a prefix build (what `bench index-build` does per size) holds exactly that many rows
    assert build_from_reader(VectorReader(tmp_path, m), factory, stop=500).ntotal == 500


def test_incremental_add_reads_only_the_new_rows(tmp_path: Path) -> None:
    frames = _library(tmp_path, "IVF8,PQ8x4")
    with LibraryWriter(tmp_path) as w:
        w.update_index("IVF8,PQ8x4")
        extra = l2_normalize(np.random.default_rng(3).standard_normal((30, DIM)))
        w.add_track(TrackRecord(track_id="new", path="new.wav"), extra, np.arange(30.0), np.arange(30.0) + 1)
        w.commit()
        assert w.update_index() == "updated"
    m = read_manifest(tmp_path)
    idx = faiss_index.load_index(tmp_path / m.index_file, use_gpu=False)
    assert idx.ntotal == len(frames) + 30 == m.index_frames
    faiss_index.set_nprobe(idx, 8)
    _, rows = faiss_index.search(idx, extra[:5], 10)
    # the new frames are found under their own rows (4-bit PQ is lossy: among the top 10, not always first)
    assert all(len(frames) + i in rows[i] for i in range(5))


def test_mmap_load_answers_like_a_full_load(tmp_path: Path) -> None:
    _library(tmp_path, "IVF8,SQfp16")
    with LibraryWriter(tmp_path) as w:
        w.update_index("IVF8,SQfp16")
    path = tmp_path / read_manifest(tmp_path).index_file
    full = faiss_index.load_index(path, use_gpu=False, mmap=False)
    mapped = faiss_index.load_index(path, use_gpu=False, mmap=True)
    q = l2_normalize(np.random.default_rng(2).standard_normal((10, DIM)))
    for idx in (full, mapped):
        faiss_index.set_nprobe(idx, 3)
    s1, r1 = faiss_index.search(full, q, 10)
    s2, r2 = faiss_index.search(mapped, q, 10)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)


def test_auto_factory_tiers() -> None:
    ix = faiss_index
    assert ix.auto_factory(ix.IVF_THRESHOLD - 1, 512) == "Flat"
    assert ix.auto_factory(1_000_000, 512) == "IVF1024,SQfp16"  # unchanged for libraries that fit in RAM
    assert ix.auto_factory(ix.PQ_THRESHOLD - 1, 512).endswith(",SQfp16")
    assert ix.auto_factory(ix.PQ_THRESHOLD, 512) == f"IVF{ix.auto_nlist(ix.PQ_THRESHOLD)},PQ64"
    assert ix.auto_factory(24_000_000, 512) == "IVF4096,PQ64"
    assert ix.auto_factory(100_000_000, 512) == "IVF8192,PQ64"
    big = ix.auto_factory(1_000_000_000, 512)
    assert big.startswith("IVF32768_HNSW32,") and ix.ivf_nlist(big) == 32768
    assert ix.auto_nlist(10**12) == ix.MAX_NLIST
    for dim in (512, 100, 7, 1):  # PQ needs dim % M == 0
        m = ix.pq_subquantizers(dim)
        assert dim % m == 0 and 1 <= m <= max(1, dim // 8)
    # an IVF component anywhere in the string counts (OPQ first): nprobe and rebuild rules see it
    assert ix.ivf_nlist("OPQ64_512,IVF4096,PQ64") == 4096 and ix.default_nprobe("OPQ64_512,IVF4096,PQ64") == 128


def test_training_sample_sizes() -> None:
    ix = faiss_index
    assert ix.training_rows(10_000, "Flat") is None
    rows = ix.training_rows(1_000_000, "IVF1024,SQfp16")
    assert rows is not None and len(rows) == ix.TRAIN_PER_LIST * 1024 and (np.diff(rows) > 0).all()
    pq = ix.training_rows(1_000_000, "IVF256,PQ64")
    assert pq is not None and len(pq) == ix.MIN_PQ_TRAIN  # PQ codebooks want more than 64 x 256
    capped = ix.training_rows(10**9, "IVF32768_HNSW32,PQ64")
    assert capped is not None and len(capped) == max(ix.MAX_TRAIN_ROWS, ix.MIN_TRAIN_PER_LIST * 32768)
    small = ix.training_rows(500, "IVF8,PQ8x4")
    assert small is not None and len(small) == 500


@pytest.mark.parametrize("factory", ["Flat", "IVF16,SQfp16", "IVF16,SQ8", "IVF16,PQ8x4", "IVF16,PQ16x4fs"])
def test_bytes_per_frame_is_what_each_frame_costs(factory: str) -> None:
    """The documented memory per frame equals the slope of the serialized size against frames."""
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.standard_normal((6000, DIM))).astype(np.float32)
    sizes = []
    for n in (2000, 6000):
        idx = faiss_index.build_index(factory, DIM, x[:2000] if factory != "Flat" else None)
        idx.add(x[:n])
        sizes.append(len(faiss.serialize_index(idx)))
    slope = (sizes[1] - sizes[0]) / 4000
    assert slope == pytest.approx(faiss_index.bytes_per_frame(factory, DIM), rel=0.02)


@pytest.mark.parametrize("factory", ["IVF32,Flat", "PCA16,IVF32,Flat"])  # bare and wrapped IVF
def test_nprobe_is_per_call_so_threads_sharing_an_index_keep_their_own(factory: str) -> None:
    rng = np.random.default_rng(3)
    x = l2_normalize(rng.normal(size=(2000, 32)).astype(np.float32))
    index = faiss_index.build_index(factory, 32, x)  # trained on x
    index.add(x)
    queries = x[rng.choice(len(x), 40, replace=False)]
    ivf = faiss.extract_index_ivf(index)
    before = ivf.nprobe
    want = {p: [faiss_index.search(index, q[None], 20, p)[1][0] for q in queries] for p in (1, 32)}
    assert any((a != b).any() for a, b in zip(want[1], want[32]))  # the two settings rank differently
    # reference: the index's own setting at 32 gives what nprobe=32 per call gives
    ivf.nprobe = 32
    assert all((faiss_index.search(index, q[None], 20)[1][0] == w).all() for q, w in zip(queries, want[32]))
    ivf.nprobe = before
    jobs = [(p, i) for i in range(len(queries)) for p in (1, 32)] * 5
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: faiss_index.search(index, queries[job[1]][None], 20, job[0])[1][0], jobs))
    assert all((g == want[p][i]).all() for g, (p, i) in zip(got, jobs))
    assert ivf.nprobe == before  # nothing set on the shared index
