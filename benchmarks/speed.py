"""Speed benchmarks: query latency (FAISS alone, whole query, exact path) and indexing throughput.

Every figure comes with a baseline measured in the same run (a float32 brute-force scan for queries, the
model alone for indexing), so ratios stay meaningful on a busy machine. Nothing here asserts a time.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.audio.decode import decode_stream
from songseek.engine.audio.windowing import iter_windows
from songseek.engine.encoders import Encoder, EncoderInfo, l2_normalize
from songseek.engine.errors import UsageError
from songseek.engine.query.candidates import ExactPolicy
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage import index as faiss_index
from songseek.indexers.pipeline import IndexConfig, index_paths
from songseek.indexers.sources import scan

# Queries in the style of music captions, for timing the text encoder (content does not matter).
CAPTIONS = (
    "a calm solo piano piece with soft reverb", "upbeat electronic dance track with a heavy kick drum",
    "female vocalist singing over acoustic guitar", "aggressive metal riff with double bass drums",
    "jazz trio with walking bass and brushed drums", "orchestral film score with swelling strings",
    "lo-fi hip hop beat with vinyl crackle", "a children's choir singing a christmas carol",
    "reggae groove with offbeat guitar skanks", "ambient drone with slowly evolving synth pads",
    "a trumpet solo over a latin percussion section", "sad ballad with cello and male vocals",
)


# -- pure helpers (tested against naive references) ------------------------------------------------

@dataclass(frozen=True)
class Agreement:
    """How often the approximate path's top-k tracks match the exact path's (fractions of queries)."""

    queries: int
    k: int
    identical: float   # same tracks in the same order
    same_set: float    # same tracks, any order
    overlap: float     # mean |approx ∩ exact| / |exact|


def topk_agreement(approx: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int = 10) -> Agreement:
    """Compare two lists (one per query) of ranked track ids, truncated to ``k``."""
    if len(approx) != len(exact):
        raise UsageError(f"topk_agreement: {len(approx)} approximate vs {len(exact)} exact result lists")
    if not exact:
        return Agreement(0, k, float("nan"), float("nan"), float("nan"))
    ident = same = over = 0.0
    for a, e in zip(approx, exact):
        a, e = list(a)[:k], list(e)[:k]
        ident += a == e
        same += set(a) == set(e)
        over += len(set(a) & set(e)) / len(e) if e else 1.0
    n = len(exact)
    return Agreement(n, k, ident / n, same / n, over / n)


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / |exact| for int (nq, k) row ids; -1 entries are padding."""
    approx_rows, exact_rows = np.atleast_2d(approx_rows), np.atleast_2d(exact_rows)
    if approx_rows.shape[0] != exact_rows.shape[0]:
        raise UsageError(f"recall_at_k: {approx_rows.shape[0]} vs {exact_rows.shape[0]} queries")
    total = 0.0
    for a, e in zip(approx_rows, exact_rows):
        e_set = set(e[e >= 0].tolist())
        total += len(e_set & set(a[a >= 0].tolist())) / len(e_set) if e_set else 1.0
    return total / max(len(exact_rows), 1)


@dataclass(frozen=True)
class Latency:
    """One path's per-query latency in milliseconds, and the memory it searches (MiB)."""

    name: str
    what: str
    p50_ms: float
    p95_ms: float
    mean_ms: float
    memory_mb: float
    vs_baseline: float  # p50 / the baseline's p50 (same run)


def latency(name: str, what: str, seconds: Sequence[float], memory_bytes: float, baseline_p50_ms: float
            ) -> Latency:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50 = float(np.percentile(ms, 50))
    return Latency(name, what, p50, float(np.percentile(ms, 95)), float(ms.mean()), memory_bytes / 2**20,
                   p50 / baseline_p50_ms if baseline_p50_ms > 0 else float("nan"))


