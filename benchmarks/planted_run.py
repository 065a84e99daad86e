"""`songseek bench planted`: the planted long-form benchmark (benchmarks/planted.py) through the real engine.

The planted tracks' window vectors are written into a library with ``ingest_table`` (encoder
``precomputed``), then every whole-track and section query goes through ``Library.search_vectors`` with
each rerank mode (runner.rank_queries, exhaustive: exact ranks). Directions of the result:

* ``whole_track``: one query per track describing all of it (the duration-weighted mix of its sections);
* ``section``: queries describing one event section (a concept found nowhere else in its track), with the
  section's span: ``IoU>=0.5`` / ``mIoU`` / ``R@1&IoU>=0.5`` measure the segment the engine returns for
  the relevant track;
* ``section_long``: the section queries on tracks of at least ``LONG_FRAMES`` windows (5 minutes at 10 s).

``method="arrays"`` scores the same queries with the same fusion code on exact cosines in memory
(``planted.evaluate_planted_arrays``, chunked over queries): the engine's exhaustive path costs a FAISS
search over every window per query, too slow for thousands of queries on a laptop. A seeded sample of
``engine_check`` queries is then run through the engine as well and the rank and segment mismatches are
recorded in ``settings["engine_check"]`` (0 expected: ties aside, both rank the same scores).

``fusion_vs_mean`` (in ``RetrievalRun.extra``) holds fusion minus mean per direction and metric with a
95 % paired bootstrap interval over tracks: the check that fusion beats mean pooling on section queries without
losing on whole-track queries.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.errors import UsageError
from songseek.engine.progress import Progress
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table

from .metrics import DEFAULT_KS
from .planted import PlantedSet, evaluate_planted_arrays, make_planted
from .report import ModeResult
from .runner import (
    MAP_K,
    QueryRanks,
    RetrievalRun,
    library_settings,
    mode_result,
    paired_difference,
    rank_queries,
    run_settings,
    search_plan,
)

LONG_FRAMES = 30
DEFAULT_MODES: tuple[str, ...] = ("none", "mean", "max", "fusion")
METHODS = ("engine", "arrays")
ARRAY_CHUNK = 128  # queries per in-memory block: 128 x tracks x max windows float32


def track_id(i: int) -> str:
    return f"p{i:05d}"


def planted_table(ps: PlantedSet) -> pa.Table:
    """The ingest table of a planted set: one row per window (track_id, start_s, end_s, embedding, path,
    duration_s); window k of a track spans [k * hop_s, (k + 1) * hop_s]."""
    lengths = ps.lengths
    owner = np.repeat(np.arange(ps.n_tracks), lengths)
    k = np.arange(ps.frames.shape[0]) - np.repeat(ps.track_start[:-1], lengths)
    ids = np.array([track_id(i) for i in range(ps.n_tracks)], dtype=object)
    dim = ps.frames.shape[1]
    return pa.table({
        "track_id": pa.array(ids[owner].tolist(), pa.string()),
        "start_s": k * ps.hop_s,
        "end_s": (k + 1) * ps.hop_s,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(ps.frames.reshape(-1), pa.float32()), dim),
        "path": pa.array([f"planted/{t}" for t in ids[owner]], pa.string()),
        "duration_s": (lengths[owner] * ps.hop_s).astype(np.float64),
    })


def planted_hash(ps: PlantedSet) -> str:
    """sha256 over the planted set's frames, track bounds, queries and truths (the dataset hash)."""
    h = hashlib.sha256()
    for a in (ps.frames, ps.track_start, ps.queries, ps.query_track, ps.query_section, ps.query_start_s,
              ps.query_end_s):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _spec_path(library: Path) -> Path:
    return library.with_name(library.name + ".planted.json")


