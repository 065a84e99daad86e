"""`songseek duplicates`: groups of duplicates, re-masters and possible versions (nothing is deleted);
`songseek bench duplicates`: precision/recall on a generated labelled set, and speed on synthetic vectors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import LIBRARY_OPT, handles_errors, print_json, safe_text

if TYPE_CHECKING:  # the CLI imports the engine when a command runs, not at start
    from songseek.engine.analysis.duplicates import Member


def register(app: typer.Typer) -> None:
    app.command("duplicates")(duplicates)


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("duplicates")(bench_duplicates)
    bench_app.command("duplicates-speed")(bench_duplicates_speed)


@handles_errors
def duplicates(
    library: Path = LIBRARY_OPT,
    json_out: bool = typer.Option(False, "--json", help="One JSON array of groups (level, members, evidence)."),
    min_level: str = typer.Option("version", "--min-level", "--max-level", metavar="LEVEL",
                                  help="The weakest match to report (level 1 is the strictest): 1 or recording: "
                                  "same recording only; 2 or master: also other masters and edits; 3 or version: "
                                  "also possible versions (a flag, not a proof). --max-level is the old name."),
    not_duplicate: tuple[str, str] | None = typer.Option(None, "--not-duplicate", metavar="ID1 ID2",
                                                  help="Mark two tracks as not duplicates (kept for later runs)."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="Decode candidate pairs to confirm them "
                               "(without it the levels come from the vectors alone)."),
    neighbours: int = typer.Option(20, "--neighbours", help="Nearest tracks FAISS proposes per track."),
) -> None:
    """Find duplicates (1), other masters/edits (2) and possible versions (3); store them as a table.

    --json prints one JSON array of groups, each with level and members (track_id, path, ...); tracks
    without a duplicate are in no group.

    Hide non-kept copies in a search with --where "dup_keep IS NOT FALSE" or --collapse-duplicates."""
    from songseek.engine.analysis.duplicates import LEVELS, DuplicateParams, parse_level, update_library

    marks = [not_duplicate] if not_duplicate and not_duplicate[0] is not None else []
    params = DuplicateParams(neighbours=neighbours, audio=audio, min_level=parse_level(min_level))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random-weights library: the levels from vectors say so in the docs
        report = update_library(library, params, marks)
    if json_out:
        print_json([g.to_json() for g in report.groups])
        return
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    from .tables import console, folded

    out = console()
    for g in report.groups:
        out.print(f"group {g.group_id}  level {g.level} ({LEVELS[g.level]})", markup=False, highlight=False)
        rows = [("keep" if m.keep else f"L{m.level}", safe_text(m.track_id), safe_text(member_format(m)), m.path)
                for m in g.members]
        # mark, track id, format: never wrapped. The path goes beside them when it fits whole, else on a line
        # of its own below (folded beside them at 80 columns it was cut into 20-cell pieces)
        widths = [max(cell_len(r[i]) for r in rows) for i in range(3)]
        beside = sum(widths) + 8 + max(cell_len(safe_text(r[3])) for r in rows) <= out.width
        members = Table(show_header=False, box=None, padding=(0, 1, 0, 1))
        members.add_column(no_wrap=True)
        members.add_column(no_wrap=beside)
        if beside:
            members.add_column(no_wrap=True)
            members.add_column()
        for mark, tid, fmt, path in rows:
            if beside:
                members.add_row(mark, Text(tid), Text(fmt), folded(path))
            else:
                members.add_row(mark, Text(f"{tid.ljust(widths[1])}  {fmt}"))
                members.add_row("", folded(path))
        out.print(members)
    n = len(report.groups)
    typer.echo(f"{n} group{'' if n == 1 else 's'}; {report.candidates} candidate pairs, {report.aligned} aligned, "
               f"{report.decoded} files decoded in {report.seconds:.1f} s; stored as table 'duplicates' "
               "(nothing deleted)", err=True)


@handles_errors
def bench_duplicates(
    work: Path = typer.Option(Path("~/.cache/songseek/bench/duplicates"), "--work",
                              help="Folder for the generated audio and library (reused when present)."),
    synth_tracks: int = typer.Option(8, "--synth-tracks", help="Synthesised base tracks."),
    real: bool = typer.Option(True, "--real/--no-real", help="Also use the --real-dir recordings (*.ogg)."),
    real_dir: Path = typer.Option(Path("../shared/data/audio"), "--real-dir", help="Real recordings folder "
                                  "(relative to the current directory; a note says when none are found)."),
    encoder: str = typer.Option("demo", "--encoder", help="demo, or clap with --random-weights."),
    random_weights: bool = typer.Option(False, "--random-weights", help="The encoder's architecture, random."),
    max_seconds: float = typer.Option(75.0, "--max-seconds", help="Cut every base track to this length."),
    seed: int = typer.Option(3, "--seed", min=0, help="Seed of the generated set (tracks, edits, negatives)."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="Confirm candidates from the audio."),
    neighbours: int = typer.Option(20, "--neighbours", help="Nearest tracks FAISS proposes per track."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Precision and recall per level on a generated labelled set (re-encodes, edits, hard negatives)."""
    from songseek.benchmarks.duplicates import LabelledSetSpec, real_files, run_labelled

    spec = LabelledSetSpec(synth_tracks=synth_tracks, real_dir=real_dir if real else None, seed=seed,
                           max_seconds=max_seconds)
    if real and not real_files(spec):  # the default is cwd-relative: say so rather than quietly go synthetic
        typer.echo(f"note: no real recordings (*.ogg) in {real_dir.resolve()}: the set is synthetic only "
                   "(--real-dir DIR to include them, --no-real to silence this)", err=True)
    result = run_labelled(spec, work.expanduser(), encoder, random_weights, audio, neighbours)
    if json_out:
        print_json(result.to_json())
        return
    typer.echo(result.table())


