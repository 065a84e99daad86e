"""Quality of an encoder on held-out synthetic music, from plain arrays (no library on disk).

``embed_synth_set`` renders tracks in memory, cuts them into windows the way the indexer does
(``engine.audio.windowing.frame_windows``: 10 s windows, hop 10 s, 1 s+ tail padded) and embeds windows
and captions. ``evaluate`` ranks, per rerank mode (``engine.fusion.rerank_scores``: mean, max,
fusion), tracks for every caption (text→audio) and captions for every track (audio→text), at three
caption levels: whole-track descriptions, tag lists and section captions, and reports R@1/5/10,
mAP@10 and MedR (``benchmarks.metrics``) plus, for section captions, how well the best segment found in
the caption's own track overlaps the section (mean IoU, share with IoU >= 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from songseek.benchmarks.synth import iter_tracks
from songseek.engine.audio.windowing import frame_windows
from songseek.engine.encoders import load_encoder
from songseek.engine.encoders.base import Encoder
from songseek.engine.query.fusion import FusionParams, rerank_scores

from .metrics import retrieval_metrics_from_scores, segment_iou

LEVELS = ("track", "tags", "section")
KS = (1, 5, 10)


@dataclass(frozen=True)
class SynthEmbeddings:
    """An embedded synthetic set. ``frames[i]`` float32 (T_i, dim) window vectors of track i and
    ``bounds[i]`` float64 (T_i, 2) their [start_s, end_s]; ``texts[level]`` float32 (C, dim) caption
    vectors and ``owner[level]`` int64 (C,) the track each caption describes; ``spans`` float64 (S, 2)
    each section caption's [start_s, end_s]."""

    frames: tuple[np.ndarray, ...]
    bounds: tuple[np.ndarray, ...]
    texts: dict[str, np.ndarray]
    owner: dict[str, np.ndarray]
    spans: np.ndarray
    captions: dict[str, list[str]]


def embed_synth_set(encoder: Encoder, seed: int, n_tracks: int, window_s: float = 10.0,
                    hop_s: float = 10.0, start: int = 0) -> SynthEmbeddings:
    """Render tracks ``start .. start + n_tracks - 1`` of ``seed`` and embed windows and captions."""
    sr = encoder.info.sample_rate
    frames, bounds = [], []
    caps: dict[str, list[str]] = {level: [] for level in LEVELS}
    owner: dict[str, list[int]] = {level: [] for level in LEVELS}
    spans = []
    for i, (track, audio) in enumerate(iter_tracks(seed, n_tracks, start)):
        if sr != 16000:
            raise ValueError("embed_synth_set renders at 16 kHz; resample for other encoders")
        windows, b = frame_windows(audio, sr, window_s, hop_s)
        frames.append(encoder.embed_audio(windows))
        bounds.append(b)
        for level, level_caps in (("track", [track.caption]), ("tags", [track.tags]),
                                  ("section", list(track.section_captions))):
            caps[level] += level_caps
            owner[level] += [i] * len(level_caps)
        spans += [(s.start_s, s.end_s) for s in track.score.sections]
    texts = {level: encoder.embed_text(caps[level]) for level in LEVELS}
    return SynthEmbeddings(frames=tuple(frames), bounds=tuple(bounds), texts=texts,
                           owner={k: np.asarray(v, np.int64) for k, v in owner.items()},
                           spans=np.asarray(spans, np.float64).reshape(-1, 2), captions=caps)


