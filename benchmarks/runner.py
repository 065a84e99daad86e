"""Retrieval benchmark runs through the real engine, so what is measured is what users get.

text→audio: every query goes through ``Library.search_vectors`` (a text past the encoder's token limit
through ``Library.search``, which scores its sentence chunks, as `songseek search` does) once per rerank
mode. A query's first rank is the engine's rank of its best-ranked relevant track; ties keep the engine's
order (score, then track id). :class:`SearchPlan` says how ranks are obtained:

* exhaustive (default up to ``EXHAUSTIVE_MAX`` tracks): every track is a candidate and is reranked, so
  ranks are exact. The engine is asked for the top ``max(ks)`` tracks; a query whose relevant track is
  not among them is searched again for the full ranking.
* ``candidates=N``: what a user with ``--candidates N`` gets; a query whose relevant tracks are not in the
  returned list gets the worst rank (the number of tracks) and counts as a miss (reported per mode).

audio→text: each track (or the dataset segment of it) scores every caption with the same rerank rule
over its windows (``none`` → max, what the engine's first stage uses); relevant captions are the item's
own; ties pessimistic (benchmarks/metrics.py). mAP@10 divides by the number of relevant items
(``n_relevant``) in both directions.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.encoders import Encoder
from songseek.engine.errors import UsageError
from songseek.engine.hashing import file_sha256
from songseek.engine.progress import NullProgress, Progress
from songseek.engine.query import longtext
from songseek.engine.query.fusion import RERANK_MODES, FusionParams, rerank_scores
from songseek.engine.query.kind import Kind, resolve_mode, shared_kind
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.version import __version__
from songseek.indexers.pipeline import IndexConfig, index_paths

from .datasets import QuerySet, RetrievalDataset, Subset, dataset_hash
from .metrics import (
    DEFAULT_KS,
    Groups,
    average_precision_at_k,
    cluster_weights,
    first_ranks_from_lists,
    metrics_ci,
    per_query_values,
    ranked_relevance_from_lists,
    retrieval_metrics,
    retrieval_metrics_from_scores,
    segment_iou,
    weighted_statistic,
)
from .report import ModeResult, jsonable

EXHAUSTIVE_MAX = 20_000
MAP_K = 10
BLOCK = 32  # queries per search call (progress granularity, unit of work for worker processes)
PROTOCOL = {
    "ties_text_to_audio": "engine order (score, then track id)",
    "ties_audio_to_text": "pessimistic",
    "ap_normalize": "n_relevant",
    "medr": "numpy.median of 1-based first ranks",
    "recall": "fraction of queries with a relevant item in the top K",
}


# ------------------------------------------------------------------------------------------ run object
@dataclass(frozen=True)
class RetrievalRun:
    """direction → rerank mode → ModeResult, the exact settings, and optional extra JSON sections.

    ``primary`` names the direction whose modes sit at the top level of :meth:`to_json` (the contract
    of `songseek bench retrieval --json`); the other directions are nested under their names."""

    results: dict[str, dict[str, ModeResult]]
    settings: dict[str, Any] = field(default_factory=dict)
    primary: str | None = "text_to_audio"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{mode: metrics, ..., other_direction: {mode: metrics}, **extra, "settings": {...}}``. A mode's
        object is metric → number, plus ``"ci": {metric: [lo, hi]}`` when intervals were asked for."""
        out: dict[str, Any] = {}
        for direction, modes in self.results.items():
            block = {mode: mode_json(r) for mode, r in modes.items()}
            if direction == self.primary:
                out.update(block)
            else:
                out[direction] = block
        out.update(jsonable(self.extra, "extra"))
        out["settings"] = jsonable(self.settings)
        return out


def mode_json(r: ModeResult) -> dict[str, Any]:
    out: dict[str, Any] = {k: jsonable(float(v)) for k, v in r.metrics.items()}
    if r.ci:
        out["ci"] = {k: [jsonable(float(lo)), jsonable(float(hi))] for k, (lo, hi) in r.ci.items()}
    return out