@handles_errors
def bench_duplicates_speed(
    tracks: list[int] = typer.Option([10_000, 50_000], "--tracks", help="Library sizes (repeat)."),
    work: Path = typer.Option(Path("~/.cache/songseek/bench/duplicates-speed"), "--work",
                              help="Folder for the synthetic libraries (reused when present)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON array: an object per library size."),
) -> None:
    """Time the duplicate search on synthetic vector libraries (2 % planted near-copies), per 1k tracks."""
    from songseek.benchmarks.duplicates import run_speed

    rows = run_speed(tracks, work.expanduser())
    if json_out:
        print_json([r.__dict__ for r in rows])
        return
    typer.echo(f"{'tracks':>8} {'frames':>9} {'seconds':>8} {'s/1k tracks':>11} {'candidates':>10} "
               f"{'aligned':>8} {'groups':>7} {'planted found':>13}")
    for r in rows:
        typer.echo(f"{r.tracks:>8} {r.frames:>9} {r.seconds:>8.2f} {r.seconds_per_1k:>11.3f} {r.candidates:>10} "
                   f"{r.aligned:>8} {r.groups:>7} {r.planted_found:>6}/{r.planted:<6}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        import math

        exp = math.log(b.seconds / max(a.seconds, 1e-9)) / math.log(b.tracks / a.tracks)
        typer.echo(f"growth exponent (time ∝ tracks^x) between {a.tracks} and {b.tracks}: x = {exp:.2f} "
                   "(1 = linear, 2 = quadratic)")


def member_format(m: Member) -> str:
    """Codec, bit rate, sample rate and length; no rate known (an ingested track has no audio file to read)
    reads as "format unknown", not "0 kbit/s 0 Hz"."""
    if not m.sample_rate:
        return f"format unknown {m.duration_s:.1f} s"
    return f"{m.codec} {m.bit_rate_kbps:.0f} kbit/s {m.sample_rate} Hz {m.duration_s:.1f} s"