def build_planted_library(ps: PlantedSet, library: Path, spec: dict[str, Any]) -> bool:
    """Write ``ps`` into ``library`` (ingest_table) unless it already holds exactly this set (same spec,
    recorded beside it in ``<library>.planted.json``). Returns True when it was reused. A folder that is
    not this planted set is refused, never overwritten."""
    spec_file = _spec_path(library)
    if library.exists() and any(library.iterdir()):
        try:
            same = json.loads(spec_file.read_text()) == spec
        except (OSError, ValueError):
            same = False
        if same:
            return True
        raise UsageError(f"{library} exists and is not this planted set ({spec_file} differs or is missing); "
                         "remove it or choose another --work folder")
    library.parent.mkdir(parents=True, exist_ok=True)
    try:
        ingest_table(planted_table(ps), library, source="planted", window_s=ps.hop_s, hop_s=ps.hop_s)
    except BaseException:
        shutil.rmtree(library, ignore_errors=True)
        raise
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return False


def array_ranks(ps: PlantedSet, modes: Sequence[str], fusion: FusionParams, progress: Progress | None = None,
                chunk: int = ARRAY_CHUNK) -> dict[str, QueryRanks]:
    """Per-query ranks and segments of every mode from ``evaluate_planted_arrays`` (exact cosines, every
    track reranked, pessimistic ties), computed ``chunk`` queries at a time to bound memory."""
    nq = ps.queries.shape[0]
    parts: dict[str, list[Any]] = {m: [] for m in modes}
    if progress is not None:
        progress.start(nq, "queries")
    for lo in range(0, nq, chunk):
        hi = min(lo + chunk, nq)
        sub = replace(ps, queries=ps.queries[lo:hi], query_track=ps.query_track[lo:hi],
                      query_section=ps.query_section[lo:hi], query_start_s=ps.query_start_s[lo:hi],
                      query_end_s=ps.query_end_s[lo:hi])
        for m, ev in evaluate_planted_arrays(sub, fusion, tuple(modes)).items():
            parts[m].append(ev)
        if progress is not None:
            progress.advance(files=hi - lo)
    if progress is not None:
        progress.close()
    out = {}
    for m, evs in parts.items():
        ranks = np.concatenate([e.ranks for e in evs]).astype(np.int64)
        ap = np.where(ranks <= MAP_K, 1.0 / ranks, 0.0)
        out[m] = QueryRanks(ranks, np.ones(nq, bool), ap, np.concatenate([e.seg_start_s for e in evs]),
                            np.concatenate([e.seg_end_s for e in evs]))
    return out


def engine_check(lib: Library, ps: PlantedSet, arrays: dict[str, QueryRanks], n: int, seed: int,
                 fusion: FusionParams) -> dict[str, Any]:
    """Run a seeded sample of ``n`` queries through the engine and count where its ranks and segments
    differ from the array evaluation."""
    pick = np.sort(np.random.default_rng(seed).choice(ps.queries.shape[0], size=min(n, ps.queries.shape[0]),
                                                      replace=False))
    relevant = [[track_id(int(t))] for t in ps.query_track[pick]]
    plan = search_plan(lib.n_tracks, ks=(1,), candidates=0)
    eng = rank_queries(lib, ps.queries[pick], relevant, list(arrays), fusion, plan)
    out: dict[str, Any] = {"queries": int(pick.size), "rank_mismatches": {}, "segment_mismatches": {}}
    for m, qr in eng.items():
        ref = arrays[m].select(pick)
        out["rank_mismatches"][m] = int(np.sum(qr.ranks != ref.ranks))
        seg_diff = (np.abs(qr.seg_start_s - ref.seg_start_s) > 1e-6) | (np.abs(qr.seg_end_s - ref.seg_end_s) > 1e-6)
        out["segment_mismatches"][m] = int(np.sum(seg_diff))
    return out


