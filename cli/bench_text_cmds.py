"""`songseek bench text-speed`: the issue-16 contract in one command (benchmarks/text_query.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import handles_errors, library_option, print_json

if TYPE_CHECKING:
    from songseek.benchmarks.int8_ranking import RankingReport


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("text-speed")(text_speed)
    bench_app.command("text-ranking")(text_ranking)


@handles_errors
def text_speed(
    library: Path = library_option(required=False, help="A library indexed with a text encoder (e.g. "
                                   "`index --encoder clap --random-weights`); searched as Library.open(LIB)."),
    frames: int = typer.Option(None, "--frames", "-n", help="Instead: a synthetic library of this many frames "
                               "(built once under --work), searched with --encoder's text tower."),
    work: Path = typer.Option(Path("~/.cache/songseek/bench"), "--work", help="Where synthetic libraries are "
                              "kept."),
    encoder: str = typer.Option(None, "--encoder", "-e", help="With --frames: the text encoder (e.g. clap)."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="The encoder's checkpoint."),
    random_weights: bool = typer.Option(False, "--random-weights", help="The encoder with random weights."),
    text_backend: str = typer.Option("auto", "--text-backend", help="auto (Library.open's default), torch, "
                                     "onnx or onnx-int8."),
    queries: int = typer.Option(30, "--queries", "-q", help="Distinct texts per series."),
    words: int = typer.Option(10, "--words", help="Words per text."),
    threads: int = typer.Option(2, "--threads", help="torch and ONNX Runtime threads (both sides alike)."),
    k: int = typer.Option(10, "-k", help="Tracks per query."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the texts."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Library.search(text) for distinct texts, cold and cached, against the ClapModel text tower in torch
    padded to 77 tokens, one text at a time, interleaved in one run on the same threads."""
    from songseek.benchmarks.text_query import ISSUE_BASELINE_MS, run_text_contract
    from songseek.engine.errors import UsageError
    from songseek.engine.query.search import SearchOptions

    if (library is None) == (frames is None):
        raise UsageError("give --library LIB or --frames N (a synthetic library, with --encoder)")
    if queries <= 0 or words <= 0 or threads <= 0 or k <= 0 or (frames is not None and frames <= 0):
        raise UsageError("--queries, --words, --threads, -k and --frames must be positive")
    enc = None
    if frames is not None:
        from songseek.benchmarks.synthetic import cached_library, preset_spec
        from songseek.engine.encoders import load_encoder

        if encoder is None:
            raise UsageError("--frames needs --encoder (a synthetic library holds no encoder of its own)")
        enc = load_encoder(encoder, checkpoint, "cpu", random_weights)
        if not json_out:
            typer.echo(f"library: {frames} frames × {enc.info.dim}, clustered (built on first use, then reused)",
                       err=True)
        library = cached_library(preset_spec("clustered", frames, enc.info.dim, seed), work.expanduser())
    elif encoder is not None:
        raise UsageError("--encoder goes with --frames; a --library searches with its own encoder")
    r = run_text_contract(library, encoder=enc, text_backend=text_backend, queries=queries, words=words,
                          threads=threads, options=SearchOptions(k=k), seed=seed)
    if json_out:
        print_json(r.to_json())
        return
    from .tables import print_columns

    print_columns(f"{r.frames} frames, {r.tracks} tracks, index {r.index}; {r.encoder}"
                  + (" (random weights)" if r.random_weights else "")
                  + f"; {r.queries} texts of {r.words} words per row, {r.threads} threads; load "
                  f"{r.load_start:.1f} → {r.load_end:.1f}",
                  ["path", "p50 ms", "p95 ms", "mean ms", "p50 / baseline", "what"],
                  [[x.name, f"{x.p50_ms:.2f}", f"{x.p95_ms:.2f}", f"{x.mean_ms:.2f}", f"{x.vs_baseline:.3f}", x.what]
                   for x in r.latencies], text=["path", "what"])
    typer.echo(f"text backend: {r.backend}; encode / baseline = {r.encode_ratio:.3f}, whole text query / "
               f"baseline = {r.query_ratio:.3f}")
    for t in r.targets():
        typer.echo(f"target {t.name}: {t.p50_ms:.2f} ms p50 vs {t.target_ms:g} ms "
                   f"({'met' if t.met_absolute else 'missed'}); {t.ratio:.4f} of the baseline vs "
                   f"{t.target_ms:g}/{ISSUE_BASELINE_MS:g} = {t.target_ratio:.4f} "
                   f"({'met' if t.met_ratio else 'missed'})")
    typer.echo(f"open {r.open_s:.2f} s, encoder load + fingerprint {r.encoder_s:.2f} s, first search "
               f"{r.first_search_ms:.0f} ms (ONNX export and choice already on disk: "
               f"{'yes' if r.export_cached else 'no'})")
    if r.backend_note:
        typer.echo(f"note: {r.backend_note}", err=True)


