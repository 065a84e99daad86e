"""FAISS over frame vectors (inner product on unit vectors = cosine).

Index row i is global frame row i: frames are only ever appended, so ``index.add`` keeps ids in step
with the shards and no id map is needed. Frames past ``manifest.index_frames`` (committed after the
last index update, e.g. by a run that was killed) are searched exactly by the caller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .device import faiss_gpu_available
from .errors import LibraryError, UsageError
from .manifest import fsync_dir

# Below this many frames an exact flat index is both faster to build and fast enough to search.
# Measured with `songseek bench query-speed` (docs/performance.md).
IVF_THRESHOLD = 200_000


def _faiss() -> Any:
    import faiss

    return faiss


def auto_factory(n_frames: int, dim: int) -> str:
    """The factory string `auto` stands for at this size: exact below IVF_THRESHOLD, else IVF+fp16."""
    if n_frames < IVF_THRESHOLD:
        return "Flat"
    nlist = int(min(65536, max(1024, 4 * np.sqrt(n_frames))))
    nlist = 1 << int(np.round(np.log2(nlist)))
    return f"IVF{nlist},SQfp16"


def default_nprobe(factory: str) -> int:
    return 64 if factory.startswith("IVF") else 1


def build_index(factory: str, dim: int, train: np.ndarray | None = None) -> Any:
    """An empty inner-product index of the given factory string, trained on ``train`` when it needs it."""
    faiss = _faiss()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise UsageError(f"bad --index-factory {factory!r}: {str(exc).splitlines()[0]}") from exc
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
        pass  # not an IVF index


def training_sample(shards: list[np.ndarray], factory: str, seed: int = 0) -> np.ndarray | None:
    """A seeded sample of up to 256 vectors per IVF list (what FAISS asks for), or None for flat indices."""
    if not factory.startswith("IVF"):
        return None
    nlist = int(factory[3:].split(",")[0].split("_")[0])
    total = sum(len(s) for s in shards)
    want = min(total, 256 * nlist)
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