def _timed(fn: Callable[[np.ndarray], Any], queries: np.ndarray, warmup: int) -> tuple[list[float], list[Any]]:
    for q in queries[:warmup]:
        fn(q)
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t)
    return times, out


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- query speed ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuerySpeedReport:
    """`songseek bench query-speed` for one library: latencies, agreement with the exact path, setup."""

    library: str
    frames: int
    tracks: int
    dim: int
    index: str
    nprobe: int
    k: int
    candidates: int
    queries: int
    faiss_threads: int         # OpenMP threads of each query's scans (engine.storage.index.get_query_threads())
    load_avg: float            # 1-minute load average when the run started (other work on the machine)
    latencies: tuple[Latency, ...]
    agreement: Agreement       # top-k tracks of the default path vs the exact path
    frame_recall_at_100: float  # FAISS top-100 frames vs float32 brute force
    exact_setup_s: float       # one-off: the int8 copy the exact path scans (0 when not needed)
    rss_peak_mb: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def queries_from_library(lib: Library, n: int, cosine: float = 0.5, seed: int = 0) -> np.ndarray:
    """float32 (n, dim) unit queries at ``cosine`` with random frames of ``lib`` (for libraries without
    a generator of their own)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(lib.store.n_rows, size=n, replace=n > lib.store.n_rows))
    base = l2_normalize(_rows(lib, rows))
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise = l2_normalize(noise - (noise * base).sum(1, keepdims=True) * base)
    return l2_normalize(cosine * base + np.sqrt(1 - cosine**2) * noise)[rng.permutation(n)]


def _rows(lib: Library, rows: np.ndarray) -> np.ndarray:
    offsets = lib.store.offsets
    shard = np.searchsorted(offsets, rows, side="right") - 1
    return np.stack([lib.store.shards()[s][r - offsets[s]] for s, r in zip(shard, rows)])


def brute_force_topk(shards: Sequence[np.ndarray], q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 brute force over every shard with FAISS's flat kernel (what IndexFlatIP does, no copy):
    q float32 (dim,) → (scores float32 (k,), global rows int64 (k,)), best first."""
    import faiss

    scores, rows, offset = [], [], 0
    for vecs in shards:
        if len(vecs):
            with faiss_index.query_threads():  # the same threads as the engine's own scans
                d, i = faiss.knn(q[None], vecs, min(k, len(vecs)), metric=faiss.METRIC_INNER_PRODUCT)
            scores.append(d[0])
            rows.append(i[0] + offset)
        offset += len(vecs)
    s, r = np.concatenate(scores), np.concatenate(rows)
    order = np.lexsort((r, -s))[:k]
    return s[order], r[order]


def run_query_speed(library: Path, queries: np.ndarray, *, k: int = 10, candidates: int = 200,
                    nprobe: int | None = None, warmup: int = 3, faiss_threads: int | None = None,
                    policy: ExactPolicy = ExactPolicy()) -> QuerySpeedReport:
    """Time each stage of a query over ``queries`` (float32 (nq, dim)) on an existing library.
    ``faiss_threads`` overrides engine.storage.index.get_query_threads() for the run (0: FAISS's default)."""
    before = faiss_index.set_query_threads(faiss_threads) if faiss_threads is not None else None
    try:
        return _run_query_speed(library, queries, k, candidates, nprobe, warmup, policy)
    finally:
        if before is not None:
            faiss_index.set_query_threads(before)


