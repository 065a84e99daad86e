"""`songseek bench tagging | anomaly | mos`: the seed papers' evaluations on a library's stored vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import handles_errors, library_option, print_json


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("tagging")(tagging_cmd)
    bench_app.command("anomaly")(anomaly_cmd)
    bench_app.command("mos")(mos_cmd)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    from .tables import print_columns

    print_columns(title, header, [[_fmt(x) for x in r] for r in rows], text=header[:1])


@handles_errors
def tagging_cmd(
    dataset: Path = typer.Option(..., "--dataset", help="CSV: track_id or path, and label (single-label) or "
                                 "labels ('|'-separated, multi-label)."),
    library: Path = library_option(help="Library holding the dataset's tracks."),
    labels: str = typer.Option(None, "--labels", help="Label vocabulary: genres, moods, instruments, descriptors "
                               "or a file (default: the labels the dataset uses)."),
    template: list[str] = typer.Option([], "--template", help="Prompt template(s) with {label}."),
    aggregate: str = typer.Option("mean", "--aggregate", help="mean, max or fusion over windows."),
    device: str = typer.Option("auto", "--device", help="Device for the text encoder (auto, cpu, cuda)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Zero-shot tagging: accuracy (single-label) or ROC-AUC / PR-AUC per label and macro (multi-label)."""
    from songseek.benchmarks.tagging import run_tagging_bench
    from songseek.engine.analysis.tagging import load_label_set
    from songseek.engine.analysis.track_match import some_unmatched_note

    vocab = load_label_set(labels) if labels else None
    report = run_tagging_bench(library, dataset, vocab, template, aggregate, device=device)
    if json_out:
        print_json(report.to_json())
        return
    rows = [[r.label, r.positives, r.accuracy, r.roc_auc, r.pr_auc] for r in report.per_label]
    rows.append(["macro", sum(r.positives for r in report.per_label), report.macro_accuracy,
                 report.macro_roc_auc, report.macro_pr_auc])
    _table(f"{report.kind} zero-shot tagging, {report.tracks} tracks"
           + (f", accuracy {report.accuracy:.3f}" if report.accuracy is not None else ""),
           ["label", "positives", "accuracy", "ROC-AUC", "PR-AUC"], rows)
    note = some_unmatched_note(dataset, report.unmatched_rows, report.tracks + report.unmatched,
                               "those rows are left out")
    if note:
        typer.echo(f"warning: {note}", err=True)
    if report.skipped:
        typer.echo(f"note: no AUC for {len(report.skipped)} labels without both classes", err=True)


@handles_errors
def anomaly_cmd(
    dataset: Path = typer.Option(..., "--dataset", help="DCASE 2020 Task 2 folder: <machine>/train|test/*.wav."),
    work: Path = typer.Option(Path("anomaly-libraries"), "--work", help="Where the per-machine libraries are "
                              "built (reused by later runs)."),
    k: int = typer.Option(4, "-k", help="Nearest normal references per clip (the outlier paper uses 4)."),
    reference_per: str = typer.Option("id", "--reference-per", help="id (normals of the same machine ID) or type."),
    max_fpr: float = typer.Option(0.1, "--max-fpr", help="pAUC range (DCASE: 0.1)."),
    encoder: str = typer.Option(None, "--encoder", "-e", help="Encoder (default: laion)."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="The encoder's HF id, local directory or "
                                   ".pt file (default: the encoder's own)."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Real architecture, random weights: "
                                        "for pipeline checks only (the AUCs mean nothing)."),
    window: float = typer.Option(None, "--window", help="Window seconds (default: the encoder's native, or 10)."),
    device: str = typer.Option("auto", "--device", help="Device for the encoder (auto, cpu, cuda)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Anomalous sound detection: AUC and pAUC per machine type and ID (kNN distance to normal clips)."""
    from songseek.benchmarks.anomaly import run_anomaly_bench
    from songseek.cli.progress import RichProgress
    from songseek.engine.device import resolve_device
    from songseek.engine.encoders import DEFAULT_ENCODER, load_encoder

    enc = load_encoder(encoder or DEFAULT_ENCODER, checkpoint, resolve_device(device), random_weights)
    report = run_anomaly_bench(dataset, enc, work, k, reference_per, max_fpr, window, RichProgress(not json_out))
    if json_out:
        print_json(report.to_json())
        return
    rows = [[r.machine_type, r.machine_id, r.normal, r.anomalous, r.auc, r.pauc] for r in report.rows]
    rows.append(["all", "mean over IDs", "", "", report.mean_auc, report.mean_pauc])
    _table(f"anomaly detection (k={report.k}, reference per {report.reference})",
           ["machine", "id", "normal", "anomalous", "AUC", f"pAUC({report.max_fpr:g})"], rows)


@handles_errors
def mos_cmd(
    ratings: Path = typer.Option(..., "--ratings", help="CSV: track_id or path, impression[, alignment, prompt], "
                                 "system."),
    library: Path = library_option(help="Library holding the rated tracks."),
    system_column: str = typer.Option("system", "--system-column", help="Column naming each clip's system."),
    test_fraction: float = typer.Option(0.15, "--test-fraction", help="Held-out share (paper: 15%)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the split and of training."),
    epochs: int = typer.Option(1000, "--epochs", help="At most this many epochs (early stopping decides)."),
    patience: int = typer.Option(20, "--patience", help="Stop after this many epochs without improvement."),
    lr: float = typer.Option(5e-4, "--lr", help="Learning rate (paper: SGD 5e-4, momentum 0.9)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (paper) or adam."),
    device: str = typer.Option("auto", "--device", help="Device for the text encoder (prompts)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Opinion-score head: MSE, LCC, SRCC, KTAU at utterance and system level on a seeded test split."""
    from songseek.benchmarks.mos_bench import run_mos_bench
    from songseek.engine.analysis.mos import MosTrainConfig
    from songseek.engine.analysis.track_match import some_unmatched_note

    cfg = MosTrainConfig(max_epochs=epochs, patience=patience, lr=lr, optimizer=optimizer)
    report = run_mos_bench(library, ratings, system_column, test_fraction, seed, cfg, device)
    if json_out:
        print_json(report.to_json())
        return
    rows = []
    for level, metrics in (("utterance", report.utterance), ("system", report.system)):
        for score, m in metrics.items():
            rows.append([level, score, m.n, m.mse, m.lcc, m.srcc, m.ktau])
    _table(f"opinion scores: train {report.n_train}, test {report.n_test} (seed {report.seed})",
           ["level", "score", "n", "MSE", "LCC", "SRCC", "KTAU"], rows)
    note = some_unmatched_note(ratings, report.settings["unmatched_rows"], report.settings["rows"],
                               "those ratings are left out")
    if note:
        typer.echo(f"warning: {note}", err=True)
    if report.settings["averaged"]:
        typer.echo(f"note: {report.settings['averaged']} rows repeated a track (and prompt) and were averaged "
                   "into it", err=True)
