"""FAISS over frame vectors (inner product on unit vectors = cosine).

Index row i is global frame row i: frames are only ever appended, so ``index.add`` keeps ids in step
with the shards and no id map is needed. Frames past ``manifest.index_frames`` (committed after the
last index update, e.g. by a run that was killed) are searched exactly by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.device import faiss_gpu_available
from songseek.engine.errors import LibraryError, UsageError
from songseek.engine.storage.manifest import fsync_dir

# Below this many frames an exact flat index is both faster to build and fast enough to search.
# Measured with `songseek bench query-speed` (docs/performance.md).
IVF_THRESHOLD = 50_000
# IVF lists probed per query by default: this fraction of the lists, at least MIN_NPROBE, and enough to
# scan about MIN_SCAN_FRAMES frames (docs/performance.md).
NPROBE_FRACTION = 1 / 32
MIN_NPROBE = 32
MIN_SCAN_FRAMES = 25_000
# OpenMP threads for one query's scan (Flat, SQfp16, IVF probes); 0 = FAISS's default (all cores). On the
# shared 2-core machine two threads made single-query Flat/fp16 scans 2.5-3x slower than one (threads
# busy-wait on a core another process holds); IVF probes of one query run on one thread anyway.
_query_threads = [int(os.environ.get("SONGSEEK_QUERY_THREADS", "1"))]
# Vectors per IVF list that k-means trains on (FAISS warns below 39; more costs build time, not recall here).
TRAIN_PER_LIST = 64


def _faiss() -> Any:
    import faiss

    return faiss


def get_query_threads() -> int:
    """OpenMP threads of one query's FAISS scans ($SONGSEEK_QUERY_THREADS, default 1; 0 = FAISS's default)."""
    return _query_threads[0]


def set_query_threads(n: int) -> int:
    """Set the threads of each query's FAISS scans for this process; returns the previous value."""
    before, _query_threads[0] = _query_threads[0], int(n)
    return before


@contextmanager
def query_threads() -> Iterator[None]:
    """Run the enclosed FAISS calls of this thread on ``get_query_threads()`` OpenMP threads (restored after)."""
    n = get_query_threads()
    if n <= 0:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def auto_factory(n_frames: int, dim: int) -> str:
    """The factory string `auto` stands for at this size: exact below IVF_THRESHOLD, else IVF + fp16 codes
    with about √n lists (a power of two: 256 at 100k frames, 1024 at 1M)."""
    if n_frames < IVF_THRESHOLD:
        return "Flat"
    nlist = 1 << int(np.round(np.log2(max(256.0, min(65536.0, float(np.sqrt(n_frames)))))))
    return f"IVF{nlist},SQfp16"


def ivf_nlist(factory: str) -> int:
    """The number of IVF lists a factory string asks for ("IVF1024,SQfp16" → 1024); 0 when it is not IVF."""
    if not factory.startswith("IVF"):
        return 0
    head = factory[3:].split(",")[0].split("_")[0]
    return int(head) if head.isdigit() else 0


def default_nprobe(factory: str, n_frames: int = 0) -> int:
    """Lists probed per query unless --nprobe says otherwise: NPROBE_FRACTION of the lists, at least
    MIN_NPROBE, and (when the library size is known) enough lists to scan about MIN_SCAN_FRAMES frames,
    which matters in small IVF libraries; 1 for indices that are not IVF."""
    nlist = ivf_nlist(factory)
    if nlist == 0:
        return 1
    by_size = int(np.ceil(nlist * MIN_SCAN_FRAMES / n_frames)) if n_frames > 0 else 0
    return min(nlist, max(MIN_NPROBE, int(round(nlist * NPROBE_FRACTION)), by_size))


def build_index(factory: str, dim: int, train: np.ndarray | None = None) -> Any:
    """An empty inner-product index of the given factory string, trained on ``train`` when it needs it."""
    faiss = _faiss()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise UsageError(f"bad index factory {factory!r}: {str(exc).splitlines()[0]}") from exc
    if not index.is_trained:
        if train is None or len(train) == 0:
            raise UsageError(f"index {factory!r} needs training vectors")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    set_nprobe(index, default_nprobe(factory))
    return index


def set_nprobe(index: Any, nprobe: int) -> None:
    faiss = _faiss()
    try:
        faiss.extract_index_ivf(index).nprobe = nprobe
    except RuntimeError:
        # extract_index_ivf knows only CPU classes; a GpuIndexIVF* (load_index on a GPU) has its own nprobe.
        if hasattr(index, "nprobe"):
            index.nprobe = nprobe


def training_sample(shards: list[np.ndarray], factory: str, seed: int = 0) -> np.ndarray | None:
    """A seeded sample of up to TRAIN_PER_LIST vectors per IVF list, or None for indices without training."""
    nlist = ivf_nlist(factory)
    if nlist == 0:
        return None
    total = sum(len(s) for s in shards)
    want = min(total, TRAIN_PER_LIST * nlist)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(total, size=want, replace=False))
    offsets = np.cumsum([0] + [len(s) for s in shards])
    out = np.empty((want, shards[0].shape[1]), dtype=np.float32)
    for s, vecs in enumerate(shards):
        mask = (rows >= offsets[s]) & (rows < offsets[s + 1])
        out[mask] = vecs[rows[mask] - offsets[s]]
    return out


def add_rows(index: Any, shards: list[np.ndarray], start: int, batch: int = 65536) -> int:
    """Add global rows [start, end) from the shards to the index in batches; returns the new ntotal."""
    offset = 0
    for vecs in shards:
        lo = max(start - offset, 0)
        for i in range(lo, len(vecs), batch):
            index.add(np.ascontiguousarray(vecs[i:i + batch], dtype=np.float32))
        offset += len(vecs)
    return int(index.ntotal)


def save_index(index: Any, path: Path) -> None:
    faiss = _faiss()
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # never write through a link planted under the temporary name
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load_index(path: Path, use_gpu: bool = True) -> Any:
    """Read an index file (moving it to the GPU when faiss-gpu and a GPU are there)."""
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise LibraryError(
            f"{path}: missing or damaged index ({str(exc).splitlines()[0]}); "
            f"run `songseek repair --library {path.parent}`"
        ) from exc
    if use_gpu and faiss_gpu_available():  # pragma: no cover - needs a GPU
        index = to_gpu(index)
    return index


_GPU_RESOURCES: list[Any] = []


def to_gpu(index: Any) -> Any:  # pragma: no cover - needs a GPU
    faiss = _faiss()
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    return faiss.index_cpu_to_gpu(_GPU_RESOURCES[0], 0, index)


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """queries float32 (nq, dim) → (scores float32 (nq, k), rows int64 (nq, k)); -1 rows pad short results."""
    k = max(1, min(k, int(index.ntotal))) if index.ntotal else 1
    with query_threads():
        scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, rows


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product over float32 (n, dim) rows; same output shape as ``search``."""
    n = len(vectors)
    if n == 0:
        nq = len(queries)
        return np.full((nq, 1), -np.inf, np.float32), np.full((nq, 1), -1, np.int64)
    sims = queries @ vectors.T
    k = min(k, n)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.float32), np.take_along_axis(part, order, axis=1)