# ------------------------------------------------------------------------------------------ search plan
@dataclass(frozen=True)
class SearchPlan:
    """How the engine is asked: ``k`` hits per query, ``candidates`` tracks reranked, ``exact`` first
    stage, ``full_k`` (> k: ask again for the full ranking when no relevant track is in the top k)."""

    k: int
    candidates: int
    exact: bool
    full_k: int
    exhaustive: bool

    def describe(self) -> str:
        if self.exhaustive:
            return "exhaustive: every track reranked, exact ranks"
        return f"candidates={self.candidates}: relevant tracks outside the top {self.k} get the worst rank (misses)"


def search_plan(n_tracks: int, ks: Sequence[int] = DEFAULT_KS, candidates: int | None = None) -> SearchPlan:
    """``candidates`` None: exhaustive up to EXHAUSTIVE_MAX tracks, else 200; 0: exhaustive; N: N."""
    if candidates is not None and candidates < 0:
        raise UsageError(f"--candidates must be >= 0 (0 = every track), got {candidates}")
    depth = min(max(max(ks), MAP_K), max(n_tracks, 1))
    if candidates is None:
        candidates = 0 if n_tracks <= EXHAUSTIVE_MAX else 200
    if candidates == 0 or candidates >= n_tracks:
        return SearchPlan(depth, max(n_tracks, 1), True, n_tracks, True)
    return SearchPlan(depth, max(candidates, depth), False, 0, False)


# ------------------------------------------------------------------------------------------ text → audio
@dataclass(frozen=True)
class QueryRanks:
    """Per-query outcome of one rerank mode, all (Q,): ``ranks`` int64 1-based first rank (misses: the
    number of tracks), ``found`` bool (a relevant track was returned), ``ap`` float64 AP@10,
    ``seg_start_s``/``seg_end_s`` float64 segment of the best-ranked relevant track (NaN: not returned)."""

    ranks: np.ndarray
    found: np.ndarray
    ap: np.ndarray
    seg_start_s: np.ndarray
    seg_end_s: np.ndarray

    def select(self, sel: np.ndarray) -> QueryRanks:
        return QueryRanks(self.ranks[sel], self.found[sel], self.ap[sel], self.seg_start_s[sel], self.seg_end_s[sel])


_Block = tuple[list[list[str]], np.ndarray]  # ranked id lists (cut after the first relevant), segments (q, 2)


def _rank_block(lib: Library, vectors: np.ndarray, relevant: Sequence[frozenset[str]], mode: str,
                fusion: FusionParams, plan: SearchPlan, texts: Sequence[str | None] | None = None,
                kinds: Sequence[Kind] | None = None) -> _Block:
    """Search one block of queries; keep each ranked list up to max(10, first relevant position).
    ``kinds``: what each query describes (engine/query/kind.py), for the ``auto`` rerank."""
    opts = SearchOptions(k=plan.k, rerank=mode, candidates=plan.candidates, fusion=fusion, exact=plan.exact)

    def ask(qi: int, o: SearchOptions) -> list[Any]:
        text = texts[qi] if texts is not None else None
        if text is not None:  # a long text: the engine scores its sentence chunks (kind not known...
            kind = None if kinds is None else kinds[qi]  # ...unless the query file states it)
            return lib.search(text, options=replace(o, rerank=resolve_mode(o.rerank or "auto", kind)))
        return lib.search_vectors(vectors[qi : qi + 1], o, None if kinds is None else [kinds[qi]])[0]

    short = [qi for qi in range(len(relevant)) if texts is None or texts[qi] is None]
    short_kinds = None if kinds is None else [kinds[qi] for qi in short]
    batch = dict(zip(short, lib.search_vectors(vectors[short], opts, short_kinds))) if short else {}
    lists: list[list[str]] = []
    seg = np.full((len(relevant), 2), np.nan)
    for qi, rel in enumerate(relevant):
        hits = batch[qi] if qi in batch else ask(qi, opts)
        pos = next((i for i, h in enumerate(hits) if h.track_id in rel), None)
        if pos is None and plan.full_k > plan.k:
            hits = ask(qi, replace(opts, k=plan.full_k))
            pos = next((i for i, h in enumerate(hits) if h.track_id in rel), None)
        if pos is not None:
            seg[qi] = (hits[pos].segment.start_s, hits[pos].segment.end_s)
        lists.append([h.track_id for h in hits[: max(MAP_K, (pos or 0) + 1)]])
    return lists, seg


