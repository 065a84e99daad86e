"""`songseek index`, `ingest`, `info`, `failures`, `search`: building and querying a library."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from songseek.engine.errors import QueryError, SongseekError

from .common import LIBRARY_OPT, handles_errors, print_json, safe_text

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from songseek.engine.encoders import EncoderInfo
    from songseek.engine.query.search import Hit



def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("ingest")(ingest)
    app.command("info")(info)
    app.command("failures")(failures)
    app.command("search")(search)


@handles_errors
def index(
    sources: list[Path] = typer.Argument(..., help="Folders or audio files to index."),
    library: Path = LIBRARY_OPT,
    encoder: str | None = typer.Option(None, "--encoder", "-e", help="clap, laion, msclap, demo (default: "
                                       "laion, or the library's own encoder when it exists)."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", "-c", help="HF id, local directory or .pt file."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Real architecture, random weights: "
                                        "for speed and pipeline checks only; every search will say so."),
    window: float = typer.Option(None, "--window", help="Window length in seconds (default: the encoder's "
                                 "native window, 10 s; 7 s for msclap; or the library's own)."),
    hop: float = typer.Option(None, "--hop", help="Hop between windows in seconds (default: the window)."),
    index_factory: str = typer.Option(None, "--index-factory", help="FAISS factory string, or auto "
                                      "(default: auto for a new library, else the library's own)."),
    nprobe: int = typer.Option(None, "--nprobe", help="IVF lists each search probes by default, saved in "
                               "the library (0: automatic; default: keep). Measure with `bench query-speed`."),
    batch_size: int = typer.Option(16, "--batch-size", help="Windows per model call."),
    workers: int = typer.Option(2, "--workers", help="Decoding threads."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    prune: bool = typer.Option(None, "--prune/--no-prune", help="Drop tracks whose files are gone from the "
                               "folders indexed (default: on, except under a folder with no audio file left; "
                               "--prune forces it there too)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Retry files that failed before."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every file, even those whose size and mtime are "
                                "unchanged: finds edits by tools that keep file times (slow: reads it all)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any file failed."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another indexer of this library to finish."),
    text_backend: str = typer.Option("auto", "--text-backend", help="Prepare text search now (clap, laion, demo): "
                                     "auto exports and checks the ONNX text tower once per checkpoint; torch "
                                     "skips that."),
    json_out: bool = typer.Option(False, "--json", help="Print the run's counts as JSON."),
    commit_every: int = typer.Option(64, "--commit-every", hidden=True,
                                     help="Commit after this many finished files (tests use 1)."),
    ray: str = typer.Option(None, "--ray", help="Decode and embed on Ray: local, auto (the running cluster) "
                            "or a cluster address; this process stays the one writer (docs/ray.md)."),
    ray_workers: int = typer.Option(0, "--ray-workers", help="With --ray: embedding actors, one model each "
                                    "(0: one per GPU of the cluster, else 1)."),
    ray_gpus: float = typer.Option(None, "--ray-gpus", help="With --ray: GPUs per embedding actor "
                                   "(default: 1 when the cluster has GPUs, else 0)."),
    ray_threads: int = typer.Option(0, "--ray-threads", help="With --ray: model CPU threads per actor "
                                    "(0: one per CPU it reserves)."),
) -> None:
    """Index audio files into a library; later runs embed only new or changed files (docs/robustness.md).

    Exit codes: 0 when the run finished (failed files are counted in the summary line and listed by
    `songseek failures`), 1 with --strict when a file failed, 2 for bad arguments or an unusable library.
    """
    from songseek.cli.progress import RichProgress
    from songseek.engine.device import resolve_device
    from songseek.engine.encoders import DEFAULT_ENCODER, load_encoder
    from songseek.engine.errors import UsageError
    from songseek.engine.storage.manifest import read_manifest
    from songseek.engine.storage.writer import refuse_library_without_manifest
    from songseek.indexers.pipeline import IndexConfig, check_encoder_name, index_paths
    from songseek.indexers.sources import check_sources

    given = {"--window": window, "--hop": hop, "--batch-size": batch_size, "--workers": workers,
             "--commit-every": commit_every}
    bad = [f"{name} {value:g}" for name, value in given.items() if value is not None and value <= 0]
    if bad:  # name only the options given wrong (--commit-every is hidden: never list it unasked)
        raise UsageError(f"{', '.join(bad)}: must be above 0")
    from songseek.engine.encoders.onnx_text import validate_backend

    validate_backend(text_backend)
    if ray_workers < 0 or ray_threads < 0 or (ray_gpus is not None and ray_gpus < 0):
        raise UsageError("--ray-workers, --ray-gpus and --ray-threads must be 0 or more")
    # a missing source, or only non-audio files, is refused before a model loads; a glob's cover.jpg is skipped
    not_audio = check_sources(sources, library)  # a new library with no audio at all is refused here
    if (library / "manifest.json").exists():  # an existing library keeps its own settings unless told
        m = read_manifest(library)
        if encoder is None and m.encoder.name == "precomputed":
            raise UsageError(f"{library} holds precomputed {m.dim}-d vectors (songseek ingest): pass --encoder "
                             f"with a model that makes {m.dim}-d vectors, or add vectors with songseek ingest")
        if encoder is not None:
            check_encoder_name(m, encoder, library)  # from the manifest alone: no weights load for a wrong one
        if encoder is None or encoder == m.encoder.name:
            encoder, checkpoint = m.encoder.name, checkpoint or m.encoder.checkpoint or None
            random_weights = random_weights or m.encoder.random_weights
        if window is None and hop is None:
            window, hop = m.window_s, m.hop_s
        index_factory = index_factory or m.index_factory
    else:  # a library whose manifest was deleted is refused now, not after the default model has loaded
        refuse_library_without_manifest(library)
    index_factory = index_factory or "auto"
    # On Ray the models run in the actors; this process needs the encoder's description only.
    enc = load_encoder(encoder or DEFAULT_ENCODER, checkpoint, resolve_device("cpu" if ray else device),
                       random_weights)
    window = window or enc.info.native_window_s or 10.0  # MS-CLAP sees 7 s: longer windows would lose their tail
    if enc.info.random_weights:
        typer.echo("warning: random weights — vectors and scores mean nothing (pipeline/speed checks only)",
                   err=True)
    config = IndexConfig(window_s=window, hop_s=hop, batch_size=batch_size, workers=workers,
                         index_factory=index_factory, nprobe=nprobe, prune=prune is not False,
                         prune_empty=prune is True,
                         retry_failed=retry_failed, rehash=rehash,
                         commit_every_files=commit_every)
    driver = None
    if ray is not None:
        from songseek.indexers.ray_runner import EncoderSpec, RayOptions, ray_driver

        driver = ray_driver(EncoderSpec(encoder or DEFAULT_ENCODER, checkpoint, random_weights),
                            RayOptions(ray, ray_workers, ray_gpus, threads_per_worker=ray_threads,
                                       device=device))
    progress = RichProgress(not json_out)
    try:
        report = index_paths(sources, library, enc, config, progress, wait=wait, driver=driver)
    except KeyboardInterrupt:
        # the indexer commits every finished file before it lets the interrupt through: say how far it got,
        # once the bar is gone (a live bar would be drawn again under this line)
        progress.close()
        typer.echo(f"interrupted: {progress.interrupt_summary()}", err=True)
        raise typer.Exit(130) from None
    if not_audio:
        typer.echo(f"note: skipped {len(not_audio)} named file(s) that are not audio: "
                   f"{safe_text(', '.join(p.name for p in not_audio[:5]))}"
                   f"{' ...' if len(not_audio) > 5 else ''}", err=True)
    if json_out:
        data = {k: v for k, v in report.__dict__.items() if k != "failures"}
        data["failures"] = [f.__dict__ for f in report.failures]
        print_json(data)
    else:
        typer.echo(safe_text(report.summary()))
        for f in report.failures[:20]:
            typer.echo(f"  failed: {safe_text(f.message)}", err=True)
        if len(report.failures) > 20:
            typer.echo(f"  ... and {len(report.failures) - 20} more: songseek failures --library {library}",
                       err=True)
        for note in report.notes:
            typer.echo(f"note: {safe_text(note)}", err=True)
    _prepare_text(enc, text_backend, json_out)
    if strict and report.failed:
        raise typer.Exit(1)


def _prepare_text(enc: object, backend: str, quiet: bool) -> None:
    """Resolve the text backend once now, so the library's first text search does not pay for the ONNX
    export (it is cached per checkpoint; later runs only read the recorded choice)."""
    from songseek.engine.encoders.base import TextBackendEncoder

    if backend == "torch" or not isinstance(enc, TextBackendEncoder):
        return
    enc.set_text_backend(backend)
    try:
        preparing = enc.text_backend_needs_preparing()  # an ONNX export or a timing to come, not a cached one
        if preparing and not quiet:
            typer.echo("preparing the text search path (the first time per checkpoint exports it to ONNX)",
                       err=True)
        state = enc.text_backend_state()
    except SongseekError as exc:  # e.g. no tokenizer: text search will say so when it is used
        typer.echo(f"note: text search not prepared: {exc}", err=True)
        return
    if state.note:
        typer.echo(f"note: {state.note}", err=True)
    elif preparing and not quiet:
        typer.echo(f"text search runs on {state.backend}", err=True)


@handles_errors
def ingest(
    file: Path = typer.Argument(..., help="Parquet/Arrow file: track_id, start_s, end_s, embedding[, path, tags]."),
    library: Path = LIBRARY_OPT,
    index_factory: str = typer.Option(None, "--index-factory", help="FAISS factory string, or auto "
                                      "(default: auto for a new library, else the library's own)."),
    nprobe: int = typer.Option(None, "--nprobe", help="IVF lists each search probes by default, saved in "
                               "the library (0: automatic; default: keep). Measure with `bench query-speed`."),
    encoder: str | None = typer.Option(None, "--encoder", "-e", help="The model that made the vectors (clap, "
                                       "laion, msclap, demo): text and audio queries are embedded with it "
                                       "(default: none, vector queries only)."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", "-c", help="With --encoder: its HF id, local "
                                          "directory or .pt file."),
    random_weights: bool = typer.Option(False, "--random-weights", help="With --encoder: the vectors came "
                                        "from its random-weights model."),
    prune: bool = typer.Option(False, "--prune", help="FILE lists the whole library: remove the stored "
                               "tracks it does not list (as index drops tracks whose files are gone)."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another writer of this library to finish "
                              "instead of failing."),
) -> None:
    """Build or extend a library from precomputed per-window vectors."""
    from songseek.engine.errors import UsageError
    from songseek.engine.storage.writer import refuse_library_without_manifest
    from songseek.indexers.ingest import ingest_table, read_vectors_table

    if encoder is None and (checkpoint is not None or random_weights):
        raise UsageError("--checkpoint and --random-weights describe an --encoder: pass --encoder NAME too")
    # what can be refused without the model is refused before it loads: a bad file, a library without manifest
    table = read_vectors_table(file)
    refuse_library_without_manifest(library)
    info = None if encoder is None else _ingest_encoder_info(encoder, checkpoint, random_weights)
    report = ingest_table(table, library, source=str(file), encoder=info, index_factory=index_factory,
                          nprobe=nprobe, prune=prune, wait=wait)
    kept = f" ({report.unchanged} already stored as given, left as they were)" if report.unchanged else ""
    removed = f"; removed {report.removed} track{'' if report.removed == 1 else 's'} the file does not list" \
        if prune else ""
    typer.echo(f"ingested {report.tracks} track{'' if report.tracks == 1 else 's'} into {library}{kept}{removed}")


def _ingest_encoder_info(name: str, checkpoint: str | None, random_weights: bool) -> EncoderInfo:
    """The EncoderInfo to record for vectors an encoder made. Loads the model once, on the CPU, because the
    record holds what only the weights tell (dim, sample rate, checkpoint sha256)."""
    from songseek.engine.encoders import load_encoder

    return load_encoder(name, checkpoint, "cpu", random_weights).info


@handles_errors
def info(library: Path = LIBRARY_OPT, json_out: bool = typer.Option(False, "--json", help="One JSON object.")
         ) -> None:
    """Tracks, frames, encoder, windowing, index and size of a library."""
    from songseek.engine.analysis.duplicates import stored_summary as duplicate_summary
    from songseek.engine.query.search import Library
    from songseek.engine.query.stats import library_stats

    from . import tables

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = Library.open(library)
        stats = library_stats(lib)
    data = stats.to_json()
    # how the index got to its state: "rebuilt" (trained from scratch) or "updated" (rows added)
    data["index_last_action"] = lib.manifest.index_last_action or ("rebuilt" if lib.manifest.index_file else "")
    data["duplicates"] = duplicate_summary(lib.extra_tables.get("duplicates"))
    if json_out:
        print_json(data)  # index_nprobe stays 0 for an index that is not IVF (the JSON contract)
        return
    if not data["index_nprobe"]:  # a "0" here would read as the automatic rule; a Flat index has no lists
        data["index_nprobe"] = ("- (no index yet: nothing to probe)" if data["index"] == "none"
                                else f"- ({data['index']} index: not IVF, nothing to probe)")
    data["audio_hours"] = f"{data['audio_hours']:.2f}"  # the JSON keeps every digit
    for key, value in data.items():
        typer.echo(tables.key_value(key, safe_text(_info_text(value))))
    if stats.dead_frames and stats.dead_frames >= max(stats.frames, 1) // 4:
        typer.echo(f"note: {stats.dead_frames} dead frames (of changed or removed tracks) take space; "
                   f"`songseek repair --library {library} --compact` reclaims them", err=True)
    if stats.random_weights:
        typer.echo("warning: built with RANDOM weights — search scores mean nothing", err=True)
    if stats.encoder == "demo":
        typer.echo("note: the demo model was trained on synthetic music only (docs/demo-model.md); "
                   "it is not meant for real recordings — use --encoder laion/clap with real weights", err=True)


def _info_text(value: object) -> str:
    """A value of `info`'s text view: nested dicts (rerank, duplicates) as key=value pairs, not Python's repr."""
    if isinstance(value, dict):
        return ", ".join(_pairs(value, "")) or "-"
    return str(value)


def _pairs(value: dict, prefix: str) -> list[str]:
    pairs: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            pairs += _pairs(item, f"{prefix}{key}.")
        else:
            pairs.append(f"{prefix}{key}={'-' if item == {} else item}")
    return pairs


@handles_errors
def failures(library: Path = LIBRARY_OPT,
             json_out: bool = typer.Option(False, "--json", help="One JSON array of failure objects (path, "
                                           "error_class, message, time, size, mtime; times in Unix seconds).")
             ) -> None:
    """Files that could not be indexed (retried when they change, or with `index --retry-failed`)."""
    from songseek.engine.storage.manifest import read_manifest
    from songseek.engine.storage.store import read_failures

    m = read_manifest(library)
    rows = read_failures(library, m).to_pylist()
    if json_out:
        print_json(rows)
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"] or 0))
        typer.echo(f"{safe_text(r['path'])}\t{safe_text(r['error_class'])}\t{when}\t{safe_text(r['message'])}")
    typer.echo(f"{len(rows)} failures (retried when the file changes, or with `songseek index --retry-failed`)",
               err=True)


@handles_errors
def search(
    query: str = typer.Argument(None, help="Text query."),
    library: Path = LIBRARY_OPT,
    audio: Path = typer.Option(None, "--audio", help="Query by example: an audio file."),
    start: float = typer.Option(None, "--start", help="With --audio: start of the excerpt (s; default 0)."),
    end: float = typer.Option(None, "--end", help="With --audio: end of the excerpt (s)."),
    query_vectors: Path = typer.Option(None, "--query-vectors", help=".npy float32 (n, dim): one query per row. "
                                       "Prints JSON: one array of hits per query, one per line (no table; each "
                                       "hit has the --explain score parts)."),
    query_file: Path = typer.Option(None, "--query-file", help="Text file, one query per line. Prints JSON: one "
                                    "array of hits per query, one per line, in the file's order (a blank line "
                                    "gets [], so output line n answers line n; no table; each hit has the "
                                    "--explain score parts)."),
    k: int = typer.Option(10, "-k", help="Number of tracks to return."),
    rerank: str = typer.Option(None, "--rerank", help="auto (by the query's form: a one-sentence text is "
                               "a moment, part; several sentences a whole track, whole; an --audio excerpt of 2+ "
                               "windows, align; else hedge), part, whole, hedge, align (an excerpt's windows in "
                               "order), fusion (CoLLAP), blend, mean, max or none (default: the library's, see "
                               "`songseek bench rerank --save`, else auto)."),
    candidates: int = typer.Option(200, "--candidates", help="Tracks reranked per query."),
    where: str = typer.Option(None, "--where", help="SQL predicate over the tracks table (DuckDB)."),
    where_timeout: float = typer.Option(10.0, "--where-timeout", help="Seconds a --where predicate may run "
                                        "before it is stopped."),
    max_excerpt: float = typer.Option(None, "--max-excerpt", help="With --audio: the longest excerpt decoded "
                                      "(s; default 60); also the default length after --start."),
    exact: bool = typer.Option(False, "--exact", help="Skip FAISS: brute force over every frame."),
    nprobe: int = typer.Option(None, "--nprobe", help="IVF lists probed (more = slower, closer to --exact)."),
    collapse: bool = typer.Option(False, "--collapse-duplicates", help="One hit per group found by "
                                  "`songseek duplicates` (its best-ranked member)."),
    kernel_s: float = typer.Option(None, "--kernel-s", help="Fusion kernel length in seconds."),
    stride_s: float = typer.Option(None, "--stride-s", help="Fusion kernel stride in seconds."),
    segment_s: float = typer.Option(None, "--segment-s", help="Longest best segment in seconds (default 30; "
                                    "the segment is the best run of windows up to that length)."),
    temperature: float = typer.Option(None, "--temperature", help="Fusion softmax temperature, in standard "
                                      "deviations of the query's similarities."),
    explain: bool = typer.Option(False, "--explain", help="Show the score parts (table view; JSON has them always)."),
    device: str = typer.Option("auto", "--device", help="Device for the query encoder."),
    text_backend: str = typer.Option("auto", "--text-backend", help="Text tower engine (clap, laion, demo): auto (the "
                                     "fastest that passes its checks here), torch, onnx or onnx-int8."),
    cache_texts: bool = typer.Option(False, "--cache-texts", help="Keep query text vectors in the library's "
                                     "text-cache/ folder, so repeated queries skip the text encoder."),
    json_out: bool = typer.Option(False, "--json", help="One JSON array of hits per query line."),
) -> None:
    """Find tracks (and the best segment in each) for a text, audio or vector query."""
    import dataclasses

    from songseek.engine.query.filters import FilterLimits
    from songseek.engine.query.fusion import params_for_hop
    from songseek.engine.query.search import (
        MAX_EXCERPT_S,
        Library,
        SearchOptions,
        check_query_text,
        excerpt_bounds,
    )

    given = sum(x is not None for x in (query, audio, query_vectors, query_file))
    if given != 1:
        raise QueryError("give exactly one of QUERY, --audio, --query-vectors or --query-file")
    if audio is None:  # the engine refuses them too, but only for a text; a vector query would drop them
        cut = [name for name, value in (("--start", start), ("--end", end), ("--max-excerpt", max_excerpt))
               if value is not None]
        if cut:
            raise QueryError(f"{', '.join(cut)} cut{'s' if len(cut) == 1 else ''} an --audio query's excerpt: "
                             "give --audio FILE, or drop them")
    start = 0.0 if start is None else start
    max_excerpt = MAX_EXCERPT_S if max_excerpt is None else max_excerpt
    if query is not None:
        check_query_text(query)  # before opening the library: a typo fails fast
    _check_positive({"--where-timeout": where_timeout, "--kernel-s": kernel_s, "--stride-s": stride_s,
                     "--segment-s": segment_s})  # named as typed here; the engine's own checks say kernel_s
    limits = FilterLimits(timeout_s=where_timeout).validated()
    if audio is not None:
        excerpt_bounds(start, end, max_excerpt, names=("--start", "--end", "--max-excerpt"))
    for path in (audio, query_vectors, query_file):
        if path is not None and path.exists() and not path.is_file():  # a FIFO would block the read
            raise QueryError(f"{path}: not a regular file; give a file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib = Library.open(library, device=device, filter_limits=limits,
                           text_backend=text_backend, persist_text_cache=cache_texts)
    for w in caught:
        typer.echo(f"warning: {safe_text(w.message)}", err=True)
    if query is not None or query_file is not None:
        state = lib.text_backend()  # resolved before the query: a first ONNX export says why it is slow
        if state is not None and state.note:
            typer.echo(f"note: {safe_text(state.note)}", err=True)
    fusion = None  # the library's saved rerank parameters, unless some are given here
    if any(x is not None for x in (kernel_s, stride_s, segment_s, temperature)):
        fusion = params_for_hop(lib.manifest.hop_s, lib.rerank_settings().params, kernel_s, stride_s, segment_s,
                                window_s=lib.manifest.window_s)
        if temperature is not None:
            fusion = dataclasses.replace(fusion, temperature=temperature)
    opts = SearchOptions(k=k, rerank=rerank, candidates=candidates, where=where, fusion=fusion, nprobe=nprobe,
                         exact=exact, collapse_duplicates=collapse).validated()
    allowed = lib.allowed_rows(opts.where, opts.filter_limits)  # remembered: the search below reuses it
    if query_vectors is not None:
        results = lib.search_vectors(_load_query_vectors(query_vectors), opts)
        _print_results(results, True, explain)
    elif query_file is not None:
        lines = [ln.strip() for ln in _read_query_file(query_file)]
        found = iter(lib.search_texts([ln for ln in lines if ln], opts))
        results = [next(found) if ln else [] for ln in lines]  # a blank line keeps its place in the output
        _print_results(results, True, explain)
        results = [hits for hits, ln in zip(results, lines, strict=True) if ln]  # the note counts queries only
    elif audio is not None:
        from songseek.engine.errors import DecodeError

        try:
            hits = lib.search(audio=audio, start_s=start, end_s=end, max_excerpt_s=max_excerpt, options=opts)
        except DecodeError as exc:  # a bad query file is bad input (exit 2), not a failed run
            raise QueryError(f"--audio {exc}") from None
        results = [hits]
        _print_results(results, json_out, explain)
    else:
        results = [lib.search(query, options=opts)]
        _print_results(results, json_out, explain)
    # after the results (an error stays the only line), and only when fewer hits than -k have a reason to tell
    matching = lib.n_tracks if allowed is None else len(allowed)
    note = _shortfall_note(k, matching, lib.n_tracks, where, [len(hits) for hits in results])
    if note:
        typer.echo(note, err=True)


def _shortfall_note(k: int, matching: int, n_tracks: int, where: str | None, shown: list[int]) -> str:
    """Why a search showed fewer than ``k`` hits, when that is because fewer tracks can match: an empty
    table (or a short one) alone reads as a broken search. ``shown``: the hits of each query."""
    if n_tracks == 0:
        return "note: the library has no tracks (songseek index adds them)"
    if where is not None and matching == 0:
        return f'no track matches --where "{safe_text(where)}"'
    if k <= matching or any(n != matching for n in shown):  # -k was reached, or something else cut the hits
        return ""
    if where is not None:
        agree = "tracks match" if matching != 1 else "track matches"
        return f"note: {matching} {agree} --where; showing all of them"
    return f"note: the library has {matching} track{'s' if matching != 1 else ''}; showing all of them"


def _load_query_vectors(path: Path) -> np.ndarray:
    """The rows of a .npy file; QueryError when it is not one (the engine checks dtype, shape, values)."""
    import numpy as np

    try:
        with path.open("rb") as f:
            is_npy = f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
        if not is_npy:  # numpy would read it as a pickle and advise allow_pickle: never right here
            raise QueryError(f"{path}: not a .npy file of float vectors (no .npy header); for a text file of "
                             "queries, one per line, use --query-file")
        vectors = np.atleast_2d(np.load(path))
    except ValueError as exc:
        if "pickle" in str(exc):  # an object array: numpy's advice to unpickle it would run code from the file
            raise QueryError(f"{path}: a .npy file of Python objects, not of float vectors") from None
        raise QueryError(f"{path}: not a readable .npy file of float vectors ({exc})") from exc
    except (OSError, EOFError, TypeError) as exc:
        raise QueryError(f"{path}: not a readable .npy file of float vectors ({exc})") from exc
    if vectors.shape[0] == 0:  # else nothing is printed and the exit code says all went well
        raise QueryError(f"{path}: no query vectors in the file (an array of shape {vectors.shape})")
    return vectors


def _read_query_file(path: Path) -> list[str]:
    """The lines of a --query-file; QueryError when it cannot be read, holds no query at all, or a line is not
    a query a search takes (named by its line number: in a long file the message alone would not find it).
    A byte-order mark (what Windows editors write first) is not part of the first line."""
    from songseek.engine.query.search import check_query_text

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise QueryError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise QueryError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not any(ln.strip() for ln in lines):
        raise QueryError(f"{path}: no queries in the file (one text query per line)")
    for number, line in enumerate(lines, start=1):
        if line.strip():  # a blank line is kept as a blank answer ([])
            try:
                check_query_text(line.strip())
            except QueryError as exc:
                raise QueryError(f"{path} line {number}: {exc}") from None
    return lines


# The explain columns take about 75 of 80 columns: beside them the track would shrink to "/tmp…". Below
# this much room for it they go to a table of their own, keyed by rank, as print_columns splits wide tables.
_TRACK_MIN = 32


def _print_results(results: list[list[Hit]], json_out: bool, explain: bool) -> None:
    if json_out:
        for hits in results:
            print_json([h.to_json() for h in hits])
        return
    from rich.table import Table

    from . import tables

    console = tables.console()  # as wide as the terminal: numbers stay whole, a long track loses its middle
    parts_header = ["rank", "rK", "rT", "best window", "candidate"]
    for hits in results:
        main = [[str(h.rank), f"{h.score:.4f}", f"{_mmss(h.segment.start_s)}–{_mmss(h.segment.end_s)}"]
                for h in hits]
        parts = [[f"{h.r_k:.4f}", f"{h.r_t:.4f}", f"{h.best_window:.4f}", f"{h.candidate_score:.4f}"]
                 for h in hits]
        longest = max((len(_track_name(h)) for h in hits), default=0)
        room = console.width - tables.cells_width(["rank", "score", "segment", *parts_header[1:]],
                                                  [m + p for m, p in zip(main, parts, strict=True)])
        beside = explain and room >= min(_TRACK_MIN, longest + 3)
        table = Table(show_edge=False, caption=f"rerank: {hits[0].rerank}" if beside and hits else None)
        for col in ("rank", "score", "segment"):
            table.add_column(col, no_wrap=True)
        table.add_column("track")
        for col in parts_header[1:] if beside else []:
            table.add_column(col, no_wrap=True)
        for h, m, p in zip(hits, main, parts, strict=True):
            table.add_row(*m, tables.track_cell(h.artist, h.title, h.path), *(p if beside else []))
        console.print(table)
        if explain and hits and not beside:
            tables.print_columns(f"score parts (rerank: {hits[0].rerank})", parts_header,
                                 [[m[0], *p] for m, p in zip(main, parts, strict=True)])


def _track_name(hit: Hit) -> str:
    """What tells a hit apart: ``artist – title`` when the file is tagged, else its path."""
    return f"{hit.artist} – {hit.title}" if hit.artist and hit.title else hit.path




def _mmss(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def _check_positive(options: dict[str, float | None]) -> None:
    """QueryError naming the first option given that is not a finite number above 0."""
    for name, value in options.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise QueryError(f"{name} must be a finite number of seconds above 0 (got {value!r})")

