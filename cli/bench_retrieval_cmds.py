"""`songseek bench retrieval` (and `bench planted` when the planted module is there)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from .common import handles_errors, print_json


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("retrieval")(retrieval)
    try:
        from songseek.benchmarks import planted  # noqa: F401
    except ImportError:
        return
    bench_app.command("planted")(planted_cmd)


def _modes(rerank: str) -> list[str]:
    from songseek.engine.errors import UsageError
    from songseek.engine.search import RERANK_MODES

    modes = [m.strip() for m in rerank.split(",") if m.strip()]
    bad = [m for m in modes if m not in RERANK_MODES]
    if bad or not modes:
        raise UsageError(f"--rerank takes a comma list of {', '.join(RERANK_MODES)} (got {rerank!r})")
    return modes


def _emit(run_json: dict, results: dict, settings: dict, report: Path | None, json_out: bool) -> None:  # type: ignore[type-arg]
    if report is not None:
        from songseek.benchmarks.report import write_report

        paths = write_report(report, results, settings)
        if not json_out:
            typer.echo("report: " + ", ".join(str(p) for p in paths))
    if json_out:
        print_json(run_json)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    for direction, modes in run_json.items():
        if direction == "settings":
            continue
        table = Table(title=direction)
        cols = list(next(iter(modes.values())).keys())
        table.add_column("mode")
        for c in cols:
            table.add_column(c)
        for mode, metrics in modes.items():
            table.add_row(mode, *[f"{metrics[c]:.3f}" if isinstance(metrics[c], float) else str(metrics[c])
                                  for c in cols])
        console.print(table)


@handles_errors
def retrieval(
    library: Path = typer.Option(None, "--library", "-l", help="Library to evaluate (or to build for --dataset)."),
    queries: Path = typer.Option(None, "--queries", help="Parquet/CSV/JSONL: query or vector, relevant[, start_s, end_s]."),
    dataset: Path = typer.Option(None, "--dataset", help="Dataset manifest (CSV/JSONL/Parquet: path, caption[s]...)."),
    layout: str = typer.Option("manifest", "--layout", help="manifest, musiccaps or song-describer."),
    audio_dir: Path = typer.Option(None, "--audio-dir", help="Audio folder for the musiccaps/song-describer layouts."),
    missing: str = typer.Option("skip", "--missing", help="skip (evaluate what is present) or error."),
    subset_n: int = typer.Option(0, "--subset", help="Evaluate a seeded random subset of this many items (0 = all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of --subset."),
    encoder: str = typer.Option(None, "--encoder", "-e", help="Encoder for --dataset (default: laion)."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c"),
    random_weights: bool = typer.Option(False, "--random-weights"),
    window: float = typer.Option(10.0, "--window"),
    hop: float = typer.Option(None, "--hop"),
    rerank: str = typer.Option("fusion,mean,max,none", "--rerank", help="Comma list of rerank modes."),
    device: str = typer.Option("auto", "--device"),
    report: Path = typer.Option(None, "--report", help="Folder for report.json, report.md and PNG plots."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: mode → metrics, settings."),
) -> None:
    """R@K, mAP@10 and MedR of text→audio (and audio→text for datasets) through the real engine."""
    from songseek.benchmarks import datasets as ds
    from songseek.benchmarks.runner import evaluate_dataset, evaluate_queries
    from songseek.engine.errors import UsageError
    from songseek.engine.search import Library

    modes = _modes(rerank)
    if (queries is None) == (dataset is None):
        raise UsageError("give either --library LIB --queries FILE, or --dataset MANIFEST [--library LIB]")
    if queries is not None:
        if library is None:
            raise UsageError("--queries needs --library")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lib = Library.open(library, device=device)
        run = evaluate_queries(lib, ds.load_queries(queries), modes)
    else:
        from songseek.cli.progress import RichProgress
        from songseek.engine.device import resolve_device
        from songseek.engine.encoders import DEFAULT_ENCODER, load_encoder
        from songseek.indexers.pipeline import IndexConfig

        if layout == "manifest":
            data = ds.load_manifest(dataset)
        elif layout in ("musiccaps", "song-describer"):
            if audio_dir is None:
                raise UsageError(f"--layout {layout} needs --audio-dir")
            loader = ds.load_musiccaps if layout == "musiccaps" else ds.load_song_describer
            data = loader(dataset, audio_dir, on_missing=missing)  # type: ignore[operator]
        else:
            raise UsageError("--layout is manifest, musiccaps or song-describer")
        if data.missing and missing == "error":
            raise UsageError(f"{dataset}: {len(data.missing)} audio files are missing, e.g. {data.missing[0]}")
        if data.missing:
            typer.echo(f"note: {len(data.missing)} audio files missing; evaluating the {len(data.items)} present",
                       err=True)
        if subset_n:
            data = ds.subset(data, subset_n, seed)
        library = library or Path(str(dataset) + ".songseek")
        enc = load_encoder(encoder or DEFAULT_ENCODER, checkpoint, resolve_device(device), random_weights)
        run = evaluate_dataset(data, library, enc, modes, IndexConfig(window_s=window, hop_s=hop),
                               progress=RichProgress(not json_out))
    _emit(run.to_json(), run.results, run.settings, report, json_out)


@handles_errors
def planted_cmd(
    tracks: int = typer.Option(500, "--tracks", help="Synthetic tracks (1-10 minutes each)."),
    seed: int = typer.Option(7, "--seed"),
    dim: int = typer.Option(64, "--dim"),
    rerank: str = typer.Option("fusion,mean,max,none", "--rerank"),
    work: Path = typer.Option(None, "--work", help="Folder for the generated library (default: a temp dir)."),
    report: Path = typer.Option(None, "--report", help="Folder for report.json, report.md and PNG plots."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Seeded long-form tracks with planted sections (no model): whole-track and section queries."""
    import tempfile

    from songseek.benchmarks.planted_run import run_planted

    modes = _modes(rerank)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_planted(tracks, seed, dim, modes, work or Path(tmp) / "planted.songseek")
    _emit(run.to_json(), run.results, run.settings, report, json_out)
