"""Planted long-caption benchmark: chunk×window fusion against plain truncation (docs/analysis.md).

No model and no audio. The text side is a bag-of-words encoder (a seeded random vector per word, summed,
normalised) that, like CLAP, reads only its first ``limit`` tokens (tokens = words + 2). The "audio" side
is made from the synthetic scores (benchmarks/synth/score.py): window t of track i lies in section j and
its vector is

    f_t = unit(unit(E(caption_j)) + style * u_i + noise * eps_t)

where caption_j is one sentence about section j (benchmarks/synth_captions.section_caption, its own
wording), u_i a per-track random direction and eps_t Gaussian noise of norm about 1. The query for track
i is its whole-track caption (synth_captions.track_caption: a summary, then what changes at each section,
up to 250 words), usually longer than the limit, so truncation keeps the summary and the first sections.
Every track is scored (no candidate cut) and the rank of the right track is reported as R@1/5/10 and MRR
for: ``truncate`` (what the encoder does alone), ``chunks-mean`` (the songseek rule), ``chunks-max``,
``chunks-meanvec`` (the mean chunk vector) and ``untruncated`` (the same encoder without a limit: a
reference, not something a CLAP model can do).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from songseek.benchmarks.synth.captions import section_caption, track_caption
from songseek.benchmarks.synth.score import sample_score, track_rng
from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.longtext import chunk_scores, embed_chunked

_WORD = re.compile(r"[a-z0-9]+(?:[-':][a-z0-9]+)*")
# Words a trained text tower gives little weight: left out of the sum (they still count as tokens).
STOPWORDS = frozenset("a an the and of with in at it its is to on now then by from into over this that as "
                      "long bpm turns opens ends bringing dropping".split())
METHODS = ("truncate", "chunks-mean", "chunks-max", "chunks-meanvec", "untruncated")


class BagOfWordsEncoder:
    """Text only: seeded word vectors of content words (no stopwords, no numbers) summed; reads the first
    ``limit - 2`` words (``limit`` 0: all)."""

    def __init__(self, dim: int = 128, limit: int = 77) -> None:
        self._info = EncoderInfo("planted-bow", "bow", dim, 16000, text_max_tokens=limit)
        self._cache: dict[str, np.ndarray] = {}

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text.lower())) + 2

    def _word(self, w: str) -> np.ndarray:
        if w not in self._cache:
            seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
            self._cache[w] = np.random.default_rng(seed).standard_normal(self._info.dim)
        return self._cache[w]

    def embed_text(self, texts: list[str]) -> np.ndarray:
        keep = self._info.text_max_tokens - 2 if self._info.text_max_tokens > 0 else None
        out = np.zeros((len(texts), self._info.dim))
        for i, t in enumerate(texts):
            for w in _WORD.findall(t.lower())[:keep]:
                if w not in STOPWORDS and not any(ch.isdigit() for ch in w):
                    out[i] += self._word(w)
        return l2_normalize(out + 1e-9)

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:  # pragma: no cover - text-only encoder
        raise NotImplementedError


@dataclass(frozen=True)
class PlantedCaptions:
    """Window vectors float32 (F, dim) with their track's first row and count (N,), and the N queries."""

    frames: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    captions: tuple[str, ...]
    caption_tokens: np.ndarray


def make_planted_captions(n_tracks: int, seed: int = 0, dim: int = 128, style: float = 0.6, noise: float = 1.0,
                          hop_s: float = 10.0, limit: int = 77) -> PlantedCaptions:
    enc = BagOfWordsEncoder(dim, 0)  # windows see the whole section sentence
    frames, starts, counts, caps = [], [], [], []
    rng_style = np.random.default_rng(seed + 1)
    row = 0
    for i in range(n_tracks):
        score = sample_score(seed, i)
        rng = track_rng(seed, i, 7)
        sec_vecs = enc.embed_text([section_caption(score, j, rng) for j in range(len(score.sections))])
        u = l2_normalize(rng_style.standard_normal((1, dim)))[0]
        n_win = max(1, int(np.ceil(score.duration_s / hop_s)))
        mids = (np.arange(n_win) + 0.5) * hop_s
        sec_of = np.searchsorted([s.end_s for s in score.sections], np.minimum(mids, score.duration_s - 1e-6),
                                 side="right")
        sec_of = np.minimum(sec_of, len(score.sections) - 1)
        eps = rng.standard_normal((n_win, dim)) / np.sqrt(dim)
        frames.append(l2_normalize(sec_vecs[sec_of] + style * u[None] + noise * eps))
        starts.append(row)
        counts.append(n_win)
        row += n_win
        caps.append(track_caption(score, track_rng(seed, i, 8)))
    tokens = np.asarray([BagOfWordsEncoder(dim, limit).count_tokens(c) for c in caps])
    return PlantedCaptions(np.concatenate(frames).astype(np.float32), np.asarray(starts), np.asarray(counts),
                           tuple(caps), tokens)


