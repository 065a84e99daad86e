"""The app factory: routes, static page, error handlers, token check, CORS only when asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from songseek.server import audio, errors, search_routes, track_routes
from songseek.server.auth import TokenMiddleware
from songseek.server.body_limit import BodyLimit
from songseek.server.config import ServerConfig
from songseek.server.context import Context
from songseek.server.guard import Guard
from songseek.server.peaks import PeaksCache
from songseek.server.pool import BoundedPool
from songseek.server.state import LibraryHolder
from songseek.server.transcode import Transcoder

STATIC = Path(__file__).resolve().parent / "static"


def create_app(config: ServerConfig, holder: LibraryHolder | None = None) -> FastAPI:
    """An ASGI app serving ``config.library``; opens it now (and loads its query encoder) unless ``holder``
    is given."""
    holder = holder or LibraryHolder(config.library, config.device, filter_limits=config.limits.filter_limits(),
                                     persist_text_cache=config.cache_texts)
    pool = BoundedPool(config.limits.workers, config.limits.queue)
    ctx = Context(config, holder, pool, Transcoder(config.transcode_dir),
                  PeaksCache(config.limits.max_peaks_s))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    from songseek import __version__

    app = FastAPI(title="songseek", version=__version__, lifespan=lifespan,
                  description="Search a music library by text, clip or track, down to the matching segment.")
    app.state.ctx = ctx
    errors.install(app, config.limits.retry_after_s)
    app.include_router(search_routes.router)
    app.include_router(track_routes.router)
    app.include_router(audio.router)
    static = config.static_dir or STATIC

    @app.get("/", include_in_schema=False)
    @app.head("/", include_in_schema=False)  # uptime checks probe the page with HEAD (405 before)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html")

    # StaticFiles refuses paths that resolve outside its folder (../, encoded ../, symlinks out of it).
    app.mount("/static", StaticFiles(directory=static, follow_symlink=False), name="static")
    app.add_middleware(BodyLimit, limit_for=config.limits.body_limit)
    if config.token is not None:
        app.add_middleware(TokenMiddleware, token=config.token)
    app.add_middleware(Guard, loopback_only=config.token is None)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app
