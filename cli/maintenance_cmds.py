"""`songseek repair`: verify a library's files and rebuild what is damaged (docs/robustness.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import handles_errors, library_option, print_json, safe_text


def register(app: typer.Typer) -> None:
    app.command("repair")(repair)


@handles_errors
def repair(
    library: Path = library_option(help="Library directory to verify and repair."),
    compact: bool = typer.Option(False, "--compact", help="Also rewrite the frame shards without dead frames "
                                 "(left by changed and removed tracks)."),
    check: bool = typer.Option(False, "--check", help="Only verify checksums and consistency; change nothing "
                               "(exit 1 when something is damaged)."),
    wait: bool = typer.Option(False, "--wait", help="Wait for a running indexer of this library to finish."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Verify every file against the manifest's SHA-256 checksums, recover a damaged manifest, tracks or
    failures table, drop tracks whose frames are lost, and rebuild the FAISS index from the Arrow shards.

    Exit codes: 0 when the library is sound afterwards (with --check: already sound), 1 when --check
    finds damage, 2 when the library cannot be repaired or is locked.
    """
    from songseek.engine.storage.repair import repair_library, verify_library

    if check:
        problems = verify_library(library)
        if json_out:
            print_json({"path": str(library), "problems": problems})
        else:
            for p in problems:
                typer.echo(f"damaged: {safe_text(p)}")
            typer.echo(f"{library}: " + (f"{len(problems)} problem(s); run `songseek repair --library {library}`"
                                         if problems else "all files verify"))
        if problems:
            raise typer.Exit(1)
        return
    report = repair_library(library, compact=compact, wait=wait)
    if json_out:
        print_json(report.to_json())
        return
    for p in report.problems:
        typer.echo(f"damaged: {safe_text(p)}", err=True)
    for a in report.actions:
        typer.echo(f"repaired: {safe_text(a)}", err=True)
    typer.echo(safe_text(report.summary()))
