"""Session 9 study for issue 12 (docs/fusion.md, "Session 9"): does the vectors' geometry tell a bare
query's kind, and does a track's centred centroid rank whole-track queries better than mean pooling?

Both use *centred cosines*: a query's similarities minus their candidate mean μ (track-weighted), over the
norm of a vector after removing the mean cross-track window similarity μ_G of the candidates. For a track
t, C_t = (mean_i s_ti − μ) / sqrt(|m_t|² − μ_G) with m_t the mean of its unit window vectors; for a run of
k ≤ 3 windows the same with the run's mean vector. An increasing affine map of the query's similarities,
or one shared direction orthogonal to the data added to every vector, multiplies every numerator by one
constant and every |m|² − μ_G by another, so rankings and the ratio below do not change.

    python scripts/rerank_geometry_study.py --planted-seed 0 --demo-seeds 2 --cache ~/.cache/songseek/rerank-report

Prints, per dataset and query kind, R@10 of mean, max and centroid pooling, and the quantiles of the ratio
R = max_t C_t / max over runs of the run cosine (a kind detector: whole-track queries should have R near 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from songseek.benchmarks.planted import make_planted
from songseek.benchmarks.rerank_cases import (
    ANISO_SHIFT,
    CACHE_VERSION,
    PLANTED_GEOMETRIES,
    embed_demo_set,
    load_demo_set,
    save_demo_set,
)
from songseek.engine.encoders import load_encoder
from songseek.engine.encoders.base import l2_normalize

MAX_RUN = 3


def centred_scores(frames: np.ndarray, starts: np.ndarray, queries: np.ndarray) -> dict[str, np.ndarray]:
    """(Q, N) scores per pooling and (Q,) ratio R, every track a candidate."""
    n, lengths = len(starts) - 1, np.diff(starts)
    f = frames.astype(np.float64)
    cents = np.add.reduceat(f, starts[:-1], axis=0) / lengths[:, None]
    norm2 = np.sum(cents**2, axis=1)
    total = cents.sum(axis=0)
    mu_g = (total @ total - norm2.sum()) / (n * (n - 1))  # mean m_t · m_u over candidate pairs t ≠ u
    sims = queries.astype(np.float64) @ f.T
    weights = np.repeat(1.0 / lengths, lengths) / n  # every track weighs the same
    x = sims - (sims @ weights)[:, None]
    mean = np.add.reduceat(x, starts[:-1], axis=1) / lengths[None]
    centroid = mean / np.sqrt(np.maximum(norm2 - mu_g, (1 - mu_g) / lengths))[None]
    run = np.full((len(queries), n), -np.inf)
    for t in range(n):
        a, b = int(starts[t]), int(starts[t + 1])
        gram, xs = f[a:b] @ f[a:b].T, x[:, a:b]
        csum = np.cumsum(np.pad(xs, ((0, 0), (1, 0))), axis=1)
        for k in range(1, min(MAX_RUN, b - a) + 1):
            run_mean = (csum[:, k:] - csum[:, :-k]) / k
            run_norm2 = np.array([gram[i : i + k, i : i + k].sum() / k**2 for i in range(b - a - k + 1)])
            cos = run_mean / np.sqrt(np.maximum(run_norm2 - mu_g, 1e-12))[None]
            run[:, t] = np.maximum(run[:, t], cos.max(axis=1))
    return {"mean": mean, "max": np.maximum.reduceat(x, starts[:-1], axis=1), "centroid": centroid,
            "ratio": centroid.max(axis=1) / run.max(axis=1)}


def recall_at_10(scores: np.ndarray, relevant: np.ndarray) -> float:
    """R@10 in %, ties counted against the relevant track."""
    own = scores[np.arange(len(relevant)), relevant]
    return 100.0 * float(np.mean((scores >= own[:, None]).sum(axis=1) <= 10))


def show(label: str, frames: np.ndarray, starts: np.ndarray, queries: np.ndarray, relevant: np.ndarray) -> None:
    s = centred_scores(frames, starts, queries)
    r10 = "  ".join(f"{k} {recall_at_10(s[k], relevant):5.1f}" for k in ("mean", "max", "centroid"))
    quant = " ".join(f"{v:.2f}" for v in np.quantile(s["ratio"], [0.1, 0.25, 0.5, 0.75, 0.9]))
    print(f"{label:26s} {len(queries):4d} q  R@10 {r10}  |  R q10-q90 {quant}", flush=True)


def planted(seed: int) -> None:
    for geometry, keywords in PLANTED_GEOMETRIES.items():
        p = make_planted(200, seed=seed, **keywords)
        frames, queries = p.frames, p.queries
        if geometry == "aniso":  # as rerank_cases.planted_cases builds it
            u = l2_normalize(np.random.default_rng(10_000 + seed).normal(size=(1, frames.shape[1])))
            frames = l2_normalize(frames.astype(np.float64) + ANISO_SHIFT * u)
            queries = l2_normalize(queries.astype(np.float64) + ANISO_SHIFT * u)
        for kind, sel in (("whole", ~p.is_section), ("section", p.is_section)):
            show(f"planted-{geometry} s{seed} {kind}", frames, p.track_start, queries[sel], p.query_track[sel])


def demo(seed: int, n_tracks: int, cache: Path) -> None:
    path = cache / f"demo-seed{seed}-{n_tracks}-v{CACHE_VERSION}.npz"
    if path.is_file():
        d = load_demo_set(str(path))
    else:
        d = embed_demo_set(load_encoder("demo"), seed, n_tracks)
        cache.mkdir(parents=True, exist_ok=True)
        save_demo_set(d, str(path))
    lengths = np.array([len(f) for f in d.frames])
    starts, frames = np.concatenate([[0], np.cumsum(lengths)]), np.concatenate(d.frames)
    fits = np.array([len(c) == 1 for c in d.long_chunks])  # whole descriptions read as one vector
    for kind, queries, owner in (("whole", d.texts["whole"][fits], d.owner["whole"][fits]),
                                 ("section", d.texts["section"], d.owner["section"]),
                                 ("tags", d.texts["tags"], d.owner["tags"]),
                                 ("example", d.examples, d.example_owner)):
        show(f"demo s{seed} {kind}", frames, starts, queries, owner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--planted-seed", type=int, action="append", default=[])
    ap.add_argument("--demo-seeds", type=str, default="", help="comma-separated generator seeds")
    ap.add_argument("--demo-tracks", type=int, default=80)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/songseek/rerank-report")
    args = ap.parse_args()
    for seed in args.planted_seed:
        planted(seed)
    for seed in filter(None, args.demo_seeds.split(",")):
        demo(int(seed), args.demo_tracks, args.cache)


if __name__ == "__main__":
    main()
