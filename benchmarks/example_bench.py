"""Query by example with excerpts of several windows: the ``align`` rerank against the pooling baselines.

Tracks of the synthetic generator (``songseek synth``) are embedded window by window; from each track,
``per_track`` excerpts of each length are cut at random offsets (off the window grid), clean and with white
noise at 10 dB SNR, and embedded on the library's grid (10 s windows and hop). Each excerpt ranks every
track of its seed (every candidate reranked), and its own track is the one relevant. Methods:

- ``auto``: what a search runs by default, ``align`` (engine/query/align.py) for these excerpts;
- ``align only``: the alignment order without its hedge towards mean pooling;
- ``hedge``: what the default was before: the excerpt's mean vector, reranked by ``hedge``;
- ``mean``, ``max``: the excerpt's mean vector, mean or max pooling (the trivial baselines).

Δ is R@10 of ``auto`` minus the better of mean and max, with a 95 % bootstrap interval over tracks (all
excerpts of a drawn track together). Printed by ``songseek bench example``; docs/fusion.md has the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from songseek.benchmarks.metrics import bootstrap_ci, ranks_from_scores
from songseek.benchmarks.synth.dataset import iter_tracks
from songseek.engine.audio import frame_windows
from songseek.engine.encoders.base import Encoder, l2_normalize
from songseek.engine.errors import UsageError
from songseek.engine.query.align import align_rerank, align_scores
from songseek.engine.query.fusion import rerank_scores

METHODS = ("auto", "align only", "hedge", "mean", "max")
WINDOW_S = 10.0


@dataclass
class ExampleRow:
    """One excerpt length and noise level: ``ranks[method]`` int64 (Q,) rank of each excerpt's own track
    (pessimistic: tracks scored equal to it count as above it); ``groups`` (Q,) the track of each excerpt."""

    length_s: float
    snr_db: float | None
    ranks: dict[str, np.ndarray]
    groups: np.ndarray

    def recall(self, method: str, k: int) -> float:
        return float(np.mean(self.ranks[method] <= k))

    def better_pooling(self) -> str:
        return max(("mean", "max"), key=lambda m: self.recall(m, 10))

    def delta(self) -> tuple[float, float, float]:
        """(Δ, low, high) in points: R@10 of auto minus the better of mean and max, 95 % interval over tracks."""
        best = self.ranks[self.better_pooling()]
        diff = (self.ranks["auto"] <= 10).astype(np.float64) - (best <= 10).astype(np.float64)
        lo, hi = bootstrap_ci(diff, groups=self.groups)
        return 100 * float(diff.mean()), 100 * lo, 100 * hi


@dataclass
class ExampleReport:
    seeds: tuple[int, ...]
    n_tracks: int
    rows: list[ExampleRow] = field(default_factory=list)

    def to_json(self) -> dict:
        out = []
        for r in self.rows:
            d, lo, hi = r.delta()
            out.append({"length_s": r.length_s, "snr_db": r.snr_db, "queries": int(len(r.groups)),
                        "recall": {m: {"R@1": r.recall(m, 1), "R@10": r.recall(m, 10)} for m in METHODS},
                        "better_pooling": r.better_pooling(), "delta_r10_points": d, "delta_ci": [lo, hi]})
        return {"seeds": list(self.seeds), "tracks_per_seed": self.n_tracks, "rows": out}


def rank_of(score: np.ndarray, i: int) -> int:
    """Pessimistic 1-based rank of candidate ``i``: every other candidate scored at least as high is above it."""
    return int(ranks_from_scores(np.asarray(score, np.float64)[None], [[i]])[0])


def excerpt_ranks(excerpt: np.ndarray, tracks: np.ndarray, lengths: np.ndarray, own: int) -> dict[str, int]:
    """Rank of track ``own`` under each method for one excerpt: ``excerpt`` float32 (C, dim) unit window
    vectors, ``tracks`` (B, Tmax, dim) padded window vectors with ``lengths`` (B,)."""
    q = l2_normalize(excerpt.mean(axis=0, keepdims=True))[0]
    pooled = np.einsum("btd,d->bt", tracks, q).astype(np.float32)
    windows = np.einsum("btd,cd->bct", tracks, excerpt)
    scores = {m: rerank_scores(m, pooled, lengths).score for m in ("hedge", "mean", "max")}
    scores["align only"] = align_scores(windows, lengths)[0]
    scores["auto"] = align_rerank(windows, lengths)[0] if len(excerpt) > 1 else scores["hedge"]
    return {m: rank_of(np.asarray(s, np.float64), own) for m, s in scores.items()}


def run_example_bench(encoder: Encoder, seeds: Sequence[int], n_tracks: int,
                      lengths_s: Sequence[float] = (15.0, 20.0, 30.0, 60.0), per_track: int = 2,
                      snrs_db: Sequence[float | None] = (None, 10.0)) -> ExampleReport:
    """Every (length, noise) row over the given generator seeds (see the module doc)."""
    if n_tracks < 2 or per_track < 1 or not seeds or not lengths_s:
        raise UsageError("bench example needs at least 2 tracks, 1 excerpt per track, a seed and a length")
    if any(not WINDOW_S < x for x in lengths_s):
        raise UsageError(f"excerpt lengths must be longer than one {WINDOW_S:g} s window, got {list(lengths_s)}")
    sr = encoder.info.sample_rate
    found: dict[tuple[float, float | None], tuple[dict[str, list[int]], list[int]]] = {}
    for seed in seeds:
        frames, audios = [], []
        for _, audio in iter_tracks(seed, n_tracks):
            frames.append(encoder.embed_audio(frame_windows(audio, sr, WINDOW_S, WINDOW_S)[0]))
            audios.append(audio)
        lengths = np.array([len(f) for f in frames], np.int64)
        tracks = np.zeros((len(frames), int(lengths.max()), frames[0].shape[1]), np.float32)
        for i, f in enumerate(frames):
            tracks[i, : len(f)] = f
        rng = np.random.default_rng([seed, 13])
        for i, audio in enumerate(audios):
            for length in lengths_s:
                n = int(length * sr)
                if len(audio) < n + sr:
                    continue
                for _ in range(per_track):
                    start = int(rng.integers(0, len(audio) - n))
                    clip = audio[start:start + n].astype(np.float64)
                    noise = rng.normal(0.0, 1.0, clip.shape)
                    for snr in snrs_db:
                        x = clip if snr is None else clip + noise * np.sqrt(np.mean(clip**2) / 10 ** (snr / 10))
                        excerpt = encoder.embed_audio(frame_windows(x.astype(np.float32), sr, WINDOW_S, WINDOW_S)[0])
                        ranks, groups = found.setdefault((length, snr), ({m: [] for m in METHODS}, []))
                        for m, r in excerpt_ranks(excerpt, tracks, lengths, i).items():
                            ranks[m].append(r)
                        groups.append(seed * 1_000_000 + i)
    report = ExampleReport(tuple(seeds), n_tracks)
    for (length, snr), (ranks, groups) in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        report.rows.append(ExampleRow(length, snr, {m: np.asarray(v, np.int64) for m, v in ranks.items()},
                                      np.asarray(groups, np.int64)))
    return report
