"""/api/audio/{track_id}: a library track's file, by id only, with HTTP Range (206) so the browser can seek.

The client never names a path: the id is looked up in the library's tracks table, and only that file is
served. Files in a format the browser cannot play (AIFF, WMA, ALAC, ...) are transcoded once with PyAV to
16-bit PCM WAV (transcode.py) and served from the copy, with Range as well.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse

from songseek.server.context import Context, ctx_of
from songseek.server.errors import NotFound
from songseek.server.schemas import ErrorOut

router = APIRouter(prefix="/api", responses={c: {"model": ErrorOut} for c in (401, 404, 503)})

@router.get("/audio/{track_id}", response_class=FileResponse,
            responses={200: {"content": {"audio/*": {}}}, 206: {"description": "Partial content (Range)."}})
async def audio(request: Request, track_id: str) -> FileResponse:
    """The track's audio; send ``Range: bytes=a-b`` for part of it (206)."""
    ctx = ctx_of(request)
    served, media_type = await ctx.pool.run(lambda: _locate(ctx, track_id))
    return FileResponse(served, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


def _locate(ctx: Context, track_id: str) -> tuple[Path, str]:
    """The file to send for ``track_id`` (the library's own, or its WAV copy) and its content type."""
    snap = ctx.holder.current()
    row = snap.row_of.get(track_id)
    if row is None:
        raise NotFound(f"no track {track_id!r} in this library")
    path = Path(str(snap.column("path", row)))
    if not path.is_file():
        raise NotFound(f"the file of track {track_id!r} is gone from disk ({path.name}); "
                       "re-run `songseek index` to update the library")
    return ctx.transcoder.playable(path)