def score_tracks(queries: np.ndarray, emb: SynthEmbeddings, mode: str, params: FusionParams | None = None,
                 chunk: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rerank score of every track for every query: (scores float32 (Q, N), segment start_s and end_s
    float64 (Q, N) of the best segment ``mode`` finds in each track)."""
    lengths = np.array([f.shape[0] for f in emb.frames], np.int64)
    n, tmax = len(emb.frames), int(lengths.max())
    dim = emb.frames[0].shape[1]
    padded = np.zeros((n, tmax, dim), np.float32)
    starts = np.zeros((n, tmax), np.float64)
    ends = np.zeros((n, tmax), np.float64)
    for i, (f, b) in enumerate(zip(emb.frames, emb.bounds)):
        padded[i, : len(f)] = f
        starts[i, : len(f)], ends[i, : len(f)] = b[:, 0], b[:, 1]
    q_all = np.asarray(queries, np.float32)
    scores = np.zeros((len(q_all), n), np.float32)
    seg_s = np.zeros((len(q_all), n), np.float64)
    seg_e = np.zeros((len(q_all), n), np.float64)
    rows = np.arange(n)
    for a in range(0, len(q_all), chunk):
        q = q_all[a:a + chunk]
        sims = np.einsum("ntd,qd->qnt", padded, q).reshape(-1, tmax)
        res = rerank_scores(mode, sims, np.tile(lengths, len(q)), params, np.repeat(np.arange(len(q)), n))
        scores[a:a + len(q)] = res.score.reshape(len(q), n)
        first = res.seg_first.reshape(len(q), n)
        last = res.seg_last.reshape(len(q), n)
        seg_s[a:a + len(q)] = starts[rows[None, :], first]
        seg_e[a:a + len(q)] = ends[rows[None, :], last]
    return scores, seg_s, seg_e


def evaluate(emb: SynthEmbeddings, modes: tuple[str, ...] = ("fusion", "mean", "max"),
             params: FusionParams | None = None) -> dict[str, dict[str, float]]:
    """Metrics keyed ``"{level}/{t2a|a2t}/{mode}"`` → {"R@1", "R@5", "R@10", "mAP@10", "MedR", ...};
    section text→audio rows also carry ``IoU`` (mean) and ``IoU>=0.5`` for the caption's own track."""
    out: dict[str, dict[str, float]] = {}
    n = len(emb.frames)
    for level in LEVELS:
        owner = emb.owner[level]
        for mode in modes:
            scores, seg_s, seg_e = score_tracks(emb.texts[level], emb, mode, params)
            t2a, _, _ = retrieval_metrics_from_scores(scores, [np.array([o]) for o in owner], ks=KS)
            a2t, _, _ = retrieval_metrics_from_scores(
                scores.T, [np.flatnonzero(owner == i) for i in range(n)], ks=KS)
            if level == "section":
                own = np.arange(len(owner))
                iou = segment_iou(seg_s[own, owner], seg_e[own, owner], emb.spans[:, 0], emb.spans[:, 1])
                t2a["IoU"] = float(iou.mean())
                t2a["IoU>=0.5"] = float((iou >= 0.5).mean())
            out[f"{level}/t2a/{mode}"] = t2a
            out[f"{level}/a2t/{mode}"] = a2t
    return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table of ``evaluate``'s output (recalls and mAP in percent)."""
    cols = ["R@1", "R@5", "R@10", "mAP@10", "MedR", "IoU", "IoU>=0.5"]
    lines = ["| captions / direction / rerank | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, m in results.items():
        cells = []
        for c in cols:
            if c not in m:
                cells.append("")
            elif c == "MedR":
                cells.append(f"{m[c]:.1f}")
            else:
                cells.append(f"{100 * m[c]:.1f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m songseek.benchmarks.demo_eval``: evaluate the demo model (or any encoder) on held-out
    synthetic tracks and print the markdown table (and optionally write the numbers as JSON)."""
    import argparse
    import json
    import time
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m songseek.benchmarks.demo_eval", description=main.__doc__)
    ap.add_argument("--encoder", default="demo")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--seed", type=int, default=2, help="generator seed (the demo model trained on 1)")
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write the metrics here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    emb = embed_synth_set(load_encoder(args.encoder, args.checkpoint), args.seed, args.tracks)
    t1 = time.perf_counter()
    results = evaluate(emb)
    print(format_table(results))
    n_windows = sum(len(f) for f in emb.frames)
    print(f"\n{args.tracks} tracks (seed {args.seed}), {n_windows} windows, {len(emb.owner['section'])} "
          f"section captions; render+embed {t1 - t0:.0f} s, ranking {time.perf_counter() - t1:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "tracks": args.tracks, "windows": n_windows,
                                         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
