"""`songseek bench rerank`: every rerank setting on a library's own labelled queries, and --save keeps the
best in the library (docs/fusion.md, "Per-library settings"). `songseek bench example`: query by example
with excerpts of several windows, the align rerank against the poolings on generated tracks."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from .common import handles_errors, print_json


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("rerank")(rerank)
    bench_app.command("example")(example)


def selection_notes(excluded: dict[str, str], segments_measured: bool) -> list[str]:
    """Lines saying which settings segment quality ruled out, or that it was not measured at all."""
    if not segments_measured:
        return ["segment quality not measured (no start_s/end_s spans in the queries): the best is chosen "
                "on ranking only, and --save may change the segments searches return."]
    return [f"x {label}: not eligible, {why}" for label, why in excluded.items()]


@handles_errors
def rerank(
    library: Path = typer.Option(..., "--library", "-l", help="Library whose default rerank to measure."),
    queries: Path = typer.Option(..., "--queries", help="Parquet/CSV/JSONL with query (text) or vector, relevant "
                                 "(track id or list)[, start_s, end_s], as `bench retrieval --queries`."),
    save: bool = typer.Option(False, "--save", help="Keep the best setting in the library: every search uses it "
                              "unless it passes its own --rerank / fusion options."),
    candidates: int = typer.Option(None, "--candidates", min=1, help="Tracks reranked per query (default: every track "
                                   "up to 20,000 = exact ranks)."),
    ci: bool = typer.Option(False, "--ci", help="95% bootstrap intervals (1000 resamples over tracks: "
                            "queries about the same tracks drawn together)."),
    wait: bool = typer.Option(False, "--wait", help="With --save: wait for another writer of this library (an "
                              "indexer) to finish instead of failing."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object: setting → metrics, best, saved, "
                                  "excluded (label → why), segments_measured."),
) -> None:
    """R@1/R@10/mAP@10/MedR (and segment IoU when the queries have spans) of each rerank setting; the best
    is the highest R@10 (then mAP@10, R@1; ties keep the default). With spans, a setting whose IoU>=0.5 is
    more than 1 point below the default's (auto) is not eligible; without spans segment quality is not
    measured and --save is about ranking only."""
    from songseek.benchmarks.datasets import load_queries
    from songseek.benchmarks.rerank_tune import check_writable, save_settings, tune_rerank
    from songseek.benchmarks.runner import unknown_ids_note
    from songseek.engine.query.search import Library

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(library, device=device)
    if save and not wait:
        check_writable(library)  # a library another process is writing fails now, not after the measurement
    tuned = tune_rerank(lib, load_queries(queries), candidates, ci)
    unknown = unknown_ids_note(tuned.unknown_relevant, tuned.unknown_examples, library)
    if unknown:
        typer.echo(f"note: {unknown}", err=True)
    if save:
        save_settings(library, tuned.best_settings, wait=wait)
    if json_out:
        print_json({"settings": {label: {**s.to_json(), "metrics": r.metrics}
                                 for label, (s, r) in tuned.results.items()},
                    "best": tuned.best, "saved": save, "excluded": tuned.excluded,
                    "segments_measured": tuned.segments_measured})
        return
    from .tables import print_columns

    cols = list(dict.fromkeys(k for _, r in tuned.results.values() for k in r.metrics if k != "MeanR"))
    n_q = next(iter(tuned.results.values()))[1].n_queries
    rows = []
    for label, (_, r) in tuned.results.items():
        cells = [f"{r.metrics[c]:.1f}" if c == "MedR" else f"{100 * r.metrics[c]:.1f}" if c in r.metrics else "–"
                 for c in cols]
        mark = "* " if label == tuned.best else "x " if label in tuned.excluded else "  "
        rows.append([mark + label, *cells])
    print_columns(f"{library}: {n_q} queries (R@K, mAP and IoU in %)", ["setting", *cols], rows, text=["setting"])
    for line in selection_notes(tuned.excluded, tuned.segments_measured):
        typer.echo(line)
    typer.echo(f"best: {tuned.best}" + (" (saved: searches of this library use it)" if save else
                                        " (not saved; --save keeps it)"))


@handles_errors
def example(
    seeds: str = typer.Option("11,12", "--seeds", help="Generator seeds, comma-separated (the demo model was "
                              "trained on seed 1; align's hedge weight was chosen on seeds 9 and 10)."),
    tracks: int = typer.Option(40, "--tracks", help="Tracks per seed."),
    lengths: str = typer.Option("15,20,30,60", "--lengths", help="Excerpt lengths in seconds, comma-separated "
                                "(each longer than one 10 s window)."),
    per_track: int = typer.Option(2, "--per-track", help="Excerpts per track and length."),
    encoder: str = typer.Option("demo", "--encoder", help="Encoder that embeds tracks and excerpts."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Its checkpoint (default: the encoder's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object: rows of R@1/R@10 per method, Δ and its "
                                  "interval."),
) -> None:
    """Query by example with excerpts of 2+ windows: R@1 and R@10 of each excerpt's own track under the
    default (align), align without its hedge, the old default (hedge on the excerpt's mean vector) and mean
    and max pooling, clean and at 10 dB SNR; Δ = R@10 of the default minus the better pooling, 95% interval
    over tracks (docs/fusion.md, "Session 13: query by example, excerpts of several windows")."""
    from songseek.benchmarks.example_bench import METHODS, run_example_bench
    from songseek.engine.device import resolve_device
    from songseek.engine.encoders import load_encoder
    from songseek.engine.errors import UsageError

    try:
        seed_list = [int(x) for x in seeds.split(",")]
        length_list = [float(x) for x in lengths.split(",")]
    except ValueError as exc:
        raise UsageError(f"--seeds and --lengths take comma lists of numbers ({exc})") from exc
    enc = load_encoder(encoder, checkpoint, resolve_device(device), False)
    report = run_example_bench(enc, seed_list, tracks, length_list, per_track)
    if json_out:
        print_json(report.to_json())
        return
    from .tables import print_columns

    rows = []
    for r in report.rows:
        d, lo, hi = r.delta()
        cells = [f"{100 * r.recall(m, 1):.1f} / {100 * r.recall(m, 10):.1f}" for m in METHODS]
        rows.append([f"{r.length_s:g} s", "clean" if r.snr_db is None else f"{r.snr_db:g} dB", str(len(r.groups)),
                     *cells, r.better_pooling(), f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"])
    print_columns(f"query by example, seeds {seeds}, {tracks} tracks each (R@1 / R@10 of the excerpt's own track, %)",
                  ["excerpt", "noise", "queries", *METHODS, "better pooling", "Δ R@10 vs it [95%]"], rows,
                  text=["excerpt", "noise"])
