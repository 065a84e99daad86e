"""`songseek bench ...`: benchmarks. This module owns the `bench` group and the speed benchmarks
(`query-speed`, `index-speed`); other modules add their commands through ``register_bench(bench_app)``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from . import (
    bench_extra_cmds,
    bench_rerank_cmds,
    bench_retrieval_cmds,
    bench_scale_cmds,
    bench_text_cmds,
    duplicates_cmd,
    serve_cmd,
)
from .common import handles_errors, library_option, print_json
from .help_format import SongseekTyper

if TYPE_CHECKING:
    from songseek.engine.encoders import Encoder

bench_app = SongseekTyper(
    help="Benchmarks: speed (query-speed, index-speed), retrieval quality and the papers' evaluations.",
    no_args_is_help=True,
)


DEFAULT_WORK = Path("~/.cache/songseek/bench")


def register(app: typer.Typer) -> None:
    bench_app.command("query-speed")(query_speed)
    bench_app.command("index-speed")(index_speed)
    # each module adds its commands to the group
    for module in (bench_retrieval_cmds, bench_extra_cmds, bench_rerank_cmds, bench_scale_cmds, bench_text_cmds,
                   serve_cmd, duplicates_cmd):
        module.register_bench(bench_app)
    app.add_typer(bench_app, name="bench")


def _table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    from .tables import print_columns

    print_columns(title, header, [[f"{x:.2f}" if isinstance(x, float) else str(x) for x in r] for r in rows],
                  text=("path", "what"))


@handles_errors
def query_speed(
    frames: list[int] = typer.Option([100_000], "--frames", "-n", help="Synthetic library size in frames "
                                     "(repeat for several sizes in one run). Ignored with --library."),
    dim: int = typer.Option(512, "--dim", help="Vector dimension of the synthetic library."),
    preset: str = typer.Option("clustered", "--preset", help="Synthetic geometry: clustered or hard."),
    library: Path = library_option(required=False, help="Time an existing library instead "
                                 "(queries: random frames plus noise, or --query-file)."),
    query_file: Path = typer.Option(None, "--query-file", help="With --library: your own queries, one text "
                                    "per line (embedded with the library's encoder) or a .npy of vectors."),
    index_factory: str = typer.Option("auto", "--index-factory", help="FAISS factory string for the "
                                      "synthetic library, or auto (exact below a size, IVF past it)."),
    work: Path = typer.Option(DEFAULT_WORK, "--work", help="Where synthetic libraries are built and kept "
                              "for the next run."),
    queries: int = typer.Option(200, "--queries", "-q", help="Queries timed per path."),
    k: int = typer.Option(10, "-k", help="Tracks returned per query (agreement is top-k)."),
    candidates: int = typer.Option(200, "--candidates", help="Tracks reranked per query."),
    nprobe: int = typer.Option(None, "--nprobe", help="IVF lists probed (default: engine.index.default_nprobe)."),
    threads: int = typer.Option(None, "--threads", help="OpenMP threads per query scan (default: "
                                "$SONGSEEK_QUERY_THREADS or 1; 0 = all cores)."),
    encoder: str = typer.Option(None, "--encoder", "-e", help="Also time text queries with this encoder (e.g. "
                                "clap; default with --text-backend: the library's own)."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="The encoder's checkpoint."),
    random_weights: bool = typer.Option(False, "--random-weights", help="The encoder with random weights."),
    text_backends: list[str] = typer.Option(None, "--text-backend", help="Time text queries on this text "
                                            "backend: auto, torch, onnx, onnx-int8 (repeat for several; default "
                                            "with --encoder: torch, onnx, onnx-int8, auto)."),
    text_queries: int = typer.Option(30, "--text-queries", help="Distinct texts per text row."),
    text_threads: int = typer.Option(2, "--text-threads", help="torch / ONNX Runtime threads for text rows."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic vectors and queries."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per library."),
) -> None:
    """Query latency p50/p95 and memory of FAISS alone, the whole query, fusion and the exact path, with
    the top-k agreement of the default path with the exact one (baseline: float32 brute force). With
    --encoder or --text-backend: text rows (encode cold/cached for 1/10/60 words, whole text queries)
    against the text tower in torch padded to 77 tokens, in the same run."""
    from songseek.benchmarks.speed import queries_from_library, run_query_speed
    from songseek.benchmarks.synthetic import cached_library, make_queries, preset_spec
    from songseek.benchmarks.text_speed import run_text_speed
    from songseek.engine.encoders.onnx_text import validate_backend
    from songseek.engine.errors import UsageError
    from songseek.engine.query.search import Library

    if queries <= 0 or k <= 0 or candidates <= 0 or any(n <= 0 for n in frames):
        raise UsageError("--queries, -k, --candidates and --frames must be positive")
    if nprobe is not None and nprobe < 1:  # here, not after a synthetic library was built for nothing
        raise UsageError(f"--nprobe must be at least 1 (got {nprobe})")
    if threads is not None and threads < 0:
        raise UsageError(f"--threads must be 0 (all cores) or more (got {threads})")
    if text_queries <= 0 or text_threads <= 0:
        raise UsageError("--text-queries and --text-threads must be positive")
    backends = [validate_backend(b) for b in text_backends or []]
    if encoder is not None and not backends:
        backends = ["torch", "onnx", "onnx-int8", "auto"]
    if backends and library is None and encoder is None:
        raise UsageError("--text-backend on a synthetic library needs --encoder (it holds no encoder of its own)")
    text = None
    if encoder is not None:
        from songseek.engine.encoders import load_encoder

        text = load_encoder(encoder, checkpoint, "cpu", random_weights)
    runs: list[tuple[Path, Any]] = []
    if query_file is not None and library is None:
        raise UsageError("--query-file needs --library (synthetic libraries make their own queries)")
    if library is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lib = Library.open(library)
        q = (queries_from_library(lib, queries, seed=seed) if query_file is None
             else _bench_queries(lib, query_file)[:queries])
        runs.append((library, q))
        del lib
    else:
        for n in frames:
            spec = preset_spec(preset, n, dim, seed)
            if not json_out:
                typer.echo(f"library: {n} frames × {dim}, {preset} (built on first use, then reused)", err=True)
            root = cached_library(spec, work, index_factory)
            runs.append((root, make_queries(spec, queries)))
    for root, q in runs:
        report = run_query_speed(root, q, k=k, candidates=candidates, nprobe=nprobe, faiss_threads=threads)
        lats = list(report.latencies)
        text_report = None
        if backends:
            from songseek.engine.query.search import SearchOptions

            text_report = run_text_speed(root, backends, encoder=text, queries=text_queries,
                                         threads=text_threads, seed=seed,
                                         options=SearchOptions(k=k, candidates=candidates, nprobe=nprobe))
        if json_out:
            data = report.to_json()
            if text_report is not None:
                data["text"] = dataclasses.asdict(text_report)
            print_json(data)
            continue
        a = report.agreement
        _table(f"{report.frames} frames, {report.tracks} tracks, {report.dim}-d, index {report.index}"
               + (f" nprobe {report.nprobe}" if report.nprobe else "")
               + f"; {report.queries} queries, {report.faiss_threads} FAISS threads, load {report.load_avg:.1f}",
               ["path", "p50 ms", "p95 ms", "mean ms", "memory MiB", "p50 / baseline", "what"],
               [[x.name, x.p50_ms, x.p95_ms, x.mean_ms, x.memory_mb, x.vs_baseline, x.what] for x in lats])
        typer.echo(f"top-{a.k} tracks vs exact: identical {a.identical:.3f}, same set {a.same_set:.3f}, "
                   f"overlap {a.overlap:.3f}; FAISS frame recall@100 {report.frame_recall_at_100:.3f}; "
                   f"exact-path setup {report.exact_setup_s:.2f} s; peak RSS {report.rss_peak_mb:.0f} MiB")
        if text_report is not None:
            _text_table(text_report)


def _text_table(r: Any) -> None:
    """The text rows of query-speed, then one line per backend: what it ran on, setup, agreement."""
    _table(f"text queries: {r.queries} distinct texts per row, {r.threads} threads",
           ["path", "p50 ms", "p95 ms", "mean ms", "p50 / baseline", "what"],
           [[x.name, x.p50_ms, x.p95_ms, x.mean_ms, x.vs_baseline, x.what] for x in r.latencies])
    for b in r.backends:
        s = b.state
        ran = "torch (one path)" if s is None else s.backend
        line = f"text backend {b.requested}: ran on {ran}, setup {b.setup_s:.1f} s"
        if s is not None and s.choice is not None:
            c = s.choice
            line += "; auto's checks: " + ", ".join(
                f"{n} cos {c.min_cosine[n]:.5f} {c.seconds[n] * 1e3:.1f} ms" for n in c.seconds)
        if b.agreement is not None:
            line += (f"; vs torch: top-{b.agreement.k} identical {b.agreement.identical:.3f}, overlap "
                     f"{b.agreement.overlap:.3f}, min cosine {b.min_cosine:.5f}")
        typer.echo(line)
        if s is not None and s.note:
            typer.echo(f"note: {s.note}", err=True)


def _bench_queries(lib: Any, path: Path) -> Any:
    """Query vectors from a .npy file or from text lines embedded with the library's encoder."""
    import numpy as np

    from songseek.engine.errors import QueryError

    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise QueryError(f"{path}: not a readable .npy file of float vectors ({exc})") from exc
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryError(f"{path}: cannot read it as UTF-8 text, one query per line ({exc})") from exc
    if not lines:
        raise QueryError(f"{path}: no queries in the file (one text query per line)")
    return lib.embed_text(lines)