def run_planted(n_tracks: int, seed: int = 7, dim: int = 64, modes: Sequence[str] = DEFAULT_MODES,
                library_path: Path | str = "planted.songseek", *, noise: float = 1.0,
                fusion: FusionParams | None = None, ks: Sequence[int] = DEFAULT_KS, ci: bool = False,
                workers: int = 1, progress: Progress | None = None, method: str = "engine",
                engine_check_queries: int = 64) -> RetrievalRun:
    """Generate ``make_planted(n_tracks, dim, seed, noise=noise)``, write (or reuse) it as a library at
    ``library_path`` and evaluate whole-track and section queries per rerank mode through the engine.
    Returns directions whole_track / section / section_long; ``extra["fusion_vs_mean"]`` when both modes
    ran. ``method="arrays"``: see the module docstring (``engine_check_queries`` go through the engine)."""
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    fusion = fusion or FusionParams()
    t0 = time.perf_counter()
    ps = make_planted(n_tracks, dim=dim, seed=seed, noise=noise)
    library = Path(library_path)
    spec = {"generator": "songseek.benchmarks.planted.make_planted", "n_tracks": n_tracks, "dim": dim, "seed": seed,
            "noise": noise, "hop_s": ps.hop_s, "hash": planted_hash(ps)}
    reused = build_planted_library(ps, library, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(library)
    if lib.n_tracks != n_tracks:
        raise UsageError(f"{library}: holds {lib.n_tracks} tracks, expected {n_tracks}; remove it and run again")
    relevant = [[track_id(int(t))] for t in ps.query_track]
    spans = np.stack([ps.query_start_s, ps.query_end_s], axis=1)
    plan = search_plan(lib.n_tracks, ks, 0)
    t1 = time.perf_counter()
    check = None
    if method == "engine":
        ranked = rank_queries(lib, ps.queries, relevant, modes, fusion, plan, workers=workers, progress=progress)
    else:
        bad = [m for m in modes if m not in DEFAULT_MODES]
        if bad:
            raise UsageError(f"rerank modes are {', '.join(DEFAULT_MODES)} (got {bad})")
        ranked = array_ranks(ps, modes, fusion, progress)
        check = engine_check(lib, ps, ranked, engine_check_queries, seed, fusion) if engine_check_queries else None
    search_s = time.perf_counter() - t1
    sel = {
        "whole_track": ~ps.is_section,
        "section": ps.is_section,
        "section_long": ps.is_section & (ps.lengths[ps.query_track] >= LONG_FRAMES),
    }
    results: dict[str, dict[str, ModeResult]] = {}
    for direction, mask in sel.items():
        if mask.any():
            span = spans[mask] if direction != "whole_track" else None
            results[direction] = {m: mode_result(qr.select(mask), lib.n_tracks, ks, span, ci, ps.query_track[mask])
                                  for m, qr in ranked.items()}
    extra: dict[str, Any] = {}
    if "fusion" in ranked and "mean" in ranked:
        extra["fusion_vs_mean"] = {d: paired_difference(ranked["fusion"].select(mask), ranked["mean"].select(mask), ks,
                                                        groups=ps.query_track[mask])
                                   for d, mask in sel.items() if mask.any()}
    lengths = ps.lengths
    settings = {**library_settings(lib), "dataset": f"planted[{n_tracks}@seed{seed}]", "dataset_hash": spec["hash"],
                "planted": {**{k: v for k, v in spec.items() if k != "hash"}, "windows_per_track":
                            [int(lengths.min()), int(lengths.max())], "mean_windows": float(lengths.mean()),
                            "sections": int(ps.sec_track.shape[0]), "long_frames": LONG_FRAMES},
                "n_queries": {d: int(m.sum()) for d, m in sel.items()}, "library_reused": reused,
                "method": method, "engine_check": check, "workers": workers,
                **run_settings(modes, fusion, ks, ci, plan if method == "engine" else None),
                "search_seconds": round(search_s, 3), "seconds": round(time.perf_counter() - t0, 3)}
    if method == "arrays":
        settings["search"] = "in memory: exact cosines, every track reranked by engine.fusion, ties pessimistic"
    return RetrievalRun(results, settings, primary=None, extra=extra)