@handles_errors
def text_ranking(
    library: Path = library_option(help="A library indexed with a text encoder that has ONNX backends (clap, "
                                   "laion, demo)."),
    queries: int = typer.Option(200, "--queries", "-q", help="Query texts (seeded 10-word music captions)."),
    query_file: Path = typer.Option(None, "--query-file", help="Instead: your own texts, one per line."),
    k: int = typer.Option(10, "-k", help="Top-k compared."),
    threads: int = typer.Option(2, "--threads", help="torch and ONNX Runtime threads."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the texts and of the noise control."),
    save: bool = typer.Option(False, "--save", help="Keep int8's result for these weights: when it passes "
                              "(top-k identical for >= 95 % of >= 50 queries, trained weights), `auto` may "
                              "choose int8 from then on; a failing result withdraws an earlier pass."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Top-k of each text backend (onnx, onnx-int8) against torch's, next to a control that moves each
    torch vector as far as int8 did in a random direction; plus how alike the query vectors are."""
    import torch

    from songseek.benchmarks.int8_ranking import run_text_ranking
    from songseek.benchmarks.text_speed import query_texts
    from songseek.engine.errors import UsageError

    if queries < 2 or k <= 0 or threads <= 0:
        raise UsageError("--queries must be at least 2, -k and --threads positive")
    if query_file is not None:
        try:
            texts = [ln.strip() for ln in query_file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{query_file}: cannot read it as UTF-8 text, one query per line ({exc})") from None
        texts = list(dict.fromkeys(texts))[:queries]
    else:
        texts = query_texts(queries, 10, seed)
    torch.set_num_threads(threads)
    r = run_text_ranking(library, texts, k=k, seed=seed)
    saved = _save_int8_check(r) if save else None
    if json_out:
        print_json({**r.to_json(), "saved": saved})
        return
    typer.echo(f"{r.frames} frames, {r.tracks} tracks; {r.encoder}" + (" (random weights)" if r.random_weights
               else "") + f"; {r.queries} texts, top-{r.k}; load {r.load_avg:.1f}")
    typer.echo(f"query vectors: median cosine between different texts {r.spread:.4f}; median score gap "
               f"hit 1 - hit {r.k}: {r.score_gap:.4f}")
    for c in r.checks:
        a = c.agreement
        typer.echo(f"{c.name:>24}: cosine vs torch min {c.min_cosine:.5f} median {c.median_cosine:.5f}; top-{a.k} "
                   f"identical {a.identical:.3f}, same set {a.same_set:.3f}, overlap {a.overlap:.3f}")
    if saved is not None:
        typer.echo(saved["message"])


def _save_int8_check(r: RankingReport) -> dict[str, Any]:
    """Write int8's result where ``auto`` reads it; what was saved and what it means, in one line."""
    from songseek.engine.encoders import onnx_text

    check = r.int8_check()
    if check is None:
        return {"saved": False, "message": "not saved: int8 could not run here (see the notes above)"}
    folder = Path(r.tower_folder)
    onnx_text.write_ranking_check(folder, check)
    why = check.failures()
    message = (f"saved in {folder / onnx_text.RANKING_FILE}: " +
               ("int8 stays out of `auto` (" + "; ".join(why) + ")" if why else
                "int8 passed; `auto` now times it against fp32 ONNX and uses the faster"))
    return {"saved": True, "passed": not why, "failures": why, "path": str(folder / onnx_text.RANKING_FILE),
            "message": message}
