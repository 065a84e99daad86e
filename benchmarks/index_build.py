"""`bench index-build`: peak memory, build time and recall of a FAISS index built from a library's shards.

Each size is built in a fresh child process (spawned, so it shares no pages with this one) over the first
N frames of one synthetic library, with the engine's own steps: a seeded training sample gathered from
the shards, training, then adds in bounded batches (``store.VectorReader``). The child reports its
resident memory after imports, its peak (VmHWM), the index's serialized size and the training sample,
so ``peak - baseline - index`` is what the build needed beyond the finished index. Recall is measured
against float32 brute force over the same N frames. Nothing here asserts a time or a size.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from songseek.engine.encoders.base import l2_normalize
from songseek.engine.errors import UsageError
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.store import FrameStore, VectorReader

MIB = 1024 * 1024


@dataclass(frozen=True)
class BuildFigures:
    """One child's build of ``factory`` over ``frames`` frames (memory in MiB, times in seconds)."""

    frames: int
    dim: int
    factory: str
    reader: str                 # "pread" (the engine's bounded batches) or "mmap" (every shard mapped)
    nprobe: int
    train_rows: int
    train_sample_mib: float
    sample_s: float             # gathering the training sample from the shards
    train_s: float
    add_s: float
    build_s: float              # sample + train + add
    index_mib: float            # serialized size, about what the index holds in RAM
    est_index_mib: float        # from index.bytes_per_frame (codes and ids, no centroids)
    rss_base_mib: float         # after imports, before the build
    rss_peak_mib: float         # VmHWM at the end of the build
    rss_file_mib: float         # file-backed resident pages at the end of the build (mapped shards)
    beyond_index_mib: float     # peak - base - index: what the build needed besides the finished index
    queries: int
    query_p50_ms: float         # one query at a time, one thread, k=100, the default nprobe
    recall_at_100: float        # |FAISS top 100 ∩ exact top 100| / 100
    recall_100_at_1000: float   # exact top 100 found in FAISS's top 1000 (what a float32 re-score recovers)
    threads: int                # OpenMP threads of the build (0: all cores)
    load_avg: float


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx_i ∩ exact_i| / |exact_i| (int rows; -1 is padding)."""
    total = 0.0
    for a, e in zip(approx, exact):
        want = set(e[e >= 0].tolist())
        total += len(want & set(a[a >= 0].tolist())) / len(want) if want else 1.0
    return total / max(len(exact), 1)


def exact_topk(reader: VectorReader, queries: np.ndarray, k: int, stop: int) -> np.ndarray:
    """int64 (nq, k) rows of the exact top k by inner product over rows [0, stop), streamed in batches."""
    nq = len(queries)
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_r = np.zeros((nq, 0), np.int64)
    pos = 0
    for batch in reader.batches(0, stop):
        sims = queries @ batch.T
        rows = np.broadcast_to(np.arange(pos, pos + len(batch)), sims.shape)
        pos += len(batch)
        s, r = np.concatenate([best_s, sims], 1), np.concatenate([best_r, rows], 1)
        keep = np.argpartition(-s, min(k, s.shape[1]) - 1, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(s, keep, 1), np.take_along_axis(r, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_r, order, 1)


def make_queries(reader: VectorReader, stop: int, n: int, cosine: float = 0.5, seed: int = 7) -> np.ndarray:
    """float32 (n, dim) unit queries, each at cosine ``cosine`` with a random frame of rows [0, stop)."""
    rng = np.random.default_rng(seed)
    picked = reader.gather(np.sort(rng.choice(stop, size=n, replace=n > stop)))
    noise = l2_normalize(rng.standard_normal(picked.shape).astype(np.float32))
    noise = l2_normalize(noise - (noise * picked).sum(1, keepdims=True) * picked)
    return l2_normalize(cosine * picked + np.sqrt(1 - cosine * cosine) * noise)


def _status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM, RssFile, ...) in MiB; NaN off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def build_child(root: Path, frames: int, factory: str, reader_kind: str, n_queries: int,
                threads: int = 1) -> BuildFigures:
    """Build one index in this process and measure it (the body of the child process). ``threads``: OpenMP
    threads for training and adding (0: FAISS's default, all cores)."""
    import faiss

    if threads > 0:
        faiss.omp_set_num_threads(threads)

    m = read_manifest(root)
    reader = VectorReader(root, m)
    if frames > reader.n_rows:
        raise UsageError(f"frames={frames} but the library at {root} holds {reader.n_rows}")
    want = faiss_index.auto_factory(frames, m.dim) if factory == "auto" else factory
    base = _status_mib("VmRSS")
    t0 = time.perf_counter()
    rows = faiss_index.training_rows(frames, want)
    if reader_kind == "mmap":  # the old way: every shard memory-mapped, rows read through the maps
        shards = FrameStore(root, m).shards()
        cut, kept = 0, []
        for s in shards:
            kept.append(s[:max(0, frames - cut)])
            cut += len(s)
        sample = faiss_index.training_sample(kept, want)
    else:
        sample = None if rows is None else reader.gather(rows)
    t1 = time.perf_counter()
    n_train = 0 if sample is None else len(sample)
    sample_mib = 0.0 if sample is None else sample.nbytes / MIB
    index = faiss_index.build_index(want, m.dim, sample)
    del sample
    t2 = time.perf_counter()
    if reader_kind == "mmap":
        faiss_index.add_rows(index, kept, 0)
    else:
        faiss_index.add_batches(index, reader.batches(0, frames, faiss_index.ADD_BATCH))
    t3 = time.perf_counter()
    peak, file_mib = _status_mib("VmHWM"), _status_mib("RssFile")
    if reader_kind == "mmap":
        del shards, kept
    size = len(faiss.serialize_index(index)) / MIB
    nprobe = faiss_index.default_nprobe(want, frames)
    faiss_index.set_nprobe(index, nprobe)
    queries = make_queries(reader, frames, n_queries)
    exact = exact_topk(reader, queries, 100, frames)
    lat = []
    with faiss_index.query_threads():
        for q in queries:
            a = time.perf_counter()
            index.search(q[None], 100)
            lat.append(time.perf_counter() - a)
        _, top100 = index.search(queries, 100)
        _, top1000 = index.search(queries, 1000)
    return BuildFigures(
        frames=frames, dim=m.dim, factory=want, reader=reader_kind, nprobe=nprobe, train_rows=n_train,
        train_sample_mib=sample_mib, sample_s=t1 - t0, train_s=t2 - t1, add_s=t3 - t2, build_s=t3 - t0,
        index_mib=size, est_index_mib=frames * faiss_index.bytes_per_frame(want, m.dim) / MIB,
        rss_base_mib=base, rss_peak_mib=peak, rss_file_mib=file_mib, beyond_index_mib=peak - base - size,
        queries=n_queries, query_p50_ms=float(np.median(lat)) * 1000,
        recall_at_100=recall(top100, exact), recall_100_at_1000=recall(top1000, exact),
        threads=threads, load_avg=os.getloadavg()[0],
    )


def _child_main(conn: Connection, root: str, frames: int, factory: str, reader_kind: str, n_queries: int,
                threads: int) -> None:
    try:
        conn.send(asdict(build_child(Path(root), frames, factory, reader_kind, n_queries, threads)))
    except BaseException as exc:  # the parent re-raises it with the child's message
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def run_in_child(root: Path, frames: int, factory: str, reader_kind: str = "pread",
                 n_queries: int = 100, threads: int = 1) -> BuildFigures:
    """``build_child`` in a freshly spawned process, so its peak RSS is this build's alone."""
    if reader_kind not in ("pread", "mmap"):
        raise UsageError(f"reader must be pread or mmap, not {reader_kind!r}")
    if frames <= 0 or n_queries <= 0:
        raise UsageError(f"frames and n_queries must be positive (got {frames}, {n_queries})")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, str(root), frames, factory, reader_kind, n_queries,
                                                          threads))
    proc.start()
    child.close()
    try:
        data = parent.recv()
    except EOFError:
        data = {"error": "the build process died (killed for memory?)"}
    proc.join()
    if "error" in data:
        raise UsageError(f"index build of {frames} frames ({factory}) failed: {data['error']}")
    return BuildFigures(**data)


def large_factory(frames: int, dim: int) -> str:
    """The factory `auto` uses for large libraries (its PQ tier), at this size's nlist."""
    nlist = faiss_index.auto_nlist(frames)
    coarse = f"IVF{nlist}_HNSW32" if nlist >= faiss_index.HNSW_NLIST else f"IVF{nlist}"
    return f"{coarse},PQ{faiss_index.pq_subquantizers(dim)}"