_WORKER_LIBS: dict[str, Library] = {}


def _worker_block(root: str, vectors: np.ndarray, relevant: list[frozenset[str]], mode: str,
                  fusion: FusionParams, plan: SearchPlan, kinds: Sequence[Kind] | None = None) -> _Block:
    """Process-pool entry point: open the library once per process, search one block."""
    if root not in _WORKER_LIBS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _WORKER_LIBS[root] = Library.open(root)
    return _rank_block(_WORKER_LIBS[root], vectors, relevant, mode, fusion, plan, kinds=kinds)


@contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned workers inherit the environment: one BLAS/OpenMP thread each (the pool is the parallelism)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for n, v in old.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def rank_queries(lib: Library, vectors: np.ndarray, relevant: Sequence[Sequence[str]], modes: Sequence[str],
                 fusion: FusionParams, plan: SearchPlan, texts: Sequence[str | None] | None = None,
                 workers: int = 1, progress: Progress | None = None, kinds: Sequence[Kind] | None = None
                 ) -> dict[str, QueryRanks]:
    """Run every query (float32 (Q, dim) ``vectors``; ``texts[q]`` set for long texts the engine chunks;
    ``kinds[q]`` what a text says it describes, engine/query/kind.py: None = not known)
    through the engine with each mode. ``relevant[q]``: track ids that count (each must be in ``lib``).
    ``workers`` > 1 searches blocks of vector queries in that many processes (same results)."""
    bad = [m for m in modes if m not in RERANK_MODES]
    if bad or not modes:
        raise UsageError(f"rerank modes are {', '.join(RERANK_MODES)} (got {list(modes)})")
    rel = [frozenset(r) for r in relevant]
    nq = len(rel)
    progress = progress or NullProgress()
    blocks = [(lo, min(lo + BLOCK, nq)) for lo in range(0, nq, BLOCK)]
    results: dict[tuple[str, int], _Block] = {}
    progress.start(nq * len(modes), "queries")
    try:
        if workers > 1 and (texts is None or all(t is None for t in texts)) and len(blocks) > 1:
            import multiprocessing

            with _single_threaded_children(), ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_worker_block, str(lib.root), vectors[lo:hi], rel[lo:hi], mode, fusion,
                                       plan, None if kinds is None else kinds[lo:hi]): (mode, lo, hi)
                           for mode in modes for lo, hi in blocks}
                for fut in _as_completed(futures):
                    mode, lo, hi = futures[fut]
                    results[(mode, lo)] = fut.result()
                    progress.advance(files=hi - lo)
        else:
            for mode in modes:
                for lo, hi in blocks:
                    sub = None if texts is None else texts[lo:hi]
                    sub_kinds = None if kinds is None else kinds[lo:hi]
                    results[(mode, lo)] = _rank_block(lib, vectors[lo:hi], rel[lo:hi], mode, fusion, plan, sub,
                                                      sub_kinds)
                    progress.advance(files=hi - lo)
    finally:
        progress.close()
    out = {}
    for mode in modes:
        lists = [ids for lo, _ in blocks for ids in results[(mode, lo)][0]]
        seg = np.concatenate([results[(mode, lo)][1] for lo, _ in blocks]) if blocks else np.zeros((0, 2))
        ranks, found = first_ranks_from_lists(lists, rel, n_candidates=max(lib.n_tracks, 1))
        top, n_rel = ranked_relevance_from_lists(lists, rel, depth=MAP_K)
        ap = average_precision_at_k(top, n_rel, k=MAP_K, normalize="n_relevant")
        out[mode] = QueryRanks(ranks, found, ap, seg[:, 0], seg[:, 1])
    return out


def _as_completed(futures: dict[Any, Any]) -> Iterator[Any]:
    from concurrent.futures import as_completed

    return as_completed(futures)