def _padded(p: PlantedCaptions) -> tuple[np.ndarray, np.ndarray]:
    """Track windows padded: float32 (N, Tmax, dim) and the valid mask (N, Tmax)."""
    tmax = int(p.counts.max())
    idx = p.starts[:, None] + np.minimum(np.arange(tmax)[None, :], p.counts[:, None] - 1)
    return p.frames[idx], np.arange(tmax)[None, :] < p.counts[:, None]


def _rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {"R@1": float(np.mean(ranks <= 1)), "R@5": float(np.mean(ranks <= 5)),
            "R@10": float(np.mean(ranks <= 10)), "MRR": float(np.mean(1.0 / ranks)),
            "median_rank": float(np.median(ranks))}


def run_longtext_planted(n_tracks: int = 300, seed: int = 0, dim: int = 128, limit: int = 77, style: float = 0.6,
                         noise: float = 1.0, params: FusionParams | None = None,
                         only_long: bool = False) -> dict[str, Any]:
    """Ranks of the right track for every caption, per method (see the module docstring)."""
    p = make_planted_captions(n_tracks, seed, dim, style, noise, limit=limit)
    tracks, _ = _padded(p)
    lengths = p.counts.astype(np.int64)
    limited, unlimited = BagOfWordsEncoder(dim, limit), BagOfWordsEncoder(dim, 0)
    chunked = embed_chunked(limited, list(p.captions))
    truncated = limited.embed_text(list(p.captions))
    full = unlimited.embed_text(list(p.captions))
    queries = np.flatnonzero(p.caption_tokens > limit) if only_long else np.arange(n_tracks)
    ranks: dict[str, list[int]] = {m: [] for m in METHODS}
    for qi in queries:
        qsets = {"truncate": (truncated[qi][None], "mean"), "untruncated": (full[qi][None], "mean"),
                 "chunks-mean": (chunked[qi].vectors, "mean"), "chunks-max": (chunked[qi].vectors, "max"),
                 "chunks-meanvec": (chunked[qi].vectors, "meanvec")}
        for m, (qv, pool) in qsets.items():
            sims = np.einsum("ntd,cd->nct", tracks, qv.astype(np.float32))
            score = chunk_scores(sims, lengths, params, pool).score.astype(np.float64)
            ranks[m].append(int(1 + np.sum(score > score[qi])))  # ties in the right track's favour
    n_chunks = np.asarray([len(c.chunks) for c in chunked])
    return {
        "settings": {"n_tracks": n_tracks, "seed": seed, "dim": dim, "limit": limit, "style": style, "noise": noise,
                     "only_long": only_long, "queries": len(queries)},
        "captions": {"mean_words": float(np.mean([len(c.split()) for c in p.captions])),
                     "share_over_limit": float(np.mean(p.caption_tokens > limit)),
                     "mean_chunks": float(n_chunks.mean()), "max_chunks": int(n_chunks.max())},
        "methods": {m: _rank_metrics(np.asarray(r, dtype=np.float64)) for m, r in ranks.items()},
    }


if __name__ == "__main__":  # pragma: no cover - measurement entry point
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--style", type=float, default=0.6)
    ap.add_argument("--limit", type=int, default=77)
    ap.add_argument("--only-long", action="store_true")
    a = ap.parse_args()
    print(json.dumps(run_longtext_planted(a.tracks, a.seed, limit=a.limit, style=a.style, noise=a.noise,
                                          only_long=a.only_long), indent=1))
