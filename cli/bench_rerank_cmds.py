"""`songseek bench rerank`: every rerank setting on a library's own labelled queries, and --save keeps the
best in the library (docs/fusion.md, "Per-library settings")."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from .common import handles_errors, print_json


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("rerank")(rerank)


@handles_errors
def rerank(
    library: Path = typer.Option(..., "--library", "-l", help="Library whose default rerank to measure."),
    queries: Path = typer.Option(..., "--queries", help="Parquet/CSV/JSONL with query (text) or vector, relevant "
                                 "(track id or list)[, start_s, end_s], as `bench retrieval --queries`."),
    save: bool = typer.Option(False, "--save", help="Keep the best setting in the library: every search uses it "
                              "unless it passes its own --rerank / fusion options."),
    candidates: int = typer.Option(None, "--candidates", help="Tracks reranked per query (default: every track "
                                   "up to 20,000 = exact ranks)."),
    ci: bool = typer.Option(False, "--ci", help="95% bootstrap intervals (1000 resamples over queries)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object: setting → metrics, best, saved."),
) -> None:
    """R@1/R@10/mAP@10/MedR (and segment IoU when the queries have spans) of each rerank setting; the best
    is the highest R@10 (then mAP@10, R@1; ties keep the default)."""
    from songseek.benchmarks.datasets import load_queries
    from songseek.benchmarks.rerank_tune import save_settings, tune_rerank
    from songseek.engine.query.search import Library

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(library, device=device)
    tuned = tune_rerank(lib, load_queries(queries), candidates, ci)
    if save:
        save_settings(library, tuned.best_settings)
    if json_out:
        print_json({"settings": {label: {**s.to_json(), "metrics": r.metrics}
                                 for label, (s, r) in tuned.results.items()},
                    "best": tuned.best, "saved": save})
        return
    from rich.console import Console
    from rich.table import Table

    cols = list(dict.fromkeys(k for _, r in tuned.results.values() for k in r.metrics if k != "MeanR"))
    n_q = next(iter(tuned.results.values()))[1].n_queries
    table = Table(title=f"{library}: {n_q} queries (R@K, mAP and IoU in %)")
    table.add_column("setting")
    for c in cols:
        table.add_column(c, justify="right")
    for label, (_, r) in tuned.results.items():
        cells = [f"{r.metrics[c]:.1f}" if c == "MedR" else f"{100 * r.metrics[c]:.1f}" if c in r.metrics else "–"
                 for c in cols]
        table.add_row(("* " if label == tuned.best else "  ") + label, *cells)
    Console(width=160).print(table)
    typer.echo(f"best: {tuned.best}" + (" (saved: searches of this library use it)" if save else
                                        " (not saved; --save keeps it)"))
