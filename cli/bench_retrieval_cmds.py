"""`songseek bench retrieval` and `songseek bench planted`: retrieval metrics through the real engine.

``register_bench(bench_app)`` adds both commands to the `bench` typer group (cli/bench_cmds.py).
JSON shapes are documented in docs/benchmarks.md ("songseek bench").
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from .common import handles_errors, library_option, print_json


def register_bench(bench_app: typer.Typer) -> None:
    """Add `retrieval` and `planted` to the `bench` group."""
    bench_app.command("retrieval")(retrieval)
    bench_app.command("planted")(planted)


def _modes(rerank: str) -> list[str]:
    from songseek.engine.errors import UsageError
    from songseek.engine.query.fusion import RERANK_MODES

    modes = list(dict.fromkeys(m.strip() for m in rerank.split(",") if m.strip()))
    bad = [m for m in modes if m not in RERANK_MODES]
    if bad or not modes:
        raise UsageError(f"--rerank takes a comma list of {', '.join(RERANK_MODES)} (got {rerank!r})")
    return modes


def _fusion_changes(kernel: float | None, stride: float | None, temperature: float | None) -> dict[str, Any]:
    """The fusion parameters given on the command line (FusionParams fields); the rest stay the library's."""
    given = {"kernel": kernel, "stride": stride, "temperature": temperature}
    return {name: float(value) for name, value in given.items() if value is not None}


