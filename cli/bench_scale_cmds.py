"""`songseek bench index-build`: peak RSS, build time and recall of the FAISS index at growing sizes."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import handles_errors, print_json

DEFAULT_WORK = Path("~/.cache/songseek/bench")


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("index-build")(index_build_cmd)


def _sizes(text: str) -> list[int]:
    from songseek.engine.errors import UsageError

    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--frames takes comma-separated frame counts such as 1000000,2000000 (got {text!r})"
                         ) from None
    if not sizes or min(sizes) <= 0:
        raise UsageError(f"--frames needs positive frame counts (got {text!r})")
    return sizes


@handles_errors
def index_build_cmd(
    frames: str = typer.Option("1000000,2000000,4000000", "--frames", "-n",
                               help="Comma-separated library sizes in frames; each is built in its own process "
                               "over the first N frames of one synthetic library of the largest size."),
    index_factory: str = typer.Option("large", "--index-factory",
                                      help="FAISS factory string; `large` = auto's tier for large libraries "
                                      "(IVF{√n},PQ{dim/8}) at each size; `auto` = what auto picks at each size."),
    dim: int = typer.Option(512, "--dim", help="Vector dimension of the synthetic library."),
    reader: str = typer.Option("pread", "--reader", help="pread (the engine: bounded batches) or mmap "
                               "(every shard memory-mapped, the pre-issue-15 build) for comparison."),
    queries: int = typer.Option(100, "--queries", "-q", min=1, help="Queries for latency and recall vs exact search."),
    threads: int = typer.Option(1, "--threads", help="OpenMP threads for training and adding (0 = all cores; "
                                "1 by default: on a shared machine spinning threads cost more than they give)."),
    work: Path = typer.Option(DEFAULT_WORK, "--work", help="Where the synthetic library is built and kept."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic vectors."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per size."),
) -> None:
    """Build the index at each size in a child process: peak RSS, memory beyond the finished index, build
    time, query p50 and recall@100 against exact search."""
    from songseek.benchmarks.index_build import large_factory, run_in_child
    from songseek.benchmarks.synthetic import cached_frames, preset_spec

    sizes = _sizes(frames)
    spec = preset_spec("clustered", max(sizes), dim, seed)
    if not json_out:
        typer.echo(f"library: {max(sizes)} frames × {dim}, clustered (built on first use, then reused)", err=True)
    root = cached_frames(spec, work)
    rows = []
    for n in sizes:
        factory = large_factory(n, dim) if index_factory == "large" else index_factory
        r = run_in_child(root, n, factory, reader, queries, threads)
        if json_out:
            print_json(r.__dict__)
            continue
        typer.echo(f"  {n} frames: {r.factory} built in {r.build_s:.1f} s, peak RSS {r.rss_peak_mib:.0f} MiB, "
                   f"beyond index {r.beyond_index_mib:.0f} MiB, recall@100 {r.recall_at_100:.3f}", err=True)
        rows.append(r)
    if json_out:
        return
    from .tables import print_columns

    head = ["frames", "factory", "train rows", "train s", "add s", "build s", "index MiB", "est. MiB",
            "RSS base", "RSS peak", "beyond index", "RssFile", "nprobe", "query p50 ms", "R@100", "R100@1000",
            "load"]
    print_columns(f"index build from shards ({reader}), {dim}-d clustered synthetic, one child per size", head,
                  [[str(r.frames), r.factory, str(r.train_rows), f"{r.train_s:.1f}", f"{r.add_s:.1f}",
                    f"{r.build_s:.1f}", f"{r.index_mib:.0f}", f"{r.est_index_mib:.0f}", f"{r.rss_base_mib:.0f}",
                    f"{r.rss_peak_mib:.0f}", f"{r.beyond_index_mib:.0f}", f"{r.rss_file_mib:.0f}",
                    str(r.nprobe), f"{r.query_p50_ms:.2f}", f"{r.recall_at_100:.3f}",
                    f"{r.recall_100_at_1000:.3f}", f"{r.load_avg:.1f}"] for r in rows], text=["factory"])
    typer.echo("beyond index = peak RSS - RSS after imports - serialized index (memory in MiB); "
               "R100@1000 = exact top 100 found in FAISS's top 1000")
