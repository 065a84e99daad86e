"""`songseek synth`: write a synthetic music benchmark set (audio + captions with known ground truth)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import handles_errors, print_json


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


@handles_errors
def synth(
    out: Path = typer.Argument(..., help="Directory to write audio/, tracks.csv, sections.csv, tags.csv into."),
    tracks: int = typer.Option(20, "--tracks", "-n", help="Number of tracks (30 s to 6 min each)."),
    seed: int = typer.Option(0, "--seed", "-s", min=0, help="Generator seed: the same seed writes the same files. "
                             "The bundled demo model was trained on seed 1 of this generator; "
                             "evaluate it on other seeds."),
    audio_format: str = typer.Option("wav", "--format", help="wav (16-bit) or flac (lossless, ~40% smaller)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Generate synthetic long-form music with known structure and captions (16 kHz mono).

    Writes OUT/audio/<id>.wav, OUT/tracks.csv (path, caption: whole-track descriptions),
    OUT/sections.csv (path, start_s, end_s, caption), OUT/tags.csv (path, caption: tag lists),
    OUT/scores.jsonl (the ground-truth scores) and OUT/synth.json. Paths are relative to OUT.
    Track i of a seed is the same whatever --tracks is. See docs/demo-model.md.
    """
    import sys

    from songseek.benchmarks.synth import write_dataset

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            typer.echo(f"\r{done}/{total} tracks", err=True, nl=done == total)

    summary = write_dataset(out, tracks, seed, audio_format, progress=progress)
    if json_out:
        print_json({"out": summary.out_dir, "tracks": summary.n_tracks, "sections": summary.n_sections,
                    "audio_s": round(summary.audio_s, 3), "elapsed_s": round(summary.elapsed_s, 3),
                    "seed": summary.seed, "generator_version": summary.generator_version,
                    "tracks_csv": str(Path(summary.out_dir) / "tracks.csv"),
                    "sections_csv": str(Path(summary.out_dir) / "sections.csv")})
    else:
        typer.echo(f"wrote {summary.n_tracks} tracks ({summary.audio_s / 60:.1f} min of audio, "
                   f"{summary.n_sections} sections) to {summary.out_dir} in {summary.elapsed_s:.1f} s "
                   f"({summary.realtime_factor:.0f}x real time); manifests: tracks.csv, sections.csv, tags.csv")