def mode_result(qr: QueryRanks, n_candidates: int, ks: Sequence[int] = DEFAULT_KS,
                spans: np.ndarray | None = None, ci: bool = False,
                groups: Groups | None = None) -> ModeResult:
    """Metrics of one mode: R@K, mAP@10, MedR, MeanR; with ``spans`` float64 (Q, 2) (true start/end
    seconds; NaN rows: no span, left out of the IoU figures) also ``IoU>=0.5`` (share of queries whose
    segment for the relevant track has IoU >= 0.5 with the span, wherever the track ranks), ``mIoU`` and
    ``R@1&IoU>=0.5`` (ranked first *and* IoU >= 0.5). A query with a span whose relevant track was not
    returned (a miss under ``--candidates N``) has no segment: it stays in the denominators with IoU 0.
    ``groups`` (Q,): the bootstrap's unit (metrics_ci); None: each query on its own."""
    metrics = retrieval_metrics(qr.ranks, ks, MAP_K, qr.ap)
    has = np.zeros(len(qr.ranks), bool) if spans is None else np.isfinite(spans).all(axis=1)
    if has.any():
        assert spans is not None
        ok = has & np.isfinite(qr.seg_start_s)  # a span but no segment: IoU stays 0
        iou = np.zeros(len(qr.ranks))
        iou[ok] = segment_iou(qr.seg_start_s[ok], qr.seg_end_s[ok], spans[ok, 0], spans[ok, 1])
        metrics["IoU>=0.5"] = float(np.mean(iou[has] >= 0.5))
        metrics["mIoU"] = float(np.mean(iou[has]))
        metrics["R@1&IoU>=0.5"] = float(np.mean((iou[has] >= 0.5) & (qr.ranks[has] == 1)))
    intervals = metrics_ci(per_query_values(qr.ranks, ks, MAP_K, qr.ap), groups=groups) if ci else None
    return ModeResult(metrics, qr.ranks, intervals, n_queries=len(qr.ranks), n_candidates=n_candidates)