class _QueryBar:
    """Queries done / total on stderr (rich), implementing engine.progress.Progress; off when not a tty."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.perf_counter()

    def start(self, total_files: int, description: str = "") -> None:
        if not self.enabled or total_files == 0:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(description or "queries", total=total_files)

    def advance(self, files: int = 0, windows: int = 0, audio_s: float = 0.0) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=files)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _emit(run: Any, report: Path | None, json_out: bool) -> None:
    if run.settings.get("random_weights"):
        typer.echo("note: the library was built with RANDOM weights: these figures mean nothing", err=True)
    from songseek.benchmarks.runner import unknown_ids_note

    unknown = unknown_ids_note(run.settings.get("unknown_relevant_ids", 0),
                               run.settings.get("unknown_relevant_examples", []), run.settings.get("library", ""))
    if unknown:
        typer.echo(f"note: {unknown}", err=True)
    long_clips = run.settings.get("clips_longer_than_30s", 0)
    if long_clips:  # --layout musiccaps reads each file as the 10 s clip
        typer.echo(f"note: {long_clips} MusicCaps file(s) are longer than 30 s, so they are not the 10 s clips "
                   "--layout musiccaps expects; if the folder holds whole YouTube audio, use --layout "
                   "musiccaps-full (items become each row's start_s-end_s)", err=True)
    extra = run.settings.get("distractor_tracks", 0)
    if extra:  # a reused library: its other tracks are extra text→audio candidates (lower scores)
        typer.echo(f"note: {extra} track(s) of the library are in no dataset item; they are extra text→audio "
                   "candidates (use a new --library to rank among the dataset's tracks only)", err=True)
    unindexed = run.settings.get("items", 0) - run.settings.get("items_evaluated", 0)
    if unindexed > 0:
        typer.echo(f"note: {unindexed} item(s) could not be indexed and are left out (see `songseek failures "
                   f"--library {run.settings.get('library')}`)", err=True)
    outside = run.settings.get("spans_without_windows", {}).get("audio_to_text", 0)
    if outside:
        typer.echo(f"note: {outside} audio→text items have a span that no indexed window reaches; "
                   "they count as misses (worst rank)", err=True)
    from songseek.benchmarks.report import saturated_recall_note

    for direction, modes in run.results.items():
        saturated = saturated_recall_note(direction, modes)
        if saturated:
            typer.echo(f"note: {direction}: {saturated}", err=True)
    if report is not None:
        from songseek.benchmarks.report import write_report

        paths = write_report(report, run.results, {**run.settings, **run.extra})
        if not json_out:
            typer.echo("report: " + ", ".join(str(p) for p in paths), err=True)
    if json_out:
        print_json(run.to_json())
        return
    from songseek.benchmarks.report import format_metric, metric_unit

    from .tables import console, print_columns

    for direction, modes in run.results.items():
        cols = list(dict.fromkeys(k for r in modes.values() for k in r.metrics))
        n_q = next(iter(modes.values())).n_queries
        print_columns(f"{direction} ({n_q} queries; R@K, mAP and IoU in %, MedR/MeanR as ranks)",
                      ["mode", *(f"{c} ({metric_unit(c)})" for c in cols)],
                      [[mode, *(format_metric(c, r.metrics.get(c)) for c in cols)] for mode, r in modes.items()],
                      text=["mode"])
    for direction, diff in run.extra.get("fusion_vs_mean", {}).items():
        parts = [f"{k} {100 * v['diff']:+.2f} [{100 * v['ci'][0]:+.2f}, {100 * v['ci'][1]:+.2f}]"
                 for k, v in diff.items() if k in ("R@1", "R@10", "mAP@10")]
        console().print(f"fusion - mean, {direction}: " + "; ".join(parts) + " (points, 95% paired bootstrap)")


def _open_library(library: Path, device: str) -> Any:
    from songseek.engine.query.search import Library

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Library.open(library, device=device)


@handles_errors
def retrieval(
    library: Path = library_option(required=False, help="Library to evaluate (or to build for --dataset)."),
    queries: Path = typer.Option(None, "--queries", help="Parquet/CSV/JSONL with query (text) or vector, relevant "
                                 "(track id or list)[, start_s, end_s]."),
    dataset: Path = typer.Option(None, "--dataset", help="Dataset manifest (CSV/JSONL/Parquet: path, caption[s])."),
    layout: str = typer.Option("manifest", "--layout", help="manifest, musiccaps (each file the 10 s clip), "
                               "musiccaps-full (each file the whole YouTube audio) or song-describer."),
    audio_dir: Path = typer.Option(None, "--audio-dir", help="Audio folder for the musiccaps/song-describer layouts."),
    missing: str = typer.Option("skip", "--missing", help="skip (evaluate what is present) or error."),
    subset_n: int = typer.Option(0, "--subset", help="Evaluate a seeded random subset of this many items/queries "
                                 "(0 = all; MusCALL used 1000 pairs)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of --subset (recorded in settings.subset)."),
    encoder: str = typer.Option(None, "--encoder", "-e", help="Encoder for --dataset (default: the library's, "
                                "else laion)."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="Checkpoint of --encoder."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Untrained weights (plumbing checks only)."),
    window: float = typer.Option(None, "--window", help="Window seconds for a new library (default: the encoder's "
                                 "native window, 10; 7 for msclap)."),
    hop: float = typer.Option(None, "--hop", help="Hop seconds for a new library (default = window)."),
    rerank: str = typer.Option("auto,hedge,fusion,mean,max,none", "--rerank", help="Comma list of rerank modes."),
    candidates: int = typer.Option(None, "--candidates", min=1, help="Tracks reranked per query, as in `search` "
                                   "(default: every track up to 20,000 = exact ranks; 0 = every track)."),
    kernel: float = typer.Option(None, "--kernel", help="Fusion kernel in frames (windows at the library's hop; "
                                 "`songseek search --kernel-s` takes seconds); default the engine's."),
    stride: float = typer.Option(None, "--stride", help="Fusion stride in frames (`search --stride-s`: seconds); "
                                 "default the engine's."),
    temperature: float = typer.Option(None, "--temperature", help="Fusion softmax temperature; default the engine's."),
    ci: bool = typer.Option(False, "--ci", help="95% bootstrap intervals (1000 resamples over tracks: a track "
                            "is drawn with all of its captions or queries)."),
    workers: int = typer.Option(1, "--workers", help="Processes searching vector queries in parallel."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    report: Path = typer.Option(None, "--report", help="Folder for report.json, report.md and PNG plots."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: mode → metrics, settings."),
) -> None:
    """R@K, mAP@10 and MedR of text→audio (and audio→text for datasets) through the real engine."""
    from songseek.benchmarks import datasets as ds
    from songseek.benchmarks.runner import evaluate_dataset, evaluate_queries, subset_queries
    from songseek.engine.errors import UsageError

    modes = _modes(rerank)
    changes = _fusion_changes(kernel, stride, temperature)
    if (queries is None) == (dataset is None):
        raise UsageError("give either --library LIB --queries FILE, or --dataset MANIFEST [--library LIB]")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if queries is not None:
        if library is None:
            raise UsageError("--queries needs --library")
        lib = _open_library(library, device)
        qs = ds.load_queries(queries)
        if subset_n:
            qs = subset_queries(qs, subset_n, seed)
        # the library's rerank parameters (saved, or for its hop and window), as `songseek search` uses them
        fusion = replace(lib.rerank_settings().params, **changes)
        run = evaluate_queries(lib, qs, modes, fusion, candidates=candidates, ci=ci, workers=workers,
                               progress=_QueryBar(not json_out))
    else:
        data = _load_dataset(ds, dataset, layout, audio_dir, missing)
        if subset_n:
            data = ds.subset(data, subset_n, seed)
        library = library or Path(str(dataset) + ".songseek")
        enc, config = _encoder_and_config(library, encoder, checkpoint, random_weights, window, hop, device)
        from songseek.cli.progress import RichProgress

        run = evaluate_dataset(data, library, enc, modes, config, candidates=candidates, ci=ci,
                               workers=workers, progress=RichProgress(not json_out),
                               query_progress=lambda: _QueryBar(not json_out), fusion_changes=changes)
    _emit(run, report, json_out)


def _load_dataset(ds: Any, dataset: Path, layout: str, audio_dir: Path | None, missing: str) -> Any:
    from songseek.engine.errors import UsageError

    if missing not in ("skip", "error"):
        raise UsageError(f"--missing is skip or error, got {missing!r}")
    if layout == "manifest":
        data = ds.load_manifest(dataset, on_missing=missing)
    elif layout in ("musiccaps", "musiccaps-full", "song-describer"):
        if audio_dir is None:
            raise UsageError(f"--layout {layout} needs --audio-dir")
        if layout == "song-describer":
            data = ds.load_song_describer(dataset, audio_dir, on_missing=missing)
        else:  # musiccaps-full: items are the CSV's start_s-end_s inside each file
            data = ds.load_musiccaps(dataset, audio_dir, on_missing=missing,
                                     clip_layout="full" if layout == "musiccaps-full" else "trimmed")
    else:
        raise UsageError(f"--layout is manifest, musiccaps, musiccaps-full or song-describer (got {layout!r})")
    if data.missing:  # name some: a count alone does not say whether a download or a path went wrong
        shown = ", ".join(str(p) for p in data.missing[:3]) + (", ..." if len(data.missing) > 3 else "")
        typer.echo(f"note: {len(data.missing)} audio files missing ({shown}); evaluating the {len(data.items)} "
                   "present (--missing error refuses)", err=True)
    return data


def _encoder_and_config(library: Path, encoder: str | None, checkpoint: str | None, random_weights: bool,
                        window: float | None, hop: float | None, device: str) -> tuple[Any, Any]:
    """The encoder and windowing for --dataset: an existing library's own unless given."""
    from songseek.engine.device import resolve_device
    from songseek.engine.encoders import DEFAULT_ENCODER, load_encoder
    from songseek.engine.storage.manifest import MANIFEST_NAME, read_manifest
    from songseek.indexers.pipeline import IndexConfig

    if (library / MANIFEST_NAME).is_file():
        m = read_manifest(library)
        if encoder is None:
            encoder, checkpoint = m.encoder.name, checkpoint or m.encoder.checkpoint or None
            random_weights = random_weights or m.encoder.random_weights
        window = window if window is not None else m.window_s
        hop = hop if hop is not None else m.hop_s
    enc = load_encoder(encoder or DEFAULT_ENCODER, checkpoint, resolve_device(device), random_weights)
    return enc, IndexConfig(window_s=window or enc.info.native_window_s or 10.0, hop_s=hop)  # msclap: 7 s


