"""Text-query speed (`songseek bench query-speed --text-backend ...`): the text tower per backend, cold and
cached, for 1-, 10- and 60-word queries, and whole text queries (encode + search) through ``Library.search``.

The baseline, measured in the same run on the same threads, is the issue's: the text tower in torch with
every text padded to 77 tokens, one text at a time (``ClapEncoder.embed_text_padded``; encoders without it:
their own torch path). Every query text is new to the cache when timed cold (distinct seeded texts).
Agreement: each backend's top-10 tracks and vectors against torch's on the same 10-word texts (with random
weights this shows numerical drift only; ranking damage needs trained weights: docs/performance.md).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from songseek.benchmarks.speed import Agreement, Latency, latency, topk_agreement
from songseek.engine.encoders import Encoder
from songseek.engine.encoders.clap_hf import ClapEncoder
from songseek.engine.encoders.onnx_text import TextBackendState
from songseek.engine.encoders.text_cache import CachedTextEncoder, TextVectorCache
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library, SearchOptions

# Words of music captions; query texts are seeded draws from them (content does not matter for speed).
MUSIC_WORDS = tuple("""
piano guitar drums bass violin cello trumpet saxophone flute organ synth choir vocals voice female male
calm upbeat slow fast loud soft sad happy dark bright warm cold aggressive gentle dreamy epic mellow
jazz rock pop metal reggae blues funk soul folk country ambient techno house trance orchestral classical
lo-fi hip-hop electronic acoustic electric distorted clean reverb echo delay vinyl crackle groove riff
solo melody harmony rhythm beat tempo chorus verse bridge intro outro crescendo fade live studio recording
with and over in a the of while playing sings singing strummed plucked bowed brushed heavy light deep
high low steady swinging syncopated driving pulsing sparse dense lush raw polished vintage modern retro
festival club church street film score game soundtrack lullaby anthem ballad march waltz tango samba
""".split())
WORD_COUNTS = (1, 10, 60)
T = TypeVar("T")


def query_texts(n: int, words: int, seed: int) -> list[str]:
    """``n`` distinct texts of exactly ``words`` words drawn from MUSIC_WORDS (seeded)."""
    if words < 1 or n < 1:
        raise UsageError(f"query_texts needs n >= 1 and words >= 1 (got {n}, {words})")
    if words == 1 and n > len(MUSIC_WORDS):
        raise UsageError(f"only {len(MUSIC_WORDS)} distinct 1-word texts exist (asked for {n})")
    rng = np.random.default_rng(seed)
    if words == 1:
        return [MUSIC_WORDS[i] for i in rng.permutation(len(MUSIC_WORDS))[:n]]
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(MUSIC_WORDS[i] for i in rng.integers(0, len(MUSIC_WORDS), words))] = None
    return list(out)


@dataclass(frozen=True)
class BackendResult:
    """One text backend: what it resolved to, its one-off setup, and its agreement with torch."""

    requested: str
    state: TextBackendState | None
    setup_s: float               # opening + resolving the backend (an ONNX export when not cached yet)
    agreement: Agreement | None  # top-10 tracks vs the torch backend, 10-word texts
    min_cosine: float            # its 10-word query vectors vs torch's (nan when torch was not run)


@dataclass(frozen=True)
class TextSpeedReport:
    threads: int
    queries: int
    latencies: tuple[Latency, ...]
    backends: tuple[BackendResult, ...]


def _time_each(fn: Callable[[T], Any], items: Sequence[T]) -> list[float]:
    times = []
    for t in items:
        t0 = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - t0)
    return times


def _encode_rows(enc: Encoder, name: str, queries: int, words: Sequence[int], seed: int, base_p50: float
                 ) -> list[Latency]:
    """Encode times of fresh texts (cold), then of the same texts again (cached), per word count."""
    rows = []
    for w in words:
        texts = query_texts(queries, w, seed + 31 * w + 1)
        cold = _time_each(lambda t: enc.embed_text([t]), texts)
        cached = _time_each(lambda t: enc.embed_text([t]), texts)
        rows.append(latency(f"encode {name} {w}w cold", f"{w}-word texts, each new to the cache", cold, 0.0,
                            base_p50))
        rows.append(latency(f"encode {name} {w}w cached", f"the same {w}-word texts again (cache hits)",
                            cached, 0.0, base_p50))
    return rows


def _query_rows(lib: Library, name: str, texts: list[str], opts: SearchOptions, base_p50: float
                ) -> tuple[list[Latency], list[list[str]]]:
    """Whole text queries, cold then cached, and the top-k track ids of each (cold) query."""
    lib.search(texts[0] + " warm", options=opts)
    found: list[list[str]] = []
    cold = _time_each(lambda t: found.append([h.track_id for h in lib.search(t, options=opts)]), texts)
    cached = _time_each(lambda t: lib.search(t, options=opts), texts)
    rows = [latency(f"text query {name} cold", "Library.search(text), 10 words new to the cache: encode + "
                    "candidates + fusion + hits", cold, 0.0, base_p50),
            latency(f"text query {name} cached", "the same texts again: cached vector + search", cached, 0.0,
                    base_p50)]
    return rows, found


def _open(library: Path, encoder: Encoder | None, backend: str, cache: TextVectorCache | None) -> Library:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Library.open(library, encoder=encoder, text_backend=backend, text_cache=cache)


def run_text_speed(library: Path, backends: Sequence[str], *, encoder: Encoder | None = None,
                   queries: int = 30, words: Sequence[int] = WORD_COUNTS, threads: int = 2,
                   options: SearchOptions | None = None, seed: int = 0) -> TextSpeedReport:
    """Time text queries on ``library`` (its own encoder, or ``encoder`` for a precomputed library)
    for each backend in ``backends`` (auto, torch, onnx, onnx-int8) on ``threads`` torch/ORT threads."""
    import torch

    if queries < 1 or threads < 1 or not backends:
        raise UsageError("run_text_speed needs queries >= 1, threads >= 1 and at least one backend")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(library, list(dict.fromkeys(backends)), encoder, queries, words, threads,
                    options or SearchOptions(), seed)
    finally:
        torch.set_num_threads(before)


def _run(library: Path, backends: list[str], encoder: Encoder | None, queries: int, words: Sequence[int],
         threads: int, opts: SearchOptions, seed: int) -> TextSpeedReport:
    # Baseline: torch, padded to 77, one text at a time, 10-word texts nobody else uses.
    plain_lib = _open(library, encoder, "torch", None)
    plain = plain_lib.encoder
    encoder = plain  # loaded once, shared by every backend's Library below
    base_texts = query_texts(queries, 10, seed + 7919)
    if isinstance(plain, ClapEncoder):
        plain.embed_text_padded(base_texts[:1])
        base_t = _time_each(lambda t: plain.embed_text_padded([t]), base_texts)
        what = "torch text tower, padded to 77 tokens, one text at a time (the issue's baseline)"
    else:
        plain.embed_text(base_texts[:1])
        base_t = _time_each(lambda t: plain.embed_text([t]), base_texts)
        what = f"{plain.info.name} text tower in torch, one text at a time (baseline)"
    base_p50 = float(np.percentile(base_t, 50)) * 1e3
    rows = [latency("baseline-77", f"10 words: {what}", base_t, 0.0, base_p50)]
    # Query by example encodes one clip: one 10 s window through the audio tower (torch), for scale.
    rng = np.random.default_rng(seed)
    sr = plain.info.sample_rate
    clips = [0.1 * rng.standard_normal(10 * sr).astype(np.float32) for _ in range(min(queries, 5))]
    plain.embed_audio(clips[0][None])
    audio_t = []
    for clip in clips:
        t0 = time.perf_counter()
        plain.embed_audio(clip[None])
        audio_t.append(time.perf_counter() - t0)
    rows.append(latency("audio-encode", "query by example: one 10 s window through the audio tower (torch)",
                        audio_t, 0.0, base_p50))
    plain_lib.search(audio=clips[0], options=opts)
    rows.append(latency("audio query", "query by example, whole: Library.search(audio=10 s clip) = encode + "
                        "candidates + fusion + hits", _time_each(lambda c: plain_lib.search(audio=c, options=opts),
                                                                 clips), 0.0, base_p50))
    whole_texts = query_texts(queries, 10, seed + 104729)
    hits: dict[str, list[list[str]]] = {}
    vecs: dict[str, np.ndarray] = {}
    setups: dict[str, tuple[TextBackendState | None, float]] = {}
    for b in backends:
        t0 = time.perf_counter()
        lib = _open(library, encoder, b, TextVectorCache())
        state = lib.text_backend()
        enc = lib.encoder
        enc.embed_text(["warm up the text path"])
        setups[b] = (state, time.perf_counter() - t0)
        name = b if state is None or state.backend == b else f"{b}={state.backend}"
        rows += _encode_rows(enc, name, queries, words, seed, base_p50)
        q_rows, hits[b] = _query_rows(lib, name, whole_texts, opts, base_p50)
        rows += q_rows
        vecs[b] = enc.embed_text(whole_texts) if isinstance(enc, CachedTextEncoder) else np.zeros((0, 0))
    results = []
    for b in backends:
        state, setup = setups[b]
        agree = topk_agreement(hits[b], hits["torch"], opts.k) if "torch" in hits and b != "torch" else None
        cos = float("nan")
        if "torch" in vecs and b != "torch" and vecs[b].size and vecs["torch"].size:
            cos = float((vecs[b] * vecs["torch"]).sum(axis=1).min())
        results.append(BackendResult(b, state, setup, agree, cos))
    return TextSpeedReport(threads, queries, tuple(rows), tuple(results))
