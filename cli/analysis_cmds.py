"""`songseek tag`, `outliers`, `mos train|predict`: analyses on a library's stored vectors (no re-embedding)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import LIBRARY_OPT, handles_errors, print_json, safe_text
from .help_format import SongseekTyper

if TYPE_CHECKING:
    import pyarrow as pa
    from rich.console import Console, RenderableType
    from rich.progress import Progress, TaskID

mos_app = SongseekTyper(help="Opinion scores (MusicEval): train an MLP head on rated tracks, predict for all.",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("tag")(tag)
    app.command("outliers")(outliers)
    mos_app.command("train")(mos_train)
    mos_app.command("predict")(mos_predict)
    app.add_typer(mos_app, name="mos")


def _open(library: Path, device: str = "auto") -> Any:
    from songseek.engine.query.search import Library

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weights warnings: the commands below say what they need
        return Library.open(library, device=device)


def _tracks_table(library: Path) -> pa.Table:
    """The committed tracks table alone: naming tracks needs no index and no frame map (Library.open)."""
    import pyarrow as pa

    from songseek.engine.storage.manifest import read_manifest
    from songseek.engine.storage.store import read_library_table

    m = read_manifest(library)
    return (read_library_table(library, m.tracks_file, m) if m.tracks_file
            else pa.table({"track_id": pa.array([], pa.string())}))


def _track_cells(library: Path, ids: list[str]) -> dict[str, RenderableType]:
    """Track id → what tells the track apart in a table (tables.track_cell, as search shows a hit), for
    the ``ids`` a table prints."""
    from .tables import track_cell

    tracks = _tracks_table(library)
    columns = [c for c in ("track_id", "path", "artist", "title") if c in tracks.column_names]
    wanted = set(ids)
    return {str(row["track_id"]): track_cell(row.get("artist"), row.get("title"), row.get("path") or row["track_id"])
            for row in tracks.select(columns).to_pylist() if str(row["track_id"]) in wanted}


@handles_errors
def tag(
    library: Path = LIBRARY_OPT,
    labels: list[str] = typer.Option(["genres"], "--labels", help="genres, moods, instruments, descriptors or a "
                                     "text file (one label per line); repeat for several sets."),
    template: list[str] = typer.Option([], "--template", help="Prompt template with {label} (default "
                                       "\"A {label} track\"); repeat to ensemble prompts."),
    aggregate: str = typer.Option("mean", "--aggregate", help="Track score from window scores: mean, max, fusion."),
    temperature: float = typer.Option(0.01, "--temperature", help="Softmax/sigmoid temperature on cosines."),
    multi_label: bool = typer.Option(None, "--multi-label/--single-label", help="Sigmoid per label (multi) or "
                                     "softmax over the set (single). Default: moods, instruments multi; "
                                     "genres and files single."),
    show: int = typer.Option(10, "--show", min=0, help="Tracks to print with their top labels."),
    device: str = typer.Option("auto", "--device", help="Device for the text encoder."),
    json_out: bool = typer.Option(False, "--json", help="Print per set: labels and top label per track."),
) -> None:
    """Zero-shot tags: score every track against label prompts and store them (filter with --where)."""
    from songseek.engine.analysis.tagging import load_label_set, tag_library

    sets = [load_label_set(spec, multi_label) for spec in labels]
    results = tag_library(library, sets, template, aggregate, temperature, device=device)
    if json_out:
        print_json([{"set": r.labels.name, "labels": list(r.labels.labels), "normalisation": r.normalisation,
                     "tracks": [{"track_id": t, "top": top} for t, top in zip(r.track_ids.tolist(), r.top_labels())]}
                    for r in results])
        return
    from rich.table import Table

    from .tables import console, ellipsised

    shown = [str(t) for r in results for t in r.track_ids.tolist()[:show]] if show > 0 else []
    cells = _track_cells(library, shown)
    for r in results:
        typer.echo(f"{r.labels.name}: {len(r.labels.labels)} labels × {len(r.track_ids)} tracks "
                   f"({r.normalisation}, {r.aggregate} over windows) → tags table, columns top_{r.labels.name}, "
                   f"tag_<label>")
        if show <= 0 or not len(r.track_ids):
            continue
        table = Table(show_edge=False)
        table.add_column("track")
        table.add_column(f"top {r.labels.name}", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True)
        best = r.score.max(axis=1).tolist()  # the top label's score (track_ids is not empty, nor the labels)
        for t, top, score in list(zip(r.track_ids.tolist(), r.top_labels(), best))[:show]:
            table.add_row(cells.get(str(t), ellipsised(t)), ellipsised(top), f"{score:.3f}")
        console().print(table)
    typer.echo("filter with e.g. --where \"tag('jazz') > 0.5\"", err=True)


@handles_errors
def outliers(
    library: Path = LIBRARY_OPT,
    k: int = typer.Option(4, "-k", help="Neighbours per track (the outlier paper's Eq. 1 uses 4)."),
    reference: Path = typer.Option(None, "--reference", help="Reference library of known-good tracks "
                                   "(same encoder); default: the library itself, each track excluded."),
    top: int = typer.Option(20, "--top", help="How many outliers to show."),
    descriptors: Path = typer.Option(None, "--descriptors", help="Text file of descriptor texts for the reasons "
                                     "(default: the shipped list)."),
    reasons: int = typer.Option(3, "--reasons", help="Reasons per outlier (0: none, no text encoder needed)."),
    where: str = typer.Option(None, "--where", help="Only these tracks (SQL over tracks/tags/mos), e.g. one "
                              "folder: \"path LIKE '/music/jazz/%'\"; they are each other's reference."),
    device: str = typer.Option("auto", "--device", help="Device for the text encoder."),
    json_out: bool = typer.Option(False, "--json", help="One JSON array, most anomalous first."),
) -> None:
    """Tracks farthest from their nearest neighbours, each with the descriptors that tell it apart."""
    from songseek.engine.analysis.outliers import find_outliers
    from songseek.engine.analysis.tagging import load_label_set
    from songseek.engine.errors import QueryError, UsageError

    if top < 1 or reasons < 0:
        raise UsageError("--top must be at least 1 and --reasons at least 0")
    lib = _open(library, device)
    ref = _open(reference, device) if reference is not None else None
    texts: tuple[str, ...] = ()
    if reasons > 0:
        texts = load_label_set(str(descriptors) if descriptors else "descriptors").labels
        try:
            lib.encoder  # noqa: B018 - loads the text encoder, or says why it cannot
        except QueryError as exc:
            typer.echo(f"warning: no reasons: {exc}", err=True)
            texts = ()
    found = find_outliers(lib, k, top, ref, texts, reasons, where=where)
    if json_out:
        print_json([o.to_json() for o in found])
        return
    from rich.table import Table
    from rich.text import Text

    from .tables import console, folded

    table = Table(show_edge=False, title=f"outliers (k={k}, reference: {reference or 'the library itself'})")
    table.add_column("rank", no_wrap=True)
    table.add_column("score", no_wrap=True)
    table.add_column("track")
    table.add_column("reasons (Δcos vs neighbours)")
    for o in found:
        why = "; ".join(f"{'+' if r.difference >= 0 else '−'}{r.descriptor} ({r.difference:+.3f})" for r in o.reasons)
        table.add_row(str(o.rank), f"{o.score:.4f}", folded(o.path), Text(safe_text(why)))
    console().print(table)


def _train_config(epochs: int, patience: int, lr: float, optimizer: str, batch_size: int, seed: int) -> Any:
    from songseek.engine.analysis.mos import MosTrainConfig

    return MosTrainConfig(max_epochs=epochs, patience=patience, lr=lr, optimizer=optimizer,
                          batch_size=batch_size, seed=seed)


def _terminal_stderr() -> Console | None:
    """A console on stderr where stderr is a terminal; None when it is piped (a log gets no bar)."""
    from rich.console import Console

    return Console(file=sys.stderr) if sys.stderr.isatty() else None


class _EpochBar:
    """Epochs run of at most ``max_epochs`` and the best L1 so far, as a transient rich bar on ``console``
    (none without one); early stopping usually ends training well before the bar is full."""

    def __init__(self, console: Console | None, max_epochs: int) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("training epochs"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                                 transient=True)
            self._task = self._bar.add_task("epochs", total=max_epochs, stats="")

    def __enter__(self) -> _EpochBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, epoch: int, best_l1: float) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=epoch, stats=f"best L1 {best_l1:.3f}")


@handles_errors
def mos_train(
    library: Path = LIBRARY_OPT,
    ratings: Path = typer.Option(..., "--ratings", help="CSV: track_id or path, impression[, alignment, prompt]."),
    head: Path = typer.Option(None, "--head", help="Where to save the head (default: LIBRARY/mos-head.safetensors)."),
    epochs: int = typer.Option(1000, "--epochs", help="At most this many epochs (early stopping decides)."),
    patience: int = typer.Option(20, "--patience", help="Stop after this many epochs without improvement."),
    lr: float = typer.Option(5e-4, "--lr", help="Learning rate (paper: SGD 5e-4, momentum 0.9)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (paper) or adam."),
    batch_size: int = typer.Option(64, "--batch-size", help="Rated tracks per training step."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the validation split, initialisation and shuffling."),
    device: str = typer.Option("auto", "--device", help="Device for the text encoder (prompts)."),
    json_out: bool = typer.Option(False, "--json", help="Print the training report as JSON."),
) -> None:
    """Fit the MusicEval MLP head on rated tracks' stored vectors; saved with the library's encoder id."""
    from songseek.engine.analysis.mos import DEFAULT_HEAD_NAME, read_ratings, train_on_library
    from songseek.engine.analysis.track_match import some_unmatched_note

    lib = _open(library, device)
    rated = read_ratings(ratings, lib.tracks)
    config = _train_config(epochs, patience, lr, optimizer, batch_size, seed)
    if not json_out:  # before training, which refuses too few tracks: the user learns where the rows went
        note = some_unmatched_note(ratings, rated.unmatched, rated.rows, "those ratings are left out")
        if note:
            typer.echo(f"warning: {note}", err=True)
        if rated.averaged:
            typer.echo(f"note: {rated.averaged} rows repeated a track (and prompt) and were averaged into it",
                       err=True)
    with _EpochBar(None if json_out else _terminal_stderr(), epochs) as bar:
        trained = train_on_library(lib, rated, config, on_epoch=bar.update)
    path = trained.save(head or library / DEFAULT_HEAD_NAME)
    report = trained.report.to_json() if trained.report else {}
    if json_out:
        print_json({"head": str(path), "unmatched": list(rated.unmatched), "averaged": rated.averaged, **report})
        return
    l1 = (f"validation L1 {report.get('valid_l1', 0.0):.3f}" if report.get("n_valid") else
          f"no validation split under 10 tracks, training L1 {report.get('train_l1', 0.0):.3f}")
    typer.echo(f"trained {', '.join(trained.heads)} on {report.get('n_train')} tracks "
               f"(validation {report.get('n_valid')}): best epoch {report.get('best_epoch')}, {l1} → {path}")


@handles_errors
def mos_predict(
    library: Path = LIBRARY_OPT,
    head: Path = typer.Option(None, "--head", help="Head file (default: LIBRARY/mos-head.safetensors)."),
    prompts: Path = typer.Option(None, "--prompts", help="CSV: track_id or path, prompt — for the alignment score."),
    top: int = typer.Option(10, "--top", help="Tracks to print, best predicted impression first."),
    device: str = typer.Option("auto", "--device", help="Device for the text encoder (prompts)."),
    json_out: bool = typer.Option(False, "--json", help="Print every track's predictions as JSON."),
) -> None:
    """Predict opinion scores for every track and store them in the library's mos table."""
    import numpy as np

    from songseek.engine.analysis.mos import DEFAULT_HEAD_NAME, predict_library, read_prompts
    from songseek.engine.analysis.track_match import some_unmatched_note

    prompt_of: dict[str, str] = {}
    if prompts is not None:
        given = read_prompts(prompts, _tracks_table(library))  # refuses a file that matches no track
        note = some_unmatched_note(prompts, given.unmatched, given.rows, "their tracks get no alignment score")
        if note:
            typer.echo(f"warning: {note}", err=True)
        prompt_of = given.by_track
    ids, pred = predict_library(library, head or library / DEFAULT_HEAD_NAME, prompt_of, device)
    if prompt_of and pred.alignment is None:
        typer.echo("warning: --prompts ignored: the head has no alignment part (its ratings had no alignment "
                   "column); train one with alignment and prompt columns for a mos_alignment score", err=True)
    ali = pred.alignment if pred.alignment is not None else np.full(len(ids), np.nan)
    rows_out = [{"track_id": t, "mos_impression": float(i), "mos_alignment": None if np.isnan(a) else float(a)}
                for t, i, a in zip(ids, pred.impression, ali)]
    rows_out.sort(key=lambda r: (-float(r["mos_impression"] or 0.0), str(r["track_id"])))
    if json_out:
        print_json(rows_out)
        return
    typer.echo(f"predicted {len(ids)} tracks → mos table (columns mos_impression, mos_alignment); "
               "filter with e.g. --where \"mos_impression > 3.5\"")
    if top <= 0 or not rows_out:
        return
    from rich.table import Table

    from .tables import console, ellipsised

    cells = _track_cells(library, [str(r["track_id"]) for r in rows_out[:top]])
    table = Table(show_edge=False)
    table.add_column("impression", justify="right", no_wrap=True)
    table.add_column("alignment", justify="right", no_wrap=True)
    table.add_column("track")
    for r in rows_out[:top]:
        a = "-" if r["mos_alignment"] is None else f"{r['mos_alignment']:.2f}"
        tid = str(r["track_id"])
        table.add_row(f"{r['mos_impression']:.2f}", a, cells.get(tid, ellipsised(tid)))
    console().print(table)
