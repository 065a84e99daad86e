"""/api/audio/{track_id}: a library track's file, by id only, with HTTP Range (206) so the browser can seek.

The client never names a path: the id is looked up in the library's tracks table, and only that file is
served. Files in a format the browser cannot play (AIFF, WMA, ALAC, ...) are transcoded once with PyAV to
16-bit PCM WAV (transcode.py) and served from the copy, with Range as well.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from songseek.server.context import Context, ctx_of
from songseek.server.errors import NotFound, error_response
from songseek.server.schemas import ErrorOut
from songseek.server.transcode import copy_validators

router = APIRouter(prefix="/api", responses={c: {"model": ErrorOut} for c in (401, 404, 416, 503)})

MAX_RANGES = 100  # more parts than this: the header is ignored and the whole file is sent
_RANGE_SPEC = re.compile(r"\s*([0-9]{0,19})\s*-\s*([0-9]{0,19})\s*")  # 19 digits: past any file size


def byte_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a ``Range`` header as inclusive (first, last) byte offsets (RFC 9110 §14).

    None: ignore the header and send the whole file (another unit, a malformed or reversed range, too many
    parts); an empty list: nothing in it is satisfiable (416)."""
    unit, eq, spec = header.partition("=")
    parts = spec.split(",")
    if not eq or unit.strip().lower() != "bytes" or len(parts) > MAX_RANGES:
        return None
    out: list[tuple[int, int]] = []
    if not any(part.strip(" \t") for part in parts):
        return None
    for part in parts:
        if not part.strip(" \t"):  # RFC 9110 §5.6.1: a recipient accepts (and skips) empty list elements
            continue
        m = _RANGE_SPEC.fullmatch(part)
        if m is None or not (m[1] or m[2]) or (m[1] and m[2] and int(m[2]) < int(m[1])):
            return None
        if not m[1]:  # "-N": the last N bytes
            if int(m[2]) > 0 and size > 0:
                out.append((max(size - int(m[2]), 0), size - 1))
        elif int(m[1]) < size:
            out.append((int(m[1]), min(int(m[2]), size - 1) if m[2] else size - 1))
    return out


class AudioFile(FileResponse):
    """FileResponse (sized by the stat taken in the worker) whose Range handling follows RFC 9110: a
    malformed header is ignored (200, the whole file), the unsatisfiable parts of a list are dropped, and
    a list with nothing satisfiable is a JSON 416 with ``Content-Range: bytes */SIZE``. Starlette's own
    answers 400 in plain text to the first and 416 to the second."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = self.stat_result.st_size if self.stat_result is not None else 0
        header = Headers(scope=scope).get("range", "")
        kept = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
        ranges = byte_ranges(header, size) if header else None
        if ranges == []:
            await error_response(416, f"Range {header[:100]!r} is outside the file ({size:,} bytes)",
                                 {"Content-Range": f"bytes */{size}"})(scope, receive, send)
            return
        if ranges:
            kept.append((b"range", ("bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)).encode()))
        await super().__call__({**scope, "headers": kept}, receive, send)


@router.get("/audio/{track_id}", response_class=FileResponse,
            responses={200: {"content": {"audio/*": {}}}, 206: {"description": "Partial content (Range)."}})
@router.head("/audio/{track_id}", include_in_schema=False)  # RFC 9110: GET implies HEAD (players probe with it)
async def audio(request: Request, track_id: str) -> FileResponse:
    """The track's audio; send ``Range: bytes=a-b`` for part of it (206)."""
    ctx = ctx_of(request)
    served, media_type, st, validators = await ctx.pool.run(lambda: _locate(ctx, track_id))
    return AudioFile(served, media_type=media_type, stat_result=st,
                     headers={"Cache-Control": "private, max-age=3600", **validators})


def _locate(ctx: Context, track_id: str) -> tuple[Path, str, os.stat_result, dict[str, str]]:
    """The file to send for ``track_id`` (the library's own, or its WAV copy), its content type and stat, and
    for a copy the ETag and Last-Modified of its source (transcode.copy_validators)."""
    snap = ctx.holder.current()
    row = snap.row_of.get(track_id)
    if row is None:
        raise NotFound(f"no track {track_id!r} in this library")
    path = Path(str(snap.column("path", row)))
    gone = NotFound(f"the file of track {track_id!r} is gone from disk ({path.name}); "
                    "re-run `songseek index` to update the library")
    if not path.is_file():
        raise gone
    try:  # the file (or its copy) may go between these steps while the library is re-indexed
        served, media_type = ctx.transcoder.playable(path)
        st = served.stat()
        return served, media_type, st, {} if served == path else copy_validators(path.stat(), served, st)
    except FileNotFoundError:
        raise gone from None
