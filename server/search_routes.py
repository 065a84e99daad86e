"""/api/search (text), /api/search/batch (texts or vectors), /api/search/audio (an uploaded clip) and
/api/similar/{track_id} (more like this, from the stored vectors)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from songseek.engine.audio import decode
from songseek.engine.encoders.base import l2_normalize
from songseek.engine.errors import DecodeError, QueryError, UsageError
from songseek.engine.query.search import Hit, check_query_text
from songseek.server.context import Context, ctx_of
from songseek.server.errors import NotFound, TooLarge
from songseek.server.query import SearchParams, from_query, hit_json, query_parameters
from songseek.server.responses import FastJSON
from songseek.server.schemas import BatchIn, BatchOut, ErrorOut, SearchOut
from songseek.server.state import Snapshot

ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 503)}
router = APIRouter(prefix="/api", responses=ERRORS)
# The search options are parsed by from_query and declared here (see SearchParams). The routes return
# FastJSON with the dicts they build: `response_model` only documents them; FastAPI would otherwise
# validate every hit through the pydantic models again on each request.
PARAMS_DOC: dict[str, object] = {"parameters": query_parameters(SearchParams)}
BATCH_DOC: dict[str, object] = {**PARAMS_DOC, "requestBody": {
    "required": True, "content": {"application/json": {"schema": BatchIn.model_json_schema()}}}}


def _out(snap: Snapshot, hits: list[Hit]) -> dict[str, object]:
    return {"generation": snap.generation, "random_weights": snap.random_weights,
            "hits": [hit_json(h) for h in hits]}


def _check_text(text: str, ctx: Context) -> None:
    check_query_text(text)
    if len(text) > ctx.limits.max_query_chars:
        raise QueryError(f"the text query is {len(text):,} characters; this server takes at most "
                         f"{ctx.limits.max_query_chars:,}")


def _timed(body: dict[str, object], engine_s: float) -> FastJSON:
    """Server-Timing: how long the engine took inside the worker (`bench serve` subtracts it)."""
    return FastJSON(body, headers={"Server-Timing": f"engine;dur={engine_s * 1000:.3f}"})


@router.get("/search", response_model=SearchOut, openapi_extra=PARAMS_DOC)
async def search_text(request: Request, q: str = Query(..., description="What the music sounds like.")
                      ) -> FastJSON:
    """Hits for a text query, in the order and with the segments `songseek search TEXT --json` gives."""
    ctx = ctx_of(request)
    params = from_query(request, SearchParams).checked(ctx.limits)
    _check_text(q, ctx)

    def work() -> tuple[dict[str, object], float]:
        snap = ctx.holder.current()
        opts = params.options(snap.library)
        t0 = time.perf_counter()
        hits = snap.library.search(q, options=opts)
        return _out(snap, params.finish(hits)), time.perf_counter() - t0

    return _timed(*await ctx.pool.run(work))


@router.post("/search/batch", response_model=BatchOut, openapi_extra=BATCH_DOC)
async def search_batch(request: Request) -> FastJSON:
    """One list of hits per text or per vector, in input order (`songseek search --query-file/--query-vectors`)."""
    ctx = ctx_of(request)
    params = from_query(request, SearchParams).checked(ctx.limits)
    try:  # one pydantic call on the raw bytes (the body is declared in BATCH_DOC)
        body = BatchIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    if (body.texts is None) == (body.vectors is None):
        raise QueryError("give exactly one of texts or vectors")
    n = len(body.texts if body.texts is not None else body.vectors or [])
    if not 1 <= n <= ctx.limits.max_batch:
        raise QueryError(f"a batch holds 1 to {ctx.limits.max_batch} queries (got {n})")
    for t in body.texts or []:
        _check_text(t, ctx)
    vectors = None
    if body.vectors is not None:
        if len({len(v) for v in body.vectors}) != 1:
            raise QueryError("every vector in a batch must have the same length")
        vectors = np.asarray(body.vectors, dtype=np.float32)

    def work() -> tuple[dict[str, object], float]:
        snap = ctx.holder.current()
        opts = params.options(snap.library)
        t0 = time.perf_counter()
        if vectors is not None:
            results = snap.library.search_vectors(vectors, opts)
        else:
            results = snap.library.search_texts(list(body.texts or []), opts)
        engine_s = time.perf_counter() - t0
        return ({"generation": snap.generation, "random_weights": snap.random_weights,
                 "results": [[hit_json(h) for h in params.finish(hits)] for hits in results]}, engine_s)

    return _timed(*await ctx.pool.run(work))


@router.post("/search/audio", response_model=SearchOut, openapi_extra=PARAMS_DOC)
async def search_audio(request: Request,
                       file: UploadFile = File(..., description="An audio clip (any format songseek decodes)."),
                       start: float = Form(0.0, description="Start of the excerpt (s)."),
                       end: float | None = Form(None, description="End of the excerpt (s).")) -> FastJSON:
    """Query by example: an uploaded clip, or ``[start, end)`` of it. Bounded in bytes and decoded seconds."""
    ctx = ctx_of(request)
    params = from_query(request, SearchParams).checked(ctx.limits)
    limit_s = ctx.limits.max_clip_s
    if not (0 <= start < 1e7) or (end is not None and not start < end < 1e7):
        raise QueryError(f"bad excerpt start={start}, end={end}: need 0 <= start < end")
    if end is not None and end - start > limit_s:
        raise TooLarge(f"the excerpt is {end - start:g} s; this server searches clips of at most {limit_s:g} s")
    path = await _save_upload(file, ctx.limits.max_upload_bytes)

    def work() -> dict[str, object]:
        try:
            snap = ctx.holder.current()
            sr = snap.library.encoder.info.sample_rate
            stop = end if end is not None else start + limit_s + 1.0  # never decode more than the limit allows
            try:
                audio = decode(path, sr, start, stop)
            except (DecodeError, UsageError) as exc:  # name the client's file, not the server's temporary copy
                name = f"the upload {file.filename or ''}".strip()
                raise type(exc)(str(exc).replace(str(path), name)) from None
            if len(audio) > limit_s * sr + 1:
                raise TooLarge(f"the clip is longer than {limit_s:g} s: give start and end (at most "
                               f"{limit_s:g} s apart)")
            opts = params.options(snap.library)
            hits = snap.library.search(audio=audio, max_excerpt_s=limit_s, options=opts)
            return _out(snap, params.finish(hits))
        finally:
            path.unlink(missing_ok=True)

    try:
        return FastJSON(await ctx.pool.run(work))
    finally:  # work never ran when the pool was full (503) or the client went away: the upload goes anyway
        path.unlink(missing_ok=True)


async def _save_upload(file: UploadFile, limit: int) -> Path:
    """The upload in a private temporary file, refused (413) as soon as it passes ``limit`` bytes."""
    suffix = Path(file.filename or "clip").suffix[:12]  # the client's: a NUL in it made mkstemp raise (a 500)
    if not (suffix[1:].isascii() and suffix[1:].isalnum()):
        suffix = ""
    fd, name = tempfile.mkstemp(prefix="songseek-clip-", suffix=suffix)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the upload is larger than {limit / 2**20:g} MiB; send a shorter clip")
                out.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    if size == 0:
        os.unlink(name)
        raise QueryError("the uploaded file is empty")
    return Path(name)


@router.get("/similar/{track_id}", response_model=SearchOut, openapi_extra=PARAMS_DOC)
async def similar(request: Request, track_id: str,
                  start: float | None = Query(None, description="Only windows from here (s)."),
                  end: float | None = Query(None, description="Only windows up to here (s).")) -> FastJSON:
    """More like this: the mean of the track's stored window vectors (or those overlapping [start, end])
    as the query; the track itself is left out."""
    ctx = ctx_of(request)
    params = from_query(request, SearchParams).checked(ctx.limits)

    def work() -> dict[str, object]:
        snap = ctx.holder.current()
        q = track_vector(snap, track_id, start, end)
        opts = params.options(snap.library, k=params.k + 1)
        hits = snap.library.search(vector=q, options=opts)
        return _out(snap, params.finish(hits, exclude=track_id))

    return FastJSON(await ctx.pool.run(work))


def track_vector(snap: Snapshot, track_id: str, start: float | None, end: float | None) -> np.ndarray:
    """Unit mean of the stored window vectors of ``track_id`` that overlap [start, end] (float32 (dim,))."""
    row = snap.row_of.get(track_id)
    if row is None:
        raise NotFound(f"no track {track_id!r} in this library")
    if start is not None and end is not None and end <= start:  # as /api/search/audio refuses a reversed excerpt
        raise QueryError(f"end ({end} s) must be after start ({start} s)")
    lib = snap.library
    first, count = int(snap.column("frame_start", row) or 0), int(snap.column("frame_count", row) or 0)
    if count == 0:
        raise QueryError(f"track {track_id!r} has no windows")
    vecs = lib.store.vectors(first, count)
    starts, ends = lib.store.start_s[first:first + count], lib.store.end_s[first:first + count]
    keep = np.ones(count, bool)
    if start is not None:
        keep &= ends > start
    if end is not None:
        keep &= starts < end
    if not keep.any():
        raise QueryError(f"no window of track {track_id!r} overlaps [{start}, {end}] s")
    return l2_normalize(np.asarray(vecs[keep], dtype=np.float32).mean(axis=0, keepdims=True))[0]
