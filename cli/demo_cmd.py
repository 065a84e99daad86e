"""`songseek demo`: generate a small synthetic library, index it, run three searches, compare with the truth.

The bundled demo model was trained on the same kind of synthetic music, so the demo shows the whole
pipeline working (windows, fusion, segment times) — not how well CLAP models do on real music.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import typer

from .common import handles_errors


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@handles_errors
def demo(
    out: Path = typer.Option(Path("songseek-demo"), "--out", help="Folder for the generated music and library."),
    tracks: int = typer.Option(30, "--tracks", help="Synthetic tracks to generate."),
    seed: int = typer.Option(2024, "--seed", min=0, help="Generator seed (held out from the demo model's training)."),
    encoder: str = typer.Option("demo", "--encoder", "-e", help="demo (bundled), or clap/laion with weights."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="With --encoder clap/laion: its HF id, local "
                                   "directory or .pt file (default: the encoder's own)."),
    k: int = typer.Option(5, "-k", help="Hits shown per query."),
) -> None:
    """Synthesise ~30 tracks, index them, run three section searches and show hits next to the truth."""
    import json

    from rich.table import Table

    from songseek.benchmarks.synth import load_manifest, write_dataset
    from songseek.cli.progress import RichProgress
    from songseek.cli.tables import console as terminal_console
    from songseek.cli.tables import ellipsised
    from songseek.engine.device import resolve_device
    from songseek.engine.encoders import load_encoder
    from songseek.engine.errors import UsageError
    from songseek.engine.query.search import Library
    from songseek.indexers.pipeline import IndexConfig, index_paths

    if tracks < 1 or k < 1:  # refused now, not after the tracks are generated and indexed
        raise UsageError(f"--tracks and -k must be at least 1 (got {tracks}, {k})")
    console = terminal_console()
    music, library = out / "music", out / "library"
    meta_path = music / "synth.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("seed") != seed or meta.get("n_tracks") != tracks:
        if meta:  # another seed or size: start over, or the old set's files would stay indexed beside the new
            console.print(f"    replacing the demo set of seed {meta.get('seed')} ({meta.get('n_tracks')} tracks) "
                          f"in {out}")
            _remove_demo_set(music, library)
        console.print(f"[bold]1/3[/] generating {tracks} synthetic tracks (seed {seed}) in {music} …")
        summary = write_dataset(music, tracks, seed)
        console.print(f"    {summary.audio_s / 60:.1f} min of audio in {summary.elapsed_s:.1f} s")
    else:
        console.print(f"[bold]1/3[/] reusing the synthetic tracks in {music}")
    enc = load_encoder(encoder, checkpoint, resolve_device("auto"))
    console.print(f"[bold]2/3[/] indexing with encoder {enc.info.name} ({enc.info.checkpoint}) …")
    report = index_paths([music / "audio"], library, enc, IndexConfig(), RichProgress())
    console.print(f"    {report.summary()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(library, encoder=enc)
    _, sections = load_manifest(music)
    # Three example queries: the longest section of three different tracks, spread over the set.
    by_track: dict[str, tuple[str, float, float, str]] = {}
    for sec in sections:
        if sec[0] not in by_track or sec[2] - sec[1] > by_track[sec[0]][2] - by_track[sec[0]][1]:
            by_track[sec[0]] = sec
    names = sorted(by_track)
    picks = [by_track[names[i * len(names) // 3]] for i in range(min(3, len(names)))]
    console.print("[bold]3/3[/] three searches (the truth is what the generator put there):")
    found = 0
    for path, start, end, caption in picks:
        truth = str((music / path).resolve())
        hits = lib.search(caption, k=k)
        table = Table(title=f"“{caption}”\ntruth: {Path(path).name} {_mmss(start)}–{_mmss(end)}", title_justify="left")
        for col in ("rank", "score", "segment"):
            table.add_column(col, no_wrap=True)
        table.add_column("track")
        table.add_column("truth?")
        for h in hits:
            is_truth = str(Path(h.path).resolve()) == truth
            overlap = is_truth and h.segment.start_s < end and h.segment.end_s > start
            mark = "✓ track, segment overlaps" if overlap else ("✓ track" if is_truth else "")
            found += is_truth
            table.add_row(str(h.rank), f"{h.score:.3f}", f"{_mmss(h.segment.start_s)}–{_mmss(h.segment.end_s)}",
                          ellipsised(Path(h.path).name), mark)
        console.print(table)
    console.print(f"true track in the top {k} for {found} of {len(picks)} queries. "
                  f"Now try: songseek search \"soft piano with strings\" --library {library}")
    if enc.info.name == "demo":
        console.print("[dim]The demo model knows only synthetic music; use --encoder clap/laion with real "
                      "weights for real music (docs/encoders.md).[/]")


def _mmss(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def _remove_demo_set(music: Path, library: Path) -> None:
    """Delete a previous demo's music folder (it holds synth.json, so the demo wrote it) and its library
    (only when it is a songseek library: a manifest.json is there)."""
    shutil.rmtree(music)
    if (library / "manifest.json").is_file():
        shutil.rmtree(library)

