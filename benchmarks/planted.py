"""Planted long-form benchmark: seeded synthetic tracks with known sections, and a pure-array evaluation.

No model and no audio: vectors are built from a bank of latent *concepts* (what a caption could name:
"saxophone solo", "calm piano intro") and per-track *styles* (what makes one recording itself), so the
ground truth of every query is known by construction. docs/fusion.md ("The planted benchmark") has the
design and the measurements it gave.

Tracks: ``min_frames``..``max_frames`` windows of ``hop_s`` seconds (6-60 = 1-10 minutes at 10 s). Each
track has a *palette* of 2-4 concepts that its sections cycle through (verse, chorus, verse...) and 1-2
*events*: sections whose concept appears nowhere else in the track (a solo, a bridge). A section lasts
1-6 windows. A window vector is

    f_t = unit(a * c_j + b * u_i + sigma_s * eta_j + sigma_f * eps_t)

with c_j the section's concept, u_i the track's style, eta_j a per-section and eps_t a per-window noise
(Gaussian, norm about 1). Queries are noisy copies of clean (noise-free) content:

- a *whole-track* query: unit(unit(mean_t clean_f_t) + sigma_q * eps), the duration-weighted mix of the
  track's concepts and its style; relevant: that track, true span: the whole track;
- a *section* query: unit(unit(a * c_j + b * u_i) + sigma_q * eps) for an event section j; relevant:
  that track, true span: the section's start and end seconds.

Every concept is shared by many tracks, so a section query's concept alone does not find its track: the
style component does, and only on the few windows of the event. Long tracks drown those windows in a mean
(mean pooling loses), and the max over many noisy windows of competing tracks that use the concept all
the time gives max pooling false hits; fusion sits between the two. With all noise at zero a section query
equals its event's windows exactly (cosine 1, nowhere else) and a whole-track query equals its track's
normalised mean vector, which ``tests/benchmarks/test_planted.py`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from songseek.benchmarks.metrics import retrieval_metrics, segment_iou
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import FusionParams, rerank_scores

__all__ = [
    "PLANTED_MODES",
    "ModeEval",
    "PlantedSet",
    "evaluate_fusion_gammas",
    "evaluate_planted_arrays",
    "PlantedSims",
    "make_planted",
    "planted_sims",
    "summarize",
]

# none: first-stage order (best window of each track, what FAISS frame search grouped by track gives),
# segment = that window; equal to max under exact search. trackvec: cosine with the normalised mean of the
# track's window vectors (a pooled track index), segment = the whole track.
PLANTED_MODES = ("none", "mean", "max", "fusion", "trackvec")


@dataclass(frozen=True)
class PlantedSet:
    """A planted dataset. N tracks, F windows in all, C concepts, S sections, Q queries.

    frames float32 (F, dim) unit rows, track by track; track_start int64 (N + 1,): track i owns frames
    [track_start[i], track_start[i + 1]); hop_s seconds per window (window k of a track spans
    [k * hop_s, (k + 1) * hop_s]). concepts float32 (C, dim), styles float32 (N, dim), unit rows.
    Sections (int64 (S,) each): sec_track, sec_concept, sec_first / sec_last (window index within the
    track, inclusive); sec_event bool (S,): its concept occurs in no other section of the track.
    Queries: queries float32 (Q, dim) unit rows; query_track int64 (Q,) the relevant track;
    query_section int64 (Q,) the section (-1: a whole-track query); query_start_s / query_end_s
    float64 (Q,) the true span in seconds.
    """

    frames: np.ndarray
    track_start: np.ndarray
    hop_s: float
    concepts: np.ndarray
    styles: np.ndarray
    sec_track: np.ndarray
    sec_concept: np.ndarray
    sec_first: np.ndarray
    sec_last: np.ndarray
    sec_event: np.ndarray
    queries: np.ndarray
    query_track: np.ndarray
    query_section: np.ndarray
    query_start_s: np.ndarray
    query_end_s: np.ndarray
    seed: int

    @property
    def n_tracks(self) -> int:
        return int(self.track_start.shape[0] - 1)

    @property
    def lengths(self) -> np.ndarray:
        """int64 (N,) windows per track."""
        return np.diff(self.track_start)

    @property
    def is_section(self) -> np.ndarray:
        """bool (Q,) True for section queries."""
        return self.query_section >= 0

    def track_frames(self, i: int) -> np.ndarray:
        """float32 (T_i, dim) window vectors of track i."""
        return self.frames[self.track_start[i] : self.track_start[i + 1]]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], dim: int) -> np.ndarray:
    """Gaussian vectors of expected squared norm 1."""
    return rng.normal(0.0, 1.0 / np.sqrt(dim), size=(*shape, dim))


def _track_sections(rng: np.random.Generator, n_frames: int, n_concepts: int) -> tuple[list[int], list[int], list[int]]:
    """(concept, first, last) lists of one track's sections: palette cycling plus 1-2 event sections."""
    palette = rng.choice(n_concepts, size=int(rng.integers(2, 5)), replace=False)
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n_frames:
        end = min(n_frames, start + int(rng.integers(1, 7)))
        spans.append((start, end - 1))
        start = end
    concepts: list[int] = []
    for _ in spans:  # palette concepts, never the same twice in a row
        choices = [c for c in palette if not concepts or c != concepts[-1]]
        concepts.append(int(rng.choice(choices)))
    n_events = min(int(rng.integers(1, 3)), max(1, len(spans) - 1))
    others = np.setdiff1d(np.arange(n_concepts), palette)
    events = rng.choice(others, size=n_events, replace=False)
    for pos, concept in zip(rng.choice(len(spans), size=n_events, replace=False), events, strict=True):
        concepts[int(pos)] = int(concept)
    return concepts, [s for s, _ in spans], [e for _, e in spans]