ENGINE_MODES = "auto,hedge,fusion,mean,max,none"
ARRAYS_MODES = "none,mean,max,fusion"  # the modes planted.evaluate_planted_arrays scores


def planted_start_note(tracks: int, method: str, workers: int) -> str | None:
    """One stderr line before a long engine run: it prints nothing for minutes otherwise (when not a tty).
    Exhaustive search is queries × windows, both ∝ tracks: docs/benchmarks.md measured ~30 min at 2,000
    tracks on 2 cores, so the estimate scales that by (tracks / 2000)²."""
    if method != "engine" or tracks < 500:
        return None
    minutes = 30 * (tracks / 2000) ** 2 / workers
    return (f"note: --method engine searches all {tracks} tracks per query: roughly {minutes:.0f} min on 2 cores; "
            "--method arrays gives the same scores much faster (about 3 min at 2,000 tracks)")


@handles_errors
def planted(
    tracks: int = typer.Option(500, "--tracks", help="Synthetic tracks (1-10 minutes each)."),
    seed: int = typer.Option(7, "--seed", min=0, help="Generator seed (same seed, same tracks and queries)."),
    dim: int = typer.Option(64, "--dim", help="Vector dimension."),
    noise: float = typer.Option(1.0, "--noise", min=0.0, help="Scale of every noise level (0 = noise-free)."),
    rerank: str = typer.Option(None, "--rerank", help="Comma list of rerank modes (default: auto,hedge,fusion,"
                               "mean,max,none; with --method arrays, which scores only these: none,mean,max,fusion)."),
    method: str = typer.Option("engine", "--method", help="engine (every query through Library.search_vectors; "
                               "about 30 min at 2,000 tracks on 2 cores) or arrays (same scores in memory, about "
                               "3 min there; a sample is checked against the engine)."),
    engine_check: int = typer.Option(64, "--engine-check", min=0, help="With --method arrays: queries also run through "
                                     "the engine and compared (0 = none)."),
    kernel: float = typer.Option(None, "--kernel", help="Fusion kernel in frames (planted windows are 10 s; "
                                 "`songseek search --kernel-s` takes seconds); default the engine's."),
    stride: float = typer.Option(None, "--stride", help="Fusion stride in frames (`search --stride-s`: seconds); "
                                 "default the engine's."),
    temperature: float = typer.Option(None, "--temperature", help="Fusion softmax temperature; default the engine's."),
    ci: bool = typer.Option(False, "--ci", help="95% bootstrap intervals (1000 resamples over tracks, "
                            "each with all of its queries)."),
    workers: int = typer.Option(1, "--workers", help="Processes searching queries in parallel (--method engine)."),
    work: Path = typer.Option(None, "--work", help="Folder for the generated library, kept and reused "
                              "(default: a temporary folder)."),
    report: Path = typer.Option(None, "--report", help="Folder for report.json, report.md and PNG plots."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: direction → mode → metrics."),
) -> None:
    """Seeded long-form tracks with planted sections (no model): whole-track and section queries per rerank
    mode, segment IoU, and fusion minus mean with 95% intervals."""
    import tempfile

    from songseek.benchmarks.planted_run import run_planted
    from songseek.engine.errors import UsageError
    from songseek.engine.query.fusion import FusionParams

    modes = _modes(rerank if rerank is not None else ARRAYS_MODES if method == "arrays" else ENGINE_MODES)
    changes = _fusion_changes(kernel, stride, temperature)
    fusion = replace(FusionParams(), **changes) if changes else None  # planted windows are 10 s at a 10 s hop
    if tracks < 2:
        raise UsageError(f"--tracks must be at least 2, got {tracks}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    note = planted_start_note(tracks, method, workers)
    if note:
        typer.echo(note, err=True)
    with tempfile.TemporaryDirectory(prefix="songseek-planted-") as tmp:
        where = (work or Path(tmp)) / f"planted-{tracks}-seed{seed}-dim{dim}-noise{noise:g}.songseek"
        run = run_planted(tracks, seed, dim, modes, where, noise=noise, fusion=fusion, ci=ci, workers=workers,
                          progress=_QueryBar(not json_out), method=method, engine_check_queries=engine_check)
    _emit(run, report, json_out)