def _run_query_speed(library: Path, queries: np.ndarray, k: int, candidates: int, nprobe: int | None,
                     warmup: int, policy: ExactPolicy) -> QuerySpeedReport:
    import faiss

    load = os.getloadavg()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(library, policy=policy)
    queries = l2_normalize(np.asarray(queries, dtype=np.float32))
    if queries.ndim != 2 or queries.shape[1] != lib.manifest.dim or len(queries) == 0:
        raise UsageError(f"queries must be (n, {lib.manifest.dim}), got {queries.shape}")
    m = lib.manifest
    n, dim = lib.store.n_rows, m.dim
    opts = SearchOptions(k=k, candidates=candidates, nprobe=nprobe)
    exact_opts = SearchOptions(k=k, candidates=candidates, exact=True)
    want = max(candidates, k)
    kf = lib.first_frames(want)
    shards = lib.store.shards()
    vec_bytes = n * dim * 4

    # Baseline: float32 brute force (IndexFlatIP's kernel) for the same first FAISS call; ground truth.
    base_t, base_out = _timed(lambda q: brute_force_topk(shards, q, kf), queries, warmup)
    truth = np.stack([rows[:100] for _, rows in base_out])
    base_p50 = float(np.percentile(base_t, 50)) * 1e3
    rows_out: list[Latency] = [latency("baseline", "float32 brute force over all frames, top kf frames",
                                       base_t, vec_bytes, base_p50)]

    index = lib.index
    index_bytes = (lib.root / m.index_file).stat().st_size if m.index_file else 0
    desc = m.index_description or "none"
    probe = nprobe or lib.default_nprobe()
    recall = float("nan")
    if index is not None:
        faiss_index.set_nprobe(index, probe)
        t, _ = _timed(lambda q: faiss_index.search(index, q[None], kf), queries, warmup)
        # nprobe means nothing to an index without inverted lists (`info` says so): Flat compares every frame
        how = f" (nprobe {probe})" if faiss_index.ivf_nlist(desc) else " (exact)" if desc == "Flat" else ""
        rows_out.append(latency("faiss", f"{desc}{how}, top {kf} frames", t, index_bytes, base_p50))
        approx = np.stack([faiss_index.search(index, q[None], 100)[1][0] for q in queries])
        recall = recall_at_k(approx, truth)
    t, cands = _timed(lambda q: lib.candidates(q, opts, None), queries, warmup)
    rows_out.append(latency("candidates", f"FAISS + group frames into the best {want} tracks", t, index_bytes,
                            base_p50))
    pairs = list(zip(queries, cands))
    t_rr: list[float] = []
    touched = 0
    for i, (q, (rows, scores)) in enumerate(pairs[:warmup] + pairs):
        t0 = time.perf_counter()
        lib.rerank(q, rows, scores, opts)
        if i >= warmup:
            t_rr.append(time.perf_counter() - t0)
            touched += int(lib.track_column("frame_count")[rows].sum())
    frame_bytes = touched / max(len(queries), 1) * dim * 4
    rows_out.append(latency("fusion", f"rerank {want} candidate tracks (all their frames, "
                                      f"{opts.rerank or lib.rerank_settings().mode})",
                            t_rr, frame_bytes, base_p50))
    t, approx_hits = _timed(lambda q: lib.search_vectors(q[None], opts)[0], queries, warmup)
    rows_out.append(latency("query", "whole query: candidates + fusion + hits", t, index_bytes + frame_bytes,
                            base_p50))

    setup = 0.0
    exact_bytes = float(vec_bytes)
    if desc != "Flat" and n > lib.policy.fp32_frames:
        t0 = time.perf_counter()
        scanner = lib.int8_scanner()
        setup = time.perf_counter() - t0
        if scanner is not None:
            exact_bytes += scanner.nbytes
            t, _ = _timed(lambda q: scanner.scores(q), queries, warmup)
            rows_out.append(latency("int8-scan", "the exact path's int8 pass alone: every frame's score + bound",
                                    t, scanner.nbytes, base_p50))
    elif desc == "Flat":
        exact_bytes = float(index_bytes)
    t, exact_hits = _timed(lambda q: lib.search_vectors(q[None], exact_opts)[0], queries, warmup)
    rows_out.append(latency("exact", "whole query on the exact path (--exact)", t, exact_bytes, base_p50))
    agree = topk_agreement([[h.track_id for h in hs] for hs in approx_hits],
                           [[h.track_id for h in hs] for hs in exact_hits], k)
    return QuerySpeedReport(
        library=str(library), frames=n, tracks=lib.n_tracks, dim=dim, index=desc,
        nprobe=probe if faiss_index.ivf_nlist(desc) else 0, k=k, candidates=candidates, queries=len(queries),
        faiss_threads=faiss_index.get_query_threads() or int(faiss.omp_get_max_threads()), load_avg=load,
        latencies=tuple(rows_out),
        agreement=agree, frame_recall_at_100=recall, exact_setup_s=setup, rss_peak_mb=rss_peak_mb())


def text_encode_latency(encoder: Encoder, repeats: int = 2, baseline_p50_ms: float = 0.0) -> Latency:
    """Per-query text embedding time (one caption per call), reported apart from the search."""
    encoder.embed_text([CAPTIONS[0]])  # warm-up
    times = []
    for _ in range(repeats):
        for text in CAPTIONS:
            t = time.perf_counter()
            encoder.embed_text([text])
            times.append(time.perf_counter() - t)
    return latency("text-encode", f"{encoder.info.name} text encoder, one caption", times, 0.0, baseline_p50_ms)


# -- index speed ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexRun:
    """What an index-speed run indexed, and with what (the first fields of both index-speed reports)."""

    files: int
    windows: int
    audio_s: float
    encoder: str
    random_weights: bool
    batch_size: int
    workers: int                 # decode threads of the threaded pipeline

    def title(self) -> str:
        """The start of the report table's title."""
        return (f"{self.files} files, {self.windows} windows, {self.audio_s / 3600:.3f} h audio; {self.encoder}"
                + (" (random weights)" if self.random_weights else "") + f", batch {self.batch_size}")


