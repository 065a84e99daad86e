"""/api/health, /api/facets (what the page's filters offer), /api/tracks/{track_id} (metadata, windows
and, for a query, the per-window timeline the page draws) and /api/tracks/{track_id}/peaks (its waveform)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Query, Request

from songseek.engine.analysis.tagging import TAG_PREFIX
from songseek.engine.encoders.base import l2_normalize
from songseek.engine.errors import QueryError
from songseek.engine.query import longtext
from songseek.engine.query.kind import Kind
from songseek.engine.query.search import check_query_text
from songseek.server.context import ctx_of
from songseek.server.errors import NotFound
from songseek.server.query import SearchParams, from_query, query_parameters, track_audio_url
from songseek.server.responses import FastJSON
from songseek.server.schemas import ErrorOut, FacetsOut, HealthOut, PeaksOut, TrackOut
from songseek.server.search_routes import track_vector
from songseek.server.state import Snapshot

router = APIRouter(prefix="/api", responses={c: {"model": ErrorOut} for c in (400, 401, 404, 422, 503)})
PEAKS_ERRORS: dict[int | str, dict[str, object]] = {413: {"model": ErrorOut}}
FACET_LIMIT = 500


@router.get("/health", response_model=HealthOut)
@router.head("/health", include_in_schema=False)  # load balancers and uptime checks probe with HEAD
async def health(request: Request) -> dict[str, object]:
    """Library generation, tracks, frames, encoder, random weights, and how busy the server is."""
    ctx = ctx_of(request)
    snap = await ctx.pool.run(ctx.holder.current)
    lib, m = snap.library, snap.library.manifest
    frames = int(np.sum(lib.tracks.column("frame_count").to_numpy())) if lib.n_tracks else 0
    return {"status": "ok", "generation": snap.generation, "tracks": lib.n_tracks, "frames": frames,
            "encoder": m.encoder.name, "checkpoint": m.encoder.checkpoint, "random_weights": snap.random_weights,
            "dim": m.dim, "window_s": m.window_s, "hop_s": m.hop_s, "inflight": ctx.pool.inflight,
            "capacity": ctx.pool.capacity, "warnings": list(snap.warnings),
            "reload_error": ctx.holder.last_reload_error}


@router.get("/facets", response_model=FacetsOut)
async def facets(request: Request) -> dict[str, object]:
    """Values the filters can take: the most common artists, albums and genres, the year range, tag labels."""
    ctx = ctx_of(request)

    def work() -> dict[str, object]:
        snap = ctx.holder.current()
        tracks = snap.library.tracks
        out: dict[str, object] = {}
        for name in ("artist", "album", "genre"):
            values = tracks.column(name).to_pylist() if name in tracks.column_names else []
            counts: dict[str, int] = {}
            for v in values:
                if v:
                    counts[v] = counts.get(v, 0) + 1
            out[name + "s"] = sorted(sorted(counts, key=lambda v: -counts[v])[:FACET_LIMIT])
        years = [y for y in tracks.column("year").to_pylist() if y] if "year" in tracks.column_names else []
        out["year_min"], out["year_max"] = (min(years), max(years)) if years else (None, None)
        tags = snap.library.extra_tables.get("tags")
        out["tags"] = sorted(c[len(TAG_PREFIX):] for c in (tags.column_names if tags is not None else [])
                             if c.startswith(TAG_PREFIX))
        return out

    return await ctx.pool.run(work)


@router.get("/tracks/{track_id}", response_model=TrackOut,
            openapi_extra={"parameters": query_parameters(SearchParams)})
async def track(request: Request, track_id: str,
                q: str | None = Query(None, description="A text query: adds its per-window timeline."),
                like: str | None = Query(None, description="A track id: the timeline of more-like-this from it.")
                ) -> FastJSON:
    """Metadata and windows of one track; with ``q`` or ``like``, similarity and attention per window and the
    best segment, computed as search computes them (same fusion parameters)."""
    ctx = ctx_of(request)
    params = from_query(request, SearchParams).checked(ctx.limits)
    if q is not None and len(q) > ctx.limits.max_query_chars:
        raise QueryError(f"q is longer than {ctx.limits.max_query_chars} characters")

    def work() -> dict[str, object]:
        snap = ctx.holder.current()
        row = snap.row_of.get(track_id)
        if row is None:
            raise NotFound(f"no track {track_id!r} in this library")
        out = _details(snap, track_id, row)
        if q is not None or like is not None:
            if q is not None:  # embedded as search embeds it: one vector, or a long text's sentence chunks
                check_query_text(q)
                text = longtext.embed_chunked(snap.library.encoder, [q.strip()])[0]
                out["timeline"] = _timeline(snap, row, text.vectors, params, text.kind)
            else:
                out["timeline"] = _timeline(snap, row, track_vector(snap, str(like), None, None), params, None)
        return out

    return FastJSON(await ctx.pool.run(work))


@router.get("/tracks/{track_id}/peaks", response_model=PeaksOut, responses=PEAKS_ERRORS)
async def peaks(request: Request, track_id: str,
                n: int = Query(800, ge=1, description="Bins (at most the server's max_peaks, 4,000 by default).")
                ) -> FastJSON:
    """Min and max of the decoded audio in ``n`` bins, for drawing the waveform. Computed on the server by a
    streamed decode (memory flat in track length), once per track and generation, then cached."""
    ctx = ctx_of(request)
    if n > ctx.limits.max_peaks:
        raise QueryError(f"n must be between 1 and {ctx.limits.max_peaks} (got {n})")
    return FastJSON(await ctx.pool.run(lambda: ctx.peaks.get(ctx.holder.current(), track_id, n)))


def _details(snap: Snapshot, track_id: str, row: int) -> dict[str, object]:
    lib = snap.library
    first, count = int(snap.column("frame_start", row) or 0), int(snap.column("frame_count", row) or 0)
    windows = [{"start_s": float(a), "end_s": float(b)}
               for a, b in zip(lib.store.start_s[first:first + count], lib.store.end_s[first:first + count])]
    tags: dict[str, float] = {}
    table = lib.extra_tables.get("tags")
    if table is not None and "track_id" in table.column_names:
        ids = table.column("track_id").to_pylist()
        if track_id in ids:
            i = ids.index(track_id)
            for c in table.column_names:
                value = table.column(c)[i].as_py() if c.startswith(TAG_PREFIX) else None
                if isinstance(value, (int, float)):
                    tags[c[len(TAG_PREFIX):]] = float(value)
    year = snap.column("year", row)
    return {"track_id": track_id, "path": str(snap.column("path", row)), "title": snap.column("title", row),
            "artist": snap.column("artist", row), "album": snap.column("album", row),
            "genre": snap.column("genre", row), "year": int(year) if isinstance(year, int) else None,
            "duration_s": float(snap.column("duration_s", row) or 0.0), "audio_url": track_audio_url(track_id),
            "windows": windows, "tags": tags}


def _timeline(snap: Snapshot, row: int, q: np.ndarray, params: SearchParams, kind: Kind) -> dict[str, object]:
    """Per window the cosine with the query (a long text: the mean of its chunk vectors) and the attention;
    the segment and score as search gives them (Library.track_hit: the same candidates and rerank)."""
    lib = snap.library
    first, count = int(snap.column("frame_start", row) or 0), int(snap.column("frame_count", row) or 0)
    vec = l2_normalize(np.atleast_2d(q).mean(axis=0, keepdims=True))[0]
    sims = np.asarray(lib.store.vectors(first, count) @ vec, dtype=np.float32)
    opts = params.options(lib)
    hit = lib.track_hit(q, row, opts, kind)
    z = sims.astype(np.float64) / (opts.fusion or lib.rerank_settings().params).temperature
    att = np.exp(z - z.max())
    att /= att.sum()
    return {"similarity": sims.tolist(), "attention": att.tolist(),
            "segment": {"start_s": hit.segment.start_s, "end_s": hit.segment.end_s}, "score": hit.score}