@handles_errors
def index_speed(
    sources: list[Path] = typer.Argument(..., help="Folders or audio files (the same set for both timings)."),
    encoder: str = typer.Option("clap", "--encoder", "-e", help="Encoder to index with."),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", help="HF id, local directory or .pt file."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Real architecture, random weights."),
    batch_size: int = typer.Option(16, "--batch-size", help="Windows per model call."),
    workers: int = typer.Option(2, "--workers", help="Decoding threads."),
    window: float = typer.Option(10.0, "--window", help="Window length in seconds."),
    hop: float = typer.Option(None, "--hop", help="Hop in seconds (default: the window)."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    work: Path = typer.Option(None, "--work", help="Folder for the throw-away library (default: temp)."),
    repeats: int = typer.Option(2, "--repeats", help="Alternating runs of each; the best of each is kept."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
    ray: str = typer.Option(None, "--ray", help="Instead: the threaded indexer vs `index --ray` (local, auto or "
                            "an address) on the same files, alternating; prints Ray / threaded (target ≥ 0.8)."),
    ray_workers: int = typer.Option(0, "--ray-workers", help="With --ray: embedding actors (0: automatic)."),
    ray_threads: int = typer.Option(0, "--ray-threads", help="With --ray: model CPU threads per actor "
                                    "(0: one per CPU it reserves)."),
) -> None:
    """End-to-end windows/s of `songseek index` vs model-only windows/s on the same windows (target ≥ 0.9)."""
    from songseek.benchmarks.speed import run_index_speed
    from songseek.engine.device import resolve_device
    from songseek.engine.encoders import load_encoder
    from songseek.engine.errors import UsageError

    seconds = [window] + ([] if hop is None else [hop])  # nan and inf pass `<= 0` and break the windowing later
    if batch_size <= 0 or workers <= 0 or repeats <= 0 or not all(math.isfinite(s) and s > 0 for s in seconds):
        raise UsageError("--batch-size, --workers, --window, --hop and --repeats must be positive")
    enc = load_encoder(encoder, checkpoint, resolve_device(device), random_weights)
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    if ray is not None:
        _ray_index_speed(sources, enc, encoder, checkpoint, random_weights, device, batch_size, workers, window,
                         hop, work, repeats, ray, ray_workers, ray_threads, json_out)
        return
    r = run_index_speed(sources, enc, batch_size=batch_size, workers=workers, window_s=window, hop_s=hop,
                        work=work, repeats=repeats)
    if json_out:
        print_json(r.to_json())
        return
    _table(r.title()
           + f", {r.workers} decode workers, {r.torch_threads} torch threads, "
           f"load {r.load_avg:.1f}; best of {r.repeats}",
           ["path", "seconds", "windows/s", "what"],
           [["end-to-end", r.end_to_end_s, r.end_to_end_windows_per_s, "songseek index into a new library"],
            ["model-only", r.model_only_s, r.model_only_windows_per_s, "encoder on the same windows, same batches"],
            ["decode-only", r.decode_only_s, r.decode_windows_per_s, "decode + resample + window, one thread"],
            ["model in pipeline", r.model_in_pipeline_s, r.windows / max(r.model_in_pipeline_s, 1e-9),
             f"time the indexer spent in the model ({r.pipeline_batches} batches)"]])
    typer.echo(f"end-to-end / model-only = {r.ratio:.3f} (target ≥ 0.9 on CPU)")


def _ray_index_speed(sources: list[Path], enc: Encoder, encoder: str, checkpoint: str | None, random_weights: bool,
                     device: str, batch_size: int, workers: int, window: float, hop: float | None,
                     work: Path | None, repeats: int, ray: str, ray_workers: int, ray_threads: int,
                     json_out: bool) -> None:
    from songseek.benchmarks.ray_speed import run_ray_index_speed
    from songseek.indexers.ray_runner import EncoderSpec, RayOptions

    options = RayOptions(ray, ray_workers, threads_per_worker=ray_threads, device=device)
    r = run_ray_index_speed(sources, enc, EncoderSpec(encoder, checkpoint, random_weights), options,
                            device=device, batch_size=batch_size, workers=workers, window_s=window, hop_s=hop,
                            work=work, repeats=repeats)
    if json_out:
        print_json(r.to_json())
        return
    _table(r.title()
           + f", {r.ray_threads or 'default'} model threads per actor; "
           f"Ray {r.ray_address}: {r.cluster_cpus:g} CPUs, {r.cluster_gpus:g} GPUs, "
           f"started in {r.ray_start_s:.1f} s; load {r.load_avg:.1f}; best of {r.repeats}",
           ["path", "seconds", "windows/s", "what"],
           [["threaded", r.threads_s, r.threads_windows_per_s, f"model load + index, {r.workers} decode threads"],
            ["ray", r.ray_s, r.ray_windows_per_s, "decode tasks + embedding actors (model load) + commits"]])
    typer.echo(f"ray / threaded = {r.ratio:.3f} (target ≥ 0.8); same tracks and frames: "
               f"{'yes' if r.same_tracks_and_frames else 'NO'}")