def make_planted(
    n_tracks: int,
    dim: int = 64,
    seed: int = 0,
    hop_s: float = 10.0,
    *,
    n_concepts: int = 50,
    min_frames: int = 6,
    max_frames: int = 60,
    concept_weight: float = 1.0,
    style_weight: float = 0.6,
    section_noise: float = 0.3,
    frame_noise: float = 0.5,
    query_noise: float = 2.0,
    noise: float = 1.0,
    section_queries_per_track: int = 2,
) -> PlantedSet:
    """Seeded planted dataset (module docstring has the model). ``noise`` scales the three noise levels
    (0 = noise-free); same arguments → the same arrays, bit for bit."""
    if n_tracks < 1 or dim < 2 or n_concepts < 6 or not 1 <= min_frames <= max_frames or hop_s <= 0:
        raise UsageError(
            "make_planted (benchmarks/planted.py): need n_tracks >= 1, dim >= 2, n_concepts >= 6, "
            f"1 <= min_frames <= max_frames, hop_s > 0 (got {n_tracks}, {dim}, {n_concepts}, "
            f"{min_frames}..{max_frames}, {hop_s})"
        )
    rng = np.random.default_rng(seed)
    a, b = concept_weight, style_weight
    s_sec, s_frame, s_query = section_noise * noise, frame_noise * noise, query_noise * noise
    concepts = _unit(rng.normal(size=(n_concepts, dim)))
    styles = _unit(rng.normal(size=(n_tracks, dim)))
    lengths = rng.integers(min_frames, max_frames + 1, size=n_tracks)
    track_start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    sec_track, sec_concept, sec_first, sec_last = [], [], [], []
    for i in range(n_tracks):
        cs, firsts, lasts = _track_sections(rng, int(lengths[i]), n_concepts)
        sec_track += [i] * len(cs)
        sec_concept += cs
        sec_first += firsts
        sec_last += lasts
    st, sc = np.array(sec_track, np.int64), np.array(sec_concept, np.int64)
    sf, sl = np.array(sec_first, np.int64), np.array(sec_last, np.int64)
    sec_len = sl - sf + 1

    # Windows: each section's clean direction, its section noise, and per-window noise.
    clean_sec = _unit(a * concepts[sc] + b * styles[st])  # (S, dim)
    sec_of_frame = np.repeat(np.arange(len(sc)), sec_len)
    eta = _noise(rng, (len(sc),), dim)
    eps = _noise(rng, (int(track_start[-1]),), dim)
    raw = a * concepts[sc] + b * styles[st] + s_sec * eta
    frames = _unit(raw[sec_of_frame] + s_frame * eps).astype(np.float32)

    # An event: its concept occurs once in its track.
    key = st * n_concepts + sc
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    sec_event = counts[inverse] == 1

    # Queries: one whole-track query per track, then up to k event sections per track.
    clean_frames = clean_sec[sec_of_frame]
    whole = _unit(np.add.reduceat(clean_frames, track_start[:-1], axis=0))
    q_track = [np.arange(n_tracks)]
    q_sec = [np.full(n_tracks, -1)]
    events = np.flatnonzero(sec_event)
    picked = []
    for i in range(n_tracks):
        mine = events[st[events] == i] if section_queries_per_track > 0 else events[:0]
        k = min(section_queries_per_track, len(mine))
        picked.append(rng.choice(mine, size=k, replace=False) if k else mine[:0])
    chosen = np.concatenate(picked).astype(np.int64)
    q_track.append(st[chosen])
    q_sec.append(chosen)
    query_track = np.concatenate(q_track).astype(np.int64)
    query_section = np.concatenate(q_sec).astype(np.int64)
    base = np.concatenate([whole, clean_sec[chosen]])
    queries = _unit(base + s_query * _noise(rng, (len(base),), dim)).astype(np.float32)
    start_s = np.where(query_section >= 0, sf[query_section] * hop_s, 0.0)
    end_s = np.where(query_section >= 0, (sl[query_section] + 1) * hop_s, lengths[query_track] * hop_s)
    return PlantedSet(
        frames=frames,
        track_start=track_start,
        hop_s=float(hop_s),
        concepts=concepts.astype(np.float32),
        styles=styles.astype(np.float32),
        sec_track=st,
        sec_concept=sc,
        sec_first=sf,
        sec_last=sl,
        sec_event=sec_event,
        queries=queries,
        query_track=query_track,
        query_section=query_section,
        query_start_s=start_s.astype(np.float64),
        query_end_s=end_s.astype(np.float64),
        seed=seed,
    )