@dataclass(frozen=True)
class IndexSpeedReport(IndexRun):
    """`songseek bench index-speed`: the same windows through the whole indexer and through the model alone."""

    torch_threads: int
    end_to_end_s: float
    end_to_end_windows_per_s: float
    model_in_pipeline_s: float      # time the indexer spent inside the model
    pipeline_batches: int           # model calls the indexer made (model-only: ceil(windows / batch_size))
    model_only_s: float
    model_only_windows_per_s: float
    decode_only_s: float            # decoding + resampling + windowing alone, one thread
    decode_windows_per_s: float
    ratio: float                    # end-to-end / model-only windows per second (target ≥ 0.9 on CPU)
    repeats: int                    # alternating runs of each; every time above is the best of them
    load_avg: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _CountingEncoder:
    """Forwards to an encoder and records the size of every audio batch it is given."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.batches: list[int] = []

    @property
    def info(self) -> EncoderInfo:
        return self.encoder.info

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        self.batches.append(len(windows))
        return self.encoder.embed_audio(windows)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.encoder.embed_text(texts)


def decode_all(paths: Sequence[Path], sample_rate: int, window_s: float, hop_s: float) -> np.ndarray:
    """Every window of every file, float32 (n, window samples), as the indexer cuts them."""
    wins = [w for p in paths for w, _, _ in iter_windows(decode_stream(p, sample_rate), sample_rate, window_s,
                                                          hop_s)]
    if not wins:
        raise UsageError("no audio windows decoded from the files given")
    return np.stack(wins)


def run_index_speed(sources: Sequence[Path], encoder: Encoder, *, batch_size: int = 16, workers: int = 2,
                    window_s: float = 10.0, hop_s: float | None = None, work: Path | None = None,
                    repeats: int = 1) -> IndexSpeedReport:
    """Index ``sources`` into a fresh library (end to end) and run the model alone on the same windows,
    alternating ``repeats`` times; each figure is the best of its repeats (as timeit does: the least
    disturbed run by other work on the machine)."""
    if repeats < 1:
        raise UsageError(f"repeats must be at least 1 (got {repeats})")
    load = os.getloadavg()[0]
    hop = hop_s or window_s
    files = [f.path for f in scan(list(sources)).files]
    if not files:
        raise UsageError(f"no audio files under {', '.join(map(str, sources))}")
    sr = encoder.info.sample_rate
    n_warm = min(batch_size, 2)
    encoder.embed_audio(np.zeros((n_warm, int(round(window_s * sr))), np.float32))  # warm-up, not timed
    config = IndexConfig(window_s=window_s, hop_s=hop, batch_size=batch_size, workers=workers,
                         index_factory="Flat")
    t0 = time.perf_counter()
    windows = decode_all(files, sr, window_s, hop)
    dec = time.perf_counter() - t0
    e2e = model = model_in = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(windows), batch_size):
            encoder.embed_audio(windows[i:i + batch_size])
        model = min(model, time.perf_counter() - t0)
        with tempfile.TemporaryDirectory(dir=work, prefix="songseek-index-speed-") as tmp:
            counting = _CountingEncoder(encoder)
            t0 = time.perf_counter()
            report = index_paths(list(sources), Path(tmp) / "lib", counting, config)
            took = time.perf_counter() - t0
        if took < e2e:
            e2e, model_in = took, report.model_seconds
    try:
        import torch

        threads = int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a core dependency
        threads = 0
    n = len(windows)
    e2e_wps = report.windows / e2e if e2e > 0 else float("nan")
    model_wps = n / model if model > 0 else float("nan")
    return IndexSpeedReport(
        files=len(files), windows=report.windows, audio_s=report.audio_s, encoder=encoder.info.name,
        random_weights=encoder.info.random_weights, batch_size=batch_size, workers=workers,
        torch_threads=threads, end_to_end_s=e2e, end_to_end_windows_per_s=e2e_wps,
        model_in_pipeline_s=model_in, pipeline_batches=len(counting.batches),
        model_only_s=model, model_only_windows_per_s=model_wps,
        decode_only_s=dec, decode_windows_per_s=n / dec if dec > 0 else float("nan"),
        ratio=e2e_wps / model_wps, repeats=repeats, load_avg=load)
