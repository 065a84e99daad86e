"""FAISS over frame vectors (inner product on unit vectors = cosine).

Index row i is global frame row i: frames are only ever appended, so ``index.add`` keeps ids in step
with the shards and no id map is needed. Frames past ``manifest.index_frames`` (committed after the
last index update, e.g. by a run that was killed) are searched exactly by the caller.

Building never holds the library's vectors in RAM: IVF trains on a seeded sample, then frames are added
in bounded batches read from the shards (``store.VectorReader``). The memory a build needs beyond the
finished index is the training sample plus one batch, whatever the library's size (docs/scale.md).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.device import faiss_gpu_available
from songseek.engine.errors import LibraryError, UsageError
from songseek.engine.storage.manifest import atomic_write

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
# Vectors per IVF list that k-means trains on (FAISS warns below 39; more costs build time, not recall here),
# capped at MAX_TRAIN_ROWS (2 GiB at 512-d) but never below MIN_TRAIN_PER_LIST a list.
TRAIN_PER_LIST = 64
MIN_TRAIN_PER_LIST = 40
MAX_TRAIN_ROWS = 1 << 20
# At least this many training vectors when the codes are PQ (256 centroids per sub-quantizer want ~100x).
MIN_PQ_TRAIN = 65_536
# From this many frames `auto` stores PQ codes instead of float16 ones: an fp16 index of 8M 512-d frames
# already takes 8.3 GB of RAM; PQ takes 0.6 GB (docs/scale.md has the recall it costs).
PQ_THRESHOLD = 8_000_000
# The most IVF lists `auto` asks for, and the count from which the coarse quantizer is an HNSW graph.
MAX_NLIST = 65_536
HNSW_NLIST = 16_384
# Reading an index memory-mapped (load_index): "auto" (when it is over half of the free memory), "1", "0".
INDEX_MMAP = os.environ.get("SONGSEEK_INDEX_MMAP", "auto")
# Frames per batch when adding to an index: bounds the build's working memory (32k × 512 × 4 B = 64 MiB).
ADD_BATCH = 32_768


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
    """The factory string `auto` stands for at this size, in three tiers (memory per frame in docs/scale.md):

    - below IVF_THRESHOLD: ``Flat`` (exact, float32: 4·dim bytes a frame);
    - below PQ_THRESHOLD: ``IVF{nlist},SQfp16`` (float16 codes: 2·dim + 8 bytes a frame);
    - from PQ_THRESHOLD on: ``IVF{nlist},PQ{dim/8}`` (product-quantised codes: dim/8 + 8 bytes a frame,
      72 B at 512-d, 7.2 GB per 100M frames), with an HNSW coarse quantizer from HNSW_NLIST lists on,
      so that assigning each frame to its list does not cost a scan of every centroid.

    nlist is about √n, a power of two between 256 and MAX_NLIST (256 at 100k frames, 1024 at 1M, 4096 at 16M).
    """
    if n_frames < IVF_THRESHOLD:
        return "Flat"
    nlist = auto_nlist(n_frames)
    if n_frames < PQ_THRESHOLD:
        return f"IVF{nlist},SQfp16"
    coarse = f"IVF{nlist}_HNSW32" if nlist >= HNSW_NLIST else f"IVF{nlist}"
    return f"{coarse},PQ{pq_subquantizers(dim)}"


def auto_nlist(n_frames: int) -> int:
    """IVF lists for ``n_frames``: about √n, a power of two in [256, MAX_NLIST]."""
    return 1 << int(np.round(np.log2(max(256.0, min(float(MAX_NLIST), float(np.sqrt(max(n_frames, 1))))))))


def pq_subquantizers(dim: int) -> int:
    """PQ sub-vectors for ``dim``: dim/8 (one byte per 8 dimensions), or the largest divisor of dim below it
    (FAISS needs dim % M == 0)."""
    target = max(1, dim // 8)
    return next(m for m in range(target, 0, -1) if dim % m == 0)


def ivf_nlist(factory: str) -> int:
    """The number of IVF lists a factory string asks for ("IVF1024,SQfp16" → 1024, "OPQ64,IVF4096_HNSW32,PQ64"
    → 4096); 0 when it is not IVF."""
    for part in factory.split(","):
        if part.startswith("IVF"):
            head = part[3:].split("_")[0]
            return int(head) if head.isdigit() else 0
    return 0


def bytes_per_frame(factory: str, dim: int) -> float:
    """What one more frame adds to the index in RAM, from the factory string (estimate for the docs and
    `bench index-build`; the fixed part, centroids and codebooks, is left out). NaN when not known."""
    parts = factory.split(",")
    ivf = any(p.startswith("IVF") for p in parts)
    ids = 8.0 if ivf else 0.0  # an IVF list stores each frame's 64-bit id beside its code
    codes = parts[-1]
    if codes == "Flat":
        return 4.0 * dim + ids
    if codes.startswith("SQ"):
        bits = {"SQfp16": 16, "SQbf16": 16, "SQ8": 8, "SQ6": 6, "SQ4": 4}.get(codes.split("_")[0])
        return float("nan") if bits is None else dim * bits / 8 + ids
    if codes.startswith("PQ"):
        head = codes[2:].split("np")[0]
        m, _, nbits = head.partition("x")
        nbits = nbits.removesuffix("fs")
        if not m.isdigit() or (nbits and not nbits.isdigit()):
            return float("nan")
        return int(m) * (int(nbits) if nbits else 8) / 8 + ids
    return float("nan")


def default_nprobe(factory: str, n_frames: int = 0) -> int:
    """Lists probed per query unless --nprobe says otherwise: NPROBE_FRACTION of the lists, at least
    MIN_NPROBE, and (when the library size is known) enough lists to scan about MIN_SCAN_FRAMES frames,
    which matters in small IVF libraries; 1 for indices that are not IVF."""
    nlist = ivf_nlist(factory)
    if nlist == 0:
        return 1
    by_size = int(np.ceil(nlist * MIN_SCAN_FRAMES / n_frames)) if n_frames > 0 else 0
    return min(nlist, max(MIN_NPROBE, int(round(nlist * NPROBE_FRACTION)), by_size))


def check_factory(factory: str, dim: int) -> None:
    """UsageError for a factory string FAISS cannot build at ``dim``, so a writer can refuse it before it
    commits anything (the index is built after the commit). ``auto`` always passes."""
    if factory != "auto":
        _empty_index(factory, dim)


def _empty_index(factory: str, dim: int) -> Any:
    faiss = _faiss()
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        # "Error in <C++ signature> at <file>:<line>: why" -> why
        why = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(exc).splitlines()[0])
        raise UsageError(f"bad index factory {factory!r}: {why}") from exc


def build_index(factory: str, dim: int, train: np.ndarray | None = None) -> Any:
    """An empty inner-product index of the given factory string, trained on ``train`` when it needs it."""
    index = _empty_index(factory, dim)
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


def training_rows(n_rows: int, factory: str, seed: int = 0) -> np.ndarray | None:
    """Sorted global rows of a seeded training sample: TRAIN_PER_LIST per IVF list (at least MIN_PQ_TRAIN
    for PQ codes, at most every row), or None for an index that needs no training."""
    nlist = ivf_nlist(factory)
    pq = any(p.startswith(("PQ", "OPQ")) for p in factory.split(","))
    if nlist == 0 and not pq:
        return None
    per_list = max(MIN_TRAIN_PER_LIST * nlist, min(TRAIN_PER_LIST * nlist, MAX_TRAIN_ROWS))
    want = min(n_rows, max(per_list, MIN_PQ_TRAIN if pq else 0))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=want, replace=False))


def training_sample(shards: list[np.ndarray], factory: str, seed: int = 0) -> np.ndarray | None:
    """The ``training_rows`` sample gathered from in-memory (rows, dim) arrays (global row order)."""
    total = sum(len(s) for s in shards)
    rows = training_rows(total, factory, seed)
    if rows is None:
        return None
    offsets = np.cumsum([0] + [len(s) for s in shards])
    owner = np.searchsorted(offsets, rows, side="right") - 1
    out = np.empty((len(rows), shards[0].shape[1]), dtype=np.float32)
    for s in np.unique(owner):
        sel = owner == s
        out[sel] = shards[int(s)][rows[sel] - offsets[s]]
    return out


def add_rows(index: Any, shards: list[np.ndarray], start: int, batch: int = ADD_BATCH) -> int:
    """Add global rows [start, end) from in-memory shards to the index in batches; returns the new ntotal."""
    offset = 0
    for vecs in shards:
        lo = max(start - offset, 0)
        for i in range(lo, len(vecs), batch):
            index.add(np.ascontiguousarray(vecs[i:i + batch], dtype=np.float32))
        offset += len(vecs)
    return int(index.ntotal)


def add_batches(index: Any, batches: Iterable[np.ndarray]) -> int:
    """Add float32 (rows, dim) batches in order (rows get the next ids); returns the new ntotal."""
    for vecs in batches:
        index.add(np.ascontiguousarray(vecs, dtype=np.float32))
    return int(index.ntotal)


def save_index(index: Any, path: Path) -> None:
    faiss = _faiss()
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    # Through a Python file, not faiss.write_index(index, path): faiss raises a RuntimeError (not an
    # OSError) when a write fails and ignores an error from the final fclose, so a full disk either
    # crashed the run or committed a truncated index. Here every failed write raises OSError.
    atomic_write(path, lambda fh: faiss.write_index(index, faiss.PyCallbackIOWriter(fh.write)))


def load_index(path: Path, use_gpu: bool = True, mmap: bool | None = None) -> Any:
    """Read an index file (moving it to the GPU when faiss-gpu and a GPU are there).

    ``mmap`` (None: INDEX_MMAP's rule) leaves an IVF index's inverted lists in the file, memory-mapped:
    RAM then holds only the centroids and the lists queries touch (the page cache keeps hot ones), so a
    library whose index outgrows RAM still answers. A mapped index is read-only: writers pass False.
    """
    faiss = _faiss()
    if mmap is None:
        mmap = want_mmap(path)
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
    except RuntimeError as exc:
        raise LibraryError(
            f"{path}: missing or damaged index ({str(exc).splitlines()[0]}); "
            f"run `songseek repair --library {path.parent}`"
        ) from exc
    if use_gpu and not mmap and faiss_gpu_available():  # pragma: no cover - needs a GPU
        index = to_gpu(index)
    return index


def want_mmap(path: Path) -> bool:
    """INDEX_MMAP's rule for ``path``: "1" always, "0" never, "auto" when the file is over half of the
    memory available now (MemAvailable; never where that cannot be read)."""
    if INDEX_MMAP in ("0", "1"):
        return INDEX_MMAP == "1"
    try:
        size = path.stat().st_size
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return False
    return size > avail // 2


_GPU_RESOURCES: list[Any] = []


def to_gpu(index: Any) -> Any:  # pragma: no cover - needs a GPU
    faiss = _faiss()
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    return faiss.index_cpu_to_gpu(_GPU_RESOURCES[0], 0, index)


def search(index: Any, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """queries float32 (nq, dim) → (scores float32 (nq, k), rows int64 (nq, k)); -1 rows pad short results.
    ``nprobe``: IVF lists this call probes (None: the index's own setting; ignored by non-IVF indexes)."""
    k = max(1, min(k, int(index.ntotal))) if index.ntotal else 1
    x = np.ascontiguousarray(queries, dtype=np.float32)
    params = _ivf_params(index, nprobe)
    with query_threads():
        if params is not None:  # per call: threads sharing one index never see each other's nprobe
            return index.search(x, k, params=params)
        if nprobe is None or not hasattr(index, "nprobe"):  # Flat, HNSW...: no lists to probe, no lock
            return index.search(x, k)
        with _NPROBE_LOCK:  # an index with its own nprobe and no per-call parameters (GpuIndexIVF*)
            set_nprobe(index, nprobe)
            return index.search(x, k)


_NPROBE_LOCK = threading.Lock()


def _ivf_params(index: Any, nprobe: int | None) -> Any:
    """faiss.SearchParametersIVF(nprobe) for a CPU IVF index (bare or wrapped, e.g. OPQ or PCA in front), None
    when there is no nprobe to pass or the index takes none per call."""
    if nprobe is None:
        return None
    faiss = _faiss()
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:  # not IVF, or a GPU class extract_index_ivf does not know
        return None
    return faiss.SearchParametersIVF(nprobe=int(nprobe))


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product over float32 (n, dim) rows; same output shape as ``search``.
    Best first, ties to the lower row (argpartition keeps an arbitrary one of the rows tied at the k-th)."""
    n = len(vectors)
    if n == 0:
        nq = len(queries)
        return np.full((nq, 1), -np.inf, np.float32), np.full((nq, 1), -1, np.int64)
    sims = queries @ vectors.T
    k = min(k, n)
    rows = np.lexsort((np.broadcast_to(np.arange(n), sims.shape), -sims), axis=-1)[:, :k].astype(np.int64)
    return np.take_along_axis(sims, rows, axis=1).astype(np.float32), rows