def track_groups(relevant: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """The bootstrap unit of text→audio queries: queries with the same relevant tracks form one cluster
    (a track's several captions succeed or fail together, so drawing them apart narrows the interval)."""
    return [tuple(sorted(set(r))) for r in relevant]


def text_to_audio(lib: Library, vectors: np.ndarray, relevant: Sequence[Sequence[str]], modes: Sequence[str],
                  fusion: FusionParams, ks: Sequence[int] = DEFAULT_KS, plan: SearchPlan | None = None,
                  spans: np.ndarray | None = None, texts: Sequence[str | None] | None = None, ci: bool = False,
                  workers: int = 1, progress: Progress | None = None, kinds: Sequence[Kind] | None = None
                  ) -> tuple[dict[str, ModeResult], dict[str, int]]:
    """(mode → ModeResult, mode → misses) for float32 (Q, dim) query vectors and relevant track ids."""
    plan = plan or search_plan(lib.n_tracks, ks)
    ranked = rank_queries(lib, vectors, relevant, modes, fusion, plan, texts, workers, progress, kinds)
    groups = track_groups(relevant)
    results = {m: mode_result(qr, lib.n_tracks, ks, spans, ci, groups) for m, qr in ranked.items()}
    return results, {m: int((~qr.found).sum()) for m, qr in ranked.items()}


# ------------------------------------------------------------------------------------------ audio → text
AudioQuery = tuple[str, tuple[float, float] | None]


def _query_windows(lib: Library, queries: Sequence[AudioQuery]) -> Iterator[tuple[int, int, np.ndarray]]:
    """Per audio query: (first frame row, frame count, bool (count,) windows that overlap its span by more
    than 0 s; all True without a span). Raises UsageError for a track id the library lacks."""
    cols = {c: lib.tracks.column(c).to_numpy(zero_copy_only=False) for c in ("track_id", "frame_start", "frame_count")}
    row_of = {str(t): i for i, t in enumerate(cols["track_id"])}
    for qi, (tid, span) in enumerate(queries):
        if tid not in row_of:
            raise UsageError(f"audio→text query {qi}: track {tid!r} is not in {lib.root}")
        r = row_of[tid]
        start, count = int(cols["frame_start"][r]), int(cols["frame_count"][r])
        if span is None:
            yield start, count, np.ones(count, dtype=bool)
            continue
        s, e = lib.store.start_s[start : start + count], lib.store.end_s[start : start + count]
        yield start, count, (np.minimum(e, span[1]) - np.maximum(s, span[0])) > 0


def spans_without_windows(lib: Library, queries: Sequence[AudioQuery]) -> int:
    """How many audio queries have a span that overlaps none of their track's windows (scored as misses
    by :func:`audio_to_text`)."""
    return sum(not inside.any() for _, _, inside in _query_windows(lib, queries))


def audio_to_text(lib: Library, caption_vectors: np.ndarray, queries: Sequence[AudioQuery],
                  relevant: Sequence[Sequence[int]], modes: Sequence[str], fusion: FusionParams,
                  ks: Sequence[int] = DEFAULT_KS, ci: bool = False, caption_kind: Kind = None
                  ) -> dict[str, ModeResult]:
    """Rank captions (float32 (C, dim)) for each audio query (track id, optional (start_s, end_s): only
    the windows overlapping it); ``relevant[q]`` = indices of its captions. One (Q, C) score matrix per
    mode goes to ``retrieval_metrics_from_scores`` (pessimistic ties, AP over n_relevant). A query whose
    span overlaps none of its track's windows (e.g. it lies past the end of the audio) has nothing to be
    scored with: every caption scores 0, so pessimistic ties give it the worst rank, a miss; count them
    with :func:`spans_without_windows` (the whole track is *not* scored in its place).
    ``caption_kind``: what every caption describes when they share one form (``shared_kind``); ``auto``
    runs that mode (a track's windows against captions of a moment: part; of the whole track: whole)."""
    caps = np.asarray(caption_vectors, dtype=np.float32)
    scores = {m: np.zeros((len(queries), len(caps)), np.float32) for m in modes}
    for qi, (start, count, inside) in enumerate(_query_windows(lib, queries)):
        if not inside.any():  # the span is outside the indexed audio: equal scores, the worst rank (a miss)
            continue
        frames = lib.store.vectors(start, count)[inside]
        sims = np.ascontiguousarray((frames @ caps.T).T)  # (C, T)
        lengths = np.full(len(caps), sims.shape[1], dtype=np.int64)
        for m in modes:
            mode = resolve_mode("max" if m == "none" else m, caption_kind)
            scores[m][qi] = rerank_scores(mode, sims, lengths, fusion).score
    out = {}
    for m in modes:
        metrics, ranks, ap = retrieval_metrics_from_scores(scores[m], relevant, ks, MAP_K)
        # one cluster per track: several items (spans) of one recording are drawn together
        intervals = metrics_ci(per_query_values(ranks, ks, MAP_K, ap), groups=[t for t, _ in queries]) if ci else None
        out[m] = ModeResult(metrics, ranks, intervals, n_queries=len(ranks), n_candidates=len(caps))
    return out


# ------------------------------------------------------------------------------------------ entry points
def library_settings(lib: Library) -> dict[str, Any]:
    m = lib.manifest
    return {"songseek_version": __version__, "library": str(lib.root), "encoder": m.encoder.name,
            "checkpoint": m.encoder.checkpoint, "checkpoint_sha256": m.encoder.checkpoint_sha256,
            "random_weights": m.encoder.random_weights, "window_s": m.window_s, "hop_s": m.hop_s,
            "index": m.index_description, "tracks": lib.n_tracks, "frames": int(lib.store.n_rows)}


CI_QUERIES = ("tracks: the query file's rows are drawn in clusters, one per set of relevant tracks (rows "
              "about the same tracks together)")
CI_DATASET = ("tracks: text_to_audio draws each track with all of its captions, audio_to_text each track "
              "with all of its items")


def run_settings(modes: Sequence[str], fusion: FusionParams, ks: Sequence[int], ci: bool,
                 plan: SearchPlan | None, ci_unit: str = "queries") -> dict[str, Any]:
    """The evaluation settings every run records: modes, fusion parameters, cut-offs, search plan,
    intervals (``ci_unit``: what one bootstrap draw is) and the tie/AP/MedR conventions."""
    out: dict[str, Any] = {"modes": list(modes), "fusion": fusion, "ks": list(ks), "map_k": MAP_K}
    if plan is not None:
        out.update(search=plan.describe(), candidates=plan.candidates)
    out["ci"] = f"95% percentile bootstrap, 1000 resamples, seed 0, over {ci_unit}" if ci else None
    return {**out, **PROTOCOL}


def subset_queries(queries: QuerySet, n: int, seed: int = 0) -> QuerySet:
    """n queries sampled without replacement (``default_rng(seed)``) from the queries sorted by id; file
    order kept. n >= len keeps every query (as datasets.subset does for items). ``subset`` records n, the
    seed and the population; evaluate_queries writes it to the settings."""
    if n < 1:
        raise UsageError(f"subset size must be >= 1, got {n}")
    drawn = Subset(requested=n, size=min(n, len(queries)), seed=seed, population=len(queries))
    if n >= len(queries):
        return replace(queries, subset=drawn)
    order = sorted(range(len(queries)), key=lambda i: queries.queries[i].query_id)
    picked = sorted(order[int(j)] for j in np.random.default_rng(seed).choice(len(order), size=n, replace=False))
    return replace(queries, queries=tuple(queries.queries[i] for i in picked), subset=drawn)


def _embed_texts(lib: Library, texts: list[str]) -> tuple[np.ndarray, list[str | None], list[Kind]]:
    """(float32 (Q, dim) query vectors, per query the text when the engine must score it as chunks, per
    query its kind as the engine reads it: engine/query/kind.py, None for a chunked text)."""
    for t in texts:
        if not t or not t.strip():
            raise UsageError("a text query is empty: every query needs a description")
    chunked = longtext.embed_chunked(lib.encoder, [t.strip() for t in texts])
    vecs = np.stack([c.mean_vector for c in chunked]).astype(np.float32)
    return vecs, [c.text if len(c.chunks) > 1 else None for c in chunked], [c.kind for c in chunked]


@dataclass(frozen=True)
class PreparedQueries:
    """A query file made ready for the engine: float32 (Q, dim) vectors, relevant track ids per query,
    per query its text when the engine must score it as sentence chunks (else None), true spans float64
    (Q, 2) (NaN: none; None when no query has one) and how many relevant ids the library lacks (the first
    few of them in ``unknown_examples``, for the note that says so)."""

    vectors: np.ndarray
    relevant: list[list[str]]
    texts: list[str | None] | None
    spans: np.ndarray | None
    unknown_relevant: int
    kinds: list[Kind] | None = None
    unknown_examples: tuple[str, ...] = ()


def unknown_ids_note(unknown: int, examples: Sequence[str], library: str | Path) -> str | None:
    """One line for relevant ids of a query file that are not tracks of the library (None when all are):
    they are dropped, so each such query is scored on the ids that are (a typo would go unseen otherwise)."""
    if not unknown:
        return None
    return (f"{unknown} relevant id(s) of the queries are not tracks of {library} (first: {', '.join(examples)}) "
            "and were left out; ids are the library's track_id column (see `songseek sql`)")


def prepare_queries(lib: Library, queries: QuerySet) -> PreparedQueries:
    """Embed a query file once (text or vector queries, one kind per file); relevant ids not in the
    library are dropped, and a query left with none is an error."""
    qs = queries.queries
    n_text = sum(q.text is not None for q in qs)
    if n_text and n_text != len(qs):
        raise UsageError(f"{queries.path}: mix of text and vector queries; use one kind per file")
    known = set(lib.tracks.column("track_id").to_pylist())
    relevant, unknown = [], 0
    examples: list[str] = []
    for q in qs:
        ids = list(dict.fromkeys(q.relevant))
        rel = [t for t in ids if t in known]
        lacking = [t for t in ids if t not in known]
        unknown += len(lacking)
        examples += lacking[:3 - len(examples)]
        if not rel:
            raise UsageError(f"{queries.path}: query {q.query_id!r}: none of its relevant ids "
                             f"({', '.join(q.relevant[:3])}) is a track of {lib.root}; ids are the library's "
                             "track_id column (see `songseek sql`)")
        relevant.append(rel)
    texts: list[str | None] | None = None
    kinds: list[Kind] | None = None
    if n_text:
        vecs, texts, kinds = _embed_texts(lib, [q.text or "" for q in qs])
    else:
        vecs = np.stack([q.vector for q in qs if q.vector is not None]).astype(np.float32)
    if any(q.kind is not None for q in qs):  # the file's kind column states it: it wins over the form
        kinds = [q.kind if q.kind is not None else (kinds[i] if kinds else None) for i, q in enumerate(qs)]
    with_span = [q.start_s is not None and q.end_s is not None for q in qs]
    spans = (np.array([(q.start_s, q.end_s) if ok else (np.nan, np.nan) for q, ok in zip(qs, with_span)])
             if any(with_span) else None)
    return PreparedQueries(vecs, relevant, texts, spans, unknown, kinds, tuple(examples))


def evaluate_queries(lib: Library, queries: QuerySet, modes: Sequence[str], fusion: FusionParams | None = None,
                     ks: Sequence[int] = DEFAULT_KS, candidates: int | None = None, ci: bool = False,
                     workers: int = 1, progress: Progress | None = None) -> RetrievalRun:
    """`songseek bench retrieval --library LIB --queries FILE`: text or vector queries with relevant ids
    (text→audio only). Relevant ids not in the library are dropped (counted in settings); a query left
    with none is an error."""
    fusion = fusion or lib.rerank_settings().params  # what `songseek search` uses on this library
    t0 = time.perf_counter()
    qs = queries.queries
    prepared = prepare_queries(lib, queries)
    vecs, relevant, texts, spans, unknown = (prepared.vectors, prepared.relevant, prepared.texts,
                                             prepared.spans, prepared.unknown_relevant)
    n_text = sum(q.text is not None for q in qs)
    plan = search_plan(lib.n_tracks, ks, candidates)
    t2a, misses = text_to_audio(lib, vecs, relevant, modes, fusion, ks, plan, spans, texts, ci, workers, progress,
                                prepared.kinds)
    settings = {**library_settings(lib), "queries": str(queries.path), "queries_sha256": file_sha256(queries.path),
                "subset": queries.subset, "n_queries": len(qs), "query_kind": "text" if n_text else "vector",
                "long_texts": sum(t is not None for t in texts or []), "unknown_relevant_ids": unknown,
                "unknown_relevant_examples": list(prepared.unknown_examples),
                **run_settings(modes, fusion, ks, ci, plan, CI_QUERIES), "misses": {"text_to_audio": misses},
                "seconds": round(time.perf_counter() - t0, 3)}
    return RetrievalRun({"text_to_audio": t2a}, settings)


def library_track_ids(lib: Library) -> dict[str, str]:
    """Absolute path → track id, to map dataset items onto the library built from them."""
    return {str(Path(r["path"]).resolve()): r["track_id"] for r in lib.tracks.select(["path", "track_id"]).to_pylist()}


def evaluate_dataset(dataset: RetrievalDataset, library: Path, encoder: Encoder, modes: Sequence[str],
                     config: IndexConfig | None = None, fusion: FusionParams | None = None,
                     ks: Sequence[int] = DEFAULT_KS, candidates: int | None = None, ci: bool = False,
                     workers: int = 1, progress: Progress | None = None,
                     query_progress: Callable[[], Progress] | None = None,
                     fusion_changes: dict[str, Any] | None = None) -> RetrievalRun:
    """`songseek bench retrieval --dataset MANIFEST`: index the dataset's audio into ``library`` (only
    what is new), then text→audio over every caption and audio→text over every item. Without ``fusion``
    the rerank parameters are the library's (saved, or for its hop and window), with ``fusion_changes``
    (FusionParams fields) on top."""
    if not dataset.items:
        raise UsageError(f"{dataset.source}: no dataset item has its audio present ({len(dataset.missing)} missing)")
    t0 = time.perf_counter()
    files = sorted({it.audio_path.resolve() for it in dataset.items})
    report = index_paths(files, library, encoder, config or IndexConfig(), progress)
    with warnings.catch_warnings():  # random weights are recorded in settings["random_weights"]
        warnings.simplefilter("ignore")
        lib = Library.open(library, encoder=encoder)
    fusion = fusion or replace(lib.rerank_settings().params, **(fusion_changes or {}))
    ids = library_track_ids(lib)
    item_track = [ids.get(str(it.audio_path.resolve())) for it in dataset.items]
    kept = [i for i, t in enumerate(item_track) if t is not None]
    if not kept:
        raise UsageError(f"{dataset.source}: none of the dataset's audio could be indexed "
                         f"(see `songseek failures --library {library}`)")
    texts: list[str] = []
    owner_track: list[str] = []
    item_caps: list[list[int]] = []
    spans: list[tuple[float, float] | None] = []
    for i in kept:
        it = dataset.items[i]
        item_caps.append(list(range(len(texts), len(texts) + len(it.captions))))
        texts += list(it.captions)
        owner_track += [str(item_track[i])] * len(it.captions)
        span = (float(it.start_s), float(it.end_s)) if it.start_s is not None and it.end_s is not None else None
        spans += [span] * len(it.captions)
    vecs, long_texts, kinds = _embed_texts(lib, texts)
    plan = search_plan(lib.n_tracks, ks, candidates)
    span_arr = (np.array([s if s is not None else (np.nan, np.nan) for s in spans])
                if any(s is not None for s in spans) else None)
    t2a, misses = text_to_audio(lib, vecs, [[str(t)] for t in owner_track], modes, fusion, ks, plan, span_arr,
                                long_texts, ci, workers, query_progress() if query_progress else None, kinds)
    a2t_queries = [(str(item_track[i]), spans[item_caps[j][0]]) for j, i in enumerate(kept)]
    a2t = audio_to_text(lib, vecs, a2t_queries, item_caps, modes, fusion, ks, ci, shared_kind(kinds))
    settings = {**library_settings(lib), "dataset": dataset.name, "dataset_source": str(dataset.source),
                "dataset_hash": dataset_hash(dataset), "subset": dataset.subset, "items": len(dataset.items),
                "items_evaluated": len(kept),
                # library tracks no item names (a reused library): extra text→audio candidates
                "distractor_tracks": lib.n_tracks - len({item_track[i] for i in kept}),
                "clips_longer_than_30s": _long_trimmed_clips(lib, dataset, [str(item_track[i]) for i in kept]),
                "missing_audio": len(dataset.missing), "captions": len(texts),
                "long_texts": sum(t is not None for t in long_texts), "failed_to_index": report.failed,
                "index_run": report.summary(), **run_settings(modes, fusion, ks, ci, plan, CI_DATASET),
                "misses": {"text_to_audio": misses},
                "spans_without_windows": {"audio_to_text": spans_without_windows(lib, a2t_queries)},
                "seconds": round(time.perf_counter() - t0, 3)}
    return RetrievalRun({"text_to_audio": t2a, "audio_to_text": a2t}, settings)


def _long_trimmed_clips(lib: Library, dataset: RetrievalDataset, tracks: list[str]) -> int:
    """MusicCaps read as trimmed clips (no item has a span): how many of its files last over 30 s, i.e. are
    whole YouTube audio rather than the 10 s clip (then every item covers a whole song). 0 otherwise."""
    if not dataset.name.startswith("musiccaps") or any(it.start_s is not None for it in dataset.items):
        return 0
    durations = dict(zip(lib.tracks.column("track_id").to_pylist(), lib.track_column("duration_s").tolist()))
    return sum(durations.get(t, 0.0) > 30.0 for t in set(tracks))


def paired_difference(a: QueryRanks, b: QueryRanks, ks: Sequence[int] = DEFAULT_KS, n: int = 1000,
                      seed: int = 0, groups: Groups | None = None) -> dict[str, dict[str, Any]]:
    """Mode a minus mode b on the same queries: ``{metric: {"a", "b", "diff", "ci": [lo, hi]}}``, the
    interval a 95 % paired bootstrap (the same resampled draws for both modes; median for MedR), over
    ``groups`` (Q,) clusters when given (the tracks the queries are about), else over queries."""
    va = per_query_values(a.ranks, ks, MAP_K, a.ap)
    vb = per_query_values(b.ranks, ks, MAP_K, b.ap)
    w = cluster_weights(range(len(a.ranks)) if groups is None else groups, n, seed)
    out: dict[str, dict[str, Any]] = {}
    for name in va:
        stat = np.median if name == "MedR" else np.mean
        x, y = float(stat(va[name])), float(stat(vb[name]))
        boot = weighted_statistic(name, va[name], w) - weighted_statistic(name, vb[name], w)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        out[name] = {"a": x, "b": y, "diff": x - y, "ci": [float(lo), float(hi)]}
    return out
