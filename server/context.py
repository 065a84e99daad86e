"""What every route shares: the library holder, the bounded pool, the limits, the caches."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from songseek.server.config import Limits, ServerConfig
from songseek.server.peaks import PeaksCache
from songseek.server.pool import BoundedPool
from songseek.server.state import LibraryHolder
from songseek.server.transcode import Transcoder


@dataclass
class Context:
    config: ServerConfig
    holder: LibraryHolder
    pool: BoundedPool
    transcoder: Transcoder
    peaks: PeaksCache

    @property
    def limits(self) -> Limits:
        return self.config.limits


def ctx_of(request: Request) -> Context:
    """The app's Context (read from the request, not through a FastAPI dependency: one less step a request)."""
    ctx: Context = request.app.state.ctx
    return ctx