@dataclass(frozen=True)
class ModeEval:
    """One rerank mode on a planted set: ranks int64 (Q,) 1-based rank of the relevant track (ties
    pessimistic); seg_start_s / seg_end_s float64 (Q,) the segment the mode gives for the relevant track;
    iou float64 (Q,) its temporal IoU with the query's true span."""

    mode: str
    ranks: np.ndarray
    seg_start_s: np.ndarray
    seg_end_s: np.ndarray
    iou: np.ndarray


def _rank_of(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """int64 (Q,): 1 + number of other candidates scoring >= the relevant one (pessimistic ties)."""
    rel = scores[np.arange(scores.shape[0]), relevant][:, None]
    return np.sum(scores >= rel, axis=1).astype(np.int64)  # the relevant one counts itself: the +1


@dataclass(frozen=True)
class PlantedSims:
    """Every query against every track, padded: sims float32 (Q * N, Tmax), row q * N + i = query q
    against the windows of track i (padding 0); lengths int64 (Q * N,); best float64 (Q, N) each
    track's best window (the first-stage score); track_scores float64 (Q, N) cosine with the
    normalised mean track vector."""

    sims: np.ndarray
    lengths: np.ndarray
    best: np.ndarray
    track_scores: np.ndarray


def planted_sims(planted: PlantedSet) -> PlantedSims:
    """Exact cosines of all queries with all windows (compute once, evaluate many parameter sets).
    Memory: Q * N * Tmax * 4 bytes (about 60 MB for 300 tracks, 240 MB for 600)."""
    n, lengths = planted.n_tracks, planted.lengths
    tmax = int(lengths.max())
    pos = np.arange(tmax)[None, :]
    pad_idx = np.where(pos < lengths[:, None], planted.track_start[:-1, None] + pos, planted.frames.shape[0])
    frames = np.vstack([planted.frames, np.zeros((1, planted.frames.shape[1]), np.float32)])
    q = planted.queries
    sims = np.empty((q.shape[0], n, tmax), np.float32)
    for lo in range(0, q.shape[0], 64):
        chunk = frames @ q[lo : lo + 64].T  # (F + 1, c)
        sims[lo : lo + 64] = chunk[pad_idx].transpose(2, 0, 1)
    flat = sims.reshape(-1, tmax)
    tiled = np.tile(lengths, q.shape[0])
    best = np.max(sims, axis=2, where=(pos < lengths[:, None])[None], initial=-np.inf).astype(np.float64)
    track_vec = _unit(np.add.reduceat(planted.frames.astype(np.float64), planted.track_start[:-1], axis=0))
    return PlantedSims(flat, tiled, best, q.astype(np.float64) @ track_vec.T)


def _candidate_ranks(ps: PlantedSims, scores: np.ndarray, rel: np.ndarray, n_candidates: int | None) -> np.ndarray:
    """int64 (Q,) rank of the relevant track when the best ``n_candidates`` tracks by their best window
    are ordered by ``scores`` float (Q, N) and the rest follow in first-stage order (None: all by scores)."""
    if n_candidates is None:
        return _rank_of(scores, rel)
    stage_rank = _rank_of(ps.best, rel)
    cut = np.sort(ps.best, axis=1)[:, -min(n_candidates, ps.best.shape[1])][:, None]
    in_cand = _rank_of(np.where(ps.best >= cut, scores, -np.inf), rel)
    # A relevant non-candidate keeps its first-stage rank: every candidate comes before it.
    return np.where(stage_rank <= n_candidates, in_cand, stage_rank)


def _mode_eval(planted: PlantedSet, mode: str, ranks: np.ndarray, first: np.ndarray, last: np.ndarray) -> ModeEval:
    """ModeEval from ranks and the relevant track's segment as 0-based window indices (Q,) each."""
    start, end = first * planted.hop_s, (last + 1) * planted.hop_s
    iou = segment_iou(start, end, planted.query_start_s, planted.query_end_s)
    return ModeEval(mode, ranks, start.astype(np.float64), end.astype(np.float64), iou)


def _query_rows(nq: int, n: int) -> np.ndarray:
    """int64 (nq * n,): the query of each row of ``PlantedSims.sims`` (each query is reranked on its own scale)."""
    return np.repeat(np.arange(nq, dtype=np.int64), n)


def evaluate_planted_arrays(
    planted: PlantedSet,
    params: FusionParams | None = None,
    modes: tuple[str, ...] = ("none", "mean", "max", "fusion"),
    n_candidates: int | None = None,
    sims: PlantedSims | None = None,
) -> dict[str, ModeEval]:
    """Rank every track for every query with exact cosines and each rerank mode (no library, no index).

    ``n_candidates``: as the engine does, only the best ``n_candidates`` tracks by their best window are
    reranked and the others follow in that first-stage order (None: every track is reranked; trackvec
    ignores it). ``sims``: ``planted_sims(planted)``, to reuse across calls. Returns one ModeEval per mode.
    """
    params = FusionParams() if params is None else params
    bad = [m for m in modes if m not in PLANTED_MODES]
    if bad:
        raise UsageError(f"evaluate_planted_arrays (benchmarks/planted.py): unknown modes {bad}; use {PLANTED_MODES}")
    ps = planted_sims(planted) if sims is None else sims
    n, nq, rel = planted.n_tracks, planted.queries.shape[0], planted.query_track
    flat = np.arange(nq) * n + rel  # the relevant track's row in ps.sims
    out: dict[str, ModeEval] = {}
    for mode in modes:
        if mode == "trackvec":
            ranks = _rank_of(ps.track_scores, rel)
            out[mode] = _mode_eval(planted, mode, ranks, np.zeros(nq, np.int64), planted.lengths[rel] - 1)
            continue
        res = rerank_scores("max" if mode == "none" else mode, ps.sims, ps.lengths, params, _query_rows(nq, n))
        scores = res.score.reshape(nq, n).astype(np.float64)
        ranks = _rank_of(ps.best, rel) if mode == "none" else _candidate_ranks(ps, scores, rel, n_candidates)
        out[mode] = _mode_eval(planted, mode, ranks, res.seg_first[flat], res.seg_last[flat])
    return out


def evaluate_fusion_gammas(
    planted: PlantedSet,
    params: FusionParams,
    gammas: list[tuple[float, float]],
    n_candidates: int | None = None,
    sims: PlantedSims | None = None,
) -> dict[tuple[float, float], ModeEval]:
    """``evaluate_planted_arrays`` for mode fusion at several (gamma_k, gamma_t) from one fuse call: the
    parts r_K and r_T do not depend on the gammas (nor does the segment)."""
    ps = planted_sims(planted) if sims is None else sims
    n, nq, rel = planted.n_tracks, planted.queries.shape[0], planted.query_track
    flat = np.arange(nq) * n + rel
    res = rerank_scores("fusion", ps.sims, ps.lengths, params, _query_rows(nq, n))
    r_k = res.r_k.reshape(nq, n).astype(np.float64)
    r_t = res.r_t.reshape(nq, n).astype(np.float64)
    out: dict[tuple[float, float], ModeEval] = {}
    for gk, gt in gammas:
        scores = gk * r_k + gt * r_t  # fuse's score up to float32 rounding of the parts
        ranks = _candidate_ranks(ps, scores, rel, n_candidates)
        out[(gk, gt)] = _mode_eval(planted, "fusion", ranks, res.seg_first[flat], res.seg_last[flat])
    return out


def summarize(
    planted: PlantedSet, evals: dict[str, ModeEval], long_frames: int = 30
) -> dict[str, dict[str, dict[str, float]]]:
    """{query group: {mode: metrics}}. Groups: ``whole``, ``section`` and ``section_long`` (section
    queries on tracks of >= ``long_frames`` windows). Metrics: R@1, R@5, R@10, mAP@10, MedR, MeanR
    (benchmarks/metrics.py) and, for section groups, ``IoU>=0.5`` (share of queries whose segment for the
    relevant track overlaps the true section with IoU >= 0.5) and ``mIoU``."""
    long_track = planted.lengths[planted.query_track] >= long_frames
    groups = {
        "whole": ~planted.is_section,
        "section": planted.is_section,
        "section_long": planted.is_section & long_track,
    }
    table: dict[str, dict[str, dict[str, float]]] = {}
    for group, sel in groups.items():
        if not sel.any():
            continue
        table[group] = {}
        for mode, ev in evals.items():
            row = retrieval_metrics(ev.ranks[sel], ks=(1, 5, 10))
            if group != "whole":
                row["IoU>=0.5"] = float(np.mean(ev.iou[sel] >= 0.5))
                row["mIoU"] = float(np.mean(ev.iou[sel]))
            row["n"] = float(sel.sum())
            table[group][mode] = row
    return table
