"""`songseek serve` (the HTTP API and search page) and `songseek bench serve` (its load benchmark)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import typer

from songseek.engine.errors import UsageError

from .common import handles_errors, library_option, print_json


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def register_bench(bench_app: typer.Typer) -> None:
    bench_app.command("serve")(bench_serve)


@handles_errors
def serve(
    library: Path = library_option(help="Library directory to serve."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; beyond loopback a token is required."),
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="TCP port."),
    token_file: Path = typer.Option(None, "--token-file", help="File whose first line is the access token "
                                    "(else the SONGSEEK_TOKEN environment variable)."),
    workers: int = typer.Option(2, "--workers", help="Threads that encode and search."),
    queue: int = typer.Option(32, "--queue", help="Requests that may wait for a worker; more get 503."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest query clip upload."),
    max_clip_s: float = typer.Option(60.0, "--max-clip-s", help="Longest query clip, decoded seconds."),
    where_timeout: float = typer.Option(2.0, "--where-timeout", help="Seconds one where filter may run (DuckDB "
                                        "is interrupted past it; the request gets a 400)."),
    where_memory_mb: int = typer.Option(256, "--where-memory-mb", help="DuckDB memory one where filter may use."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allow this origin cross-site (repeat); "
                                          "off by default: the page is served from the same origin."),
    device: str = typer.Option("auto", "--device", help="Device for the query encoder."),
    cache_texts: bool = typer.Option(False, "--cache-texts", help="Keep query text vectors in the library's "
                                     "text-cache/ folder, so a restarted server skips the text encoder for them."),
) -> None:
    """Serve the JSON API (/openapi.json) and the search page (/) until killed (docs/serve.md)."""
    from songseek.engine.storage.manifest import read_manifest
    from songseek.server.config import Limits, ServerConfig, check_exposure, read_token

    token = read_token(token_file)
    check_exposure(host, token)  # before anything slow: a refused exposure fails in a blink
    read_manifest(library.expanduser())  # likewise a mistyped --library, before the server and model load
    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):  # int(nan * 2**20) would be a traceback
        raise UsageError(f"max_upload_mb must be a positive number of MiB (got {max_upload_mb})")
    check_port(host, port)  # and a port already taken (uvicorn would say so after the model loaded)
    import uvicorn

    from songseek.server import create_app

    limits = Limits(workers=workers, queue=queue, max_upload_bytes=int(max_upload_mb * 2**20), max_clip_s=max_clip_s,
                    where_timeout_s=where_timeout, where_memory_mb=where_memory_mb)
    app = create_app(ServerConfig(library=library, host=host, token=token, cors_origins=tuple(cors_origin),
                                  limits=limits, device=device, cache_texts=cache_texts))
    snap = app.state.ctx.holder.current()
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {library} (generation {snap.generation}, {snap.library.n_tracks} tracks) at "
               f"http://{shown}:{port}/" + (" — token required" if token else ""), err=True)
    for warning in snap.warnings:
        typer.echo(f"warning: {warning}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def check_port(host: str, port: int) -> None:
    """Refuse (UsageError) a host/port this process cannot listen on, as uvicorn binds it (SO_REUSEADDR)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None


@handles_errors
def bench_serve(
    frames: int = typer.Option(100_000, "--frames", "-n", help="Synthetic library size in frames."),
    requests: int = typer.Option(2_000, "--requests", help="Requests per (query kind, concurrency) run."),
    concurrency: list[int] = typer.Option([1, 8, 32], "--concurrency", "-c", help="Concurrent clients (repeat)."),
    kinds: list[str] = typer.Option(["vector", "text"], "--kind", help="vector and/or text queries."),
    k: int = typer.Option(10, "-k", help="Hits per query."),
    soak: int = typer.Option(0, "--soak", help="Also send this many requests at --soak-clients per query kind, "
                             "with the server's RSS sampled (memory growth); bounded, 0 = skip."),
    soak_clients: int = typer.Option(32, "--soak-clients", help="Concurrent clients of the --soak run."),
    work: Path = typer.Option(Path("~/.cache/songseek/bench"), "--work", help="Folder for the cached library."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object with every figure."),
) -> None:
    """Load on loopback: a bounded client against `songseek serve` on a synthetic library, next to in-process
    Library.search in the same run (p50/p99, throughput, errors, server RSS), then an overload run."""
    from songseek.server.loadbench import LoadConfig, run_load

    report = run_load(LoadConfig(frames=frames, requests=requests, concurrency=tuple(concurrency),
                                 kinds=tuple(kinds), k=k, work=work.expanduser(), soak=soak,
                                 soak_clients=soak_clients), typer.echo)
    if json_out:
        print_json(report)
