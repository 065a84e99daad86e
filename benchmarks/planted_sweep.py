"""Sweep FusionParams on planted datasets (benchmarks/planted.py) and print a markdown table.

``python -m songseek.benchmarks.planted_sweep [--tracks 300] [--seeds 0,1,2] [--quick]`` prints, for the
baselines (none/mean/max/trackvec) and the best fusion settings of the grid, the mean over seeds of R@1,
R@10, MedR and the section IoU>=0.5 rate, for whole-track and section queries. Settings are ranked by the
mean of whole-track and section R@10 (mAP@10 breaks ties). docs/fusion.md has the run that chose the
defaults.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from songseek.benchmarks.metrics import segment_iou
from songseek.benchmarks.planted import (
    evaluate_fusion_gammas,
    evaluate_planted_arrays,
    make_planted,
    planted_sims,
    summarize,
)
from songseek.engine.query.fusion import FusionParams, rerank_scores

__all__ = [
    "BASELINES",
    "FINE_GAMMAS",
    "GAMMAS",
    "SweepRow",
    "compare",
    "default_grid",
    "describe",
    "fine_grid",
    "markdown",
    "segment_table",
    "sweep",
]

BASELINES = ("none", "mean", "max", "trackvec")
GAMMAS = ((1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0))

Table = dict[str, dict[str, float]]  # {query group: {metric: value}}


@dataclass(frozen=True)
class SweepRow:
    """Metrics of one setting (a baseline mode, or fusion with ``params``), averaged over seeds.
    ``metrics``: {"whole"|"section"|"section_long": {"R@1", "R@10", "mAP@10", "MedR", "IoU>=0.5", ...}}."""

    label: str
    params: FusionParams | None
    metrics: Table

    def key(self) -> tuple[float, float]:
        w, s = self.metrics["whole"], self.metrics["section"]
        return (w["R@10"] + s["R@10"]) / 2, (w["mAP@10"] + s["mAP@10"]) / 2


def default_grid(quick: bool = False) -> list[FusionParams]:
    """Fuse settings swept (each is then scored at every gamma pair of ``GAMMAS``): frames mode over
    tau x H with S = 1, H = 4 with S = 2, and the paper's proportional mode. The segment rule does not
    change the ranking; ``segment_table`` compares the rules."""
    taus = (0.02, 0.05, 0.1) if quick else (0.01, 0.02, 0.05, 0.1, 0.3, 1.0)
    kernels = (2, 3) if quick else (1, 2, 3, 4, 6)
    grid = [FusionParams(kernel=h, stride=1, temperature=tau) for tau, h in itertools.product(taus, kernels)]
    grid += [FusionParams(kernel=4, stride=2, temperature=tau) for tau in taus]
    grid += [
        FusionParams(mode="proportional", kernel=eta_k, stride=eta_s, temperature=tau)
        for eta_k, eta_s, tau in itertools.product((3.0, 6.0), (1.0, 3.0), taus)
    ]
    return [replace(p, segment="attention") for p in grid]


def fine_grid() -> list[FusionParams]:
    """The second, finer sweep around the best region of ``default_grid`` (run with ``FINE_GAMMAS``)."""
    return [
        FusionParams(kernel=h, stride=1, temperature=tau, segment="attention")
        for h, tau in itertools.product((1, 2, 3), (0.03, 0.05, 0.07))
    ]


FINE_GAMMAS = ((0.15, 0.85), (0.25, 0.75), (0.35, 0.65), (0.5, 0.5))


def segment_table(params: FusionParams, n_tracks: int = 300, seeds: Iterable[int] = (0, 1, 2)) -> str:
    """Markdown: section-query IoU >= 0.5 rate and mean IoU of the relevant track's segment under both
    segment rules and segment kernels 1-4 (the score's params otherwise), and of the mean / max modes."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in seeds:
        planted = make_planted(n_tracks, seed=seed)
        ps = planted_sims(planted)
        sec = planted.is_section
        rel = np.arange(planted.queries.shape[0]) * planted.n_tracks + planted.query_track
        sims, lengths = ps.sims[rel], ps.lengths[rel]  # the segment only needs the relevant track's row

        cases = [("max: the best window", "max", params)]
        cases += [
            (f"mean: the kernel of best mean similarity, {h} windows", "mean", replace(params, segment_kernel=h))
            for h in (2, 3, 4)
        ]
        cases += [
            (f"fusion: segment={rule}, segment_kernel={h}", "fusion", replace(params, segment=rule, segment_kernel=h))
            for rule, h in itertools.product(("kernel", "attention"), (1, 2, 3, 4))
        ]
        for label, mode, p in cases:
            res = rerank_scores(mode, sims, lengths, p)
            start, end = res.seg_first * planted.hop_s, (res.seg_last + 1) * planted.hop_s
            iou = segment_iou(start, end, planted.query_start_s, planted.query_end_s)[sec]
            rows.setdefault(label, []).append((float(np.mean(iou >= 0.5)), float(np.mean(iou))))
    lines = ["| segment | section IoU>=0.5 | section mean IoU |", "|---|---|---|"]
    for label, vals in rows.items():
        a = np.mean(vals, axis=0)
        lines.append(f"| {label} | {a[0]:.3f} | {a[1]:.3f} |")
    return "\n".join(lines)


def compare(
    settings: dict[str, FusionParams],
    n_tracks: int = 300,
    seeds: Iterable[int] = (3, 4, 5),
    n_candidates: int | None = None,
) -> str:
    """Markdown: baselines and the named fusion settings on (held-out) ``seeds``, all query groups."""
    per: dict[str, list[Table]] = {}
    for seed in seeds:
        planted = make_planted(n_tracks, seed=seed)
        ps = planted_sims(planted)
        base = evaluate_planted_arrays(planted, FusionParams(), BASELINES, n_candidates, ps)
        for mode, table in _by_mode(summarize(planted, base)).items():
            per.setdefault(mode, []).append(table)
        for name, p in settings.items():
            ev = evaluate_planted_arrays(planted, p, ("fusion",), n_candidates, ps)
            per.setdefault(f"fusion {name}", []).append(_by_mode(summarize(planted, ev))["fusion"])
    return markdown([SweepRow(label, None, _mean_tables(tables)) for label, tables in per.items()], top=0)


def _mean_tables(tables: Sequence[Table]) -> Table:
    return {group: {k: float(np.mean([t[group][k] for t in tables])) for k in tables[0][group]} for group in tables[0]}


def _by_mode(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, Table]:
    """{group: {mode: metrics}} → {mode: {group: metrics}}."""
    out: dict[str, Table] = {}
    for group, modes in table.items():
        for mode, metrics in modes.items():
            out.setdefault(mode, {})[group] = metrics
    return out


def sweep(
    n_tracks: int = 300,
    seeds: Iterable[int] = (0, 1, 2),
    grid: Sequence[FusionParams] | None = None,
    n_candidates: int | None = None,
    gammas: Sequence[tuple[float, float]] = GAMMAS,
) -> list[SweepRow]:
    """Baselines, then every fusion setting (grid x gammas), each averaged over ``seeds``."""
    grid = default_grid() if grid is None else grid
    per: dict[str, list[Table]] = {}
    settings: dict[str, FusionParams] = {}
    for seed in seeds:
        planted = make_planted(n_tracks, seed=seed)
        sims = planted_sims(planted)
        base = evaluate_planted_arrays(planted, FusionParams(), BASELINES, n_candidates, sims)
        for mode, table in _by_mode(summarize(planted, base)).items():
            per.setdefault(mode, []).append(table)
        for params in grid:
            for (gk, gt), ev in evaluate_fusion_gammas(planted, params, list(gammas), n_candidates, sims).items():
                p = replace(params, gamma_k=gk, gamma_t=gt)
                settings[describe(p)] = p
                per.setdefault(describe(p), []).append(_by_mode(summarize(planted, {"fusion": ev}))["fusion"])
    rows = [SweepRow(mode, None, _mean_tables(per[mode])) for mode in BASELINES]
    rows += [SweepRow("fusion", p, _mean_tables(per[label])) for label, p in settings.items()]
    return rows


def describe(p: FusionParams | None) -> str:
    if p is None:
        return ""
    geom = f"H={p.kernel:g} S={p.stride:g}" if p.mode == "frames" else f"prop ηK={p.kernel:g} ηS={p.stride:g}"
    return f"{geom} τ={p.temperature:g} γK={p.gamma_k:g} γT={p.gamma_t:g} seg={p.segment}"


def markdown(rows: Sequence[SweepRow], top: int = 15, extra: Sequence[str] = ()) -> str:
    """Baselines, the ``top`` fusion settings by key, and the settings whose description is in ``extra``."""
    head = (
        "| setting | whole R@1 | whole R@10 | whole MedR | section R@1 | section R@10 | section MedR "
        "| long-track section R@10 | section IoU>=0.5 | key |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    fusion = sorted((r for r in rows if r.params is not None), key=lambda r: r.key(), reverse=True)
    chosen = fusion[:top] + [r for r in fusion[top:] if describe(r.params) in extra]
    lines = [head]
    for r in [r for r in rows if r.params is None] + chosen:
        w, s = r.metrics["whole"], r.metrics["section"]
        sl = r.metrics.get("section_long", {}).get("R@10", math.nan)
        label = r.label if r.params is None else f"fusion {describe(r.params)}"
        lines.append(
            f"| {label} | {w['R@1']:.3f} | {w['R@10']:.3f} | {w['MedR']:.1f} | {s['R@1']:.3f} | {s['R@10']:.3f} "
            f"| {s['MedR']:.1f} | {sl:.3f} | {s['IoU>=0.5']:.3f} | {r.key()[0]:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a command-line entry point
    ap = argparse.ArgumentParser(description="Sweep FusionParams on planted datasets.")
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2", help="seeds the settings are chosen on")
    ap.add_argument("--heldout", default="3,4,5", help="seeds the chosen setting is checked on")
    ap.add_argument("--candidates", type=int, default=None)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--grid", choices=("full", "quick", "fine"), default="full")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    grid = fine_grid() if args.grid == "fine" else default_grid(args.grid == "quick")
    gammas = FINE_GAMMAS if args.grid == "fine" else GAMMAS
    rows = sweep(args.tracks, seeds, grid, args.candidates, gammas)
    print(markdown(rows, args.top))
    best = max((r for r in rows if r.params is not None), key=lambda r: r.key())
    assert best.params is not None
    print(f"\nSegments of the best setting ({describe(best.params)}), seeds {args.seeds}:\n")
    print(segment_table(best.params, args.tracks, seeds))
    heldout = [int(s) for s in args.heldout.split(",") if s.strip()]
    if heldout:
        print(f"\nHeld-out seeds {args.heldout}:\n")
        settings = {
            f"best: {describe(best.params)}": best.params,
            f"defaults: {describe(FusionParams())}": FusionParams(),
        }
        print(compare(settings, args.tracks, heldout, args.candidates))


if __name__ == "__main__":  # pragma: no cover
    main()
