"""A bound on every request body, met before a route reads it.

FastAPI reads a JSON body whole and spools a multipart upload to disk in full before the route sees it, so
a route's own checks come too late to spare the server's memory or disk. This middleware refuses (413) a
body whose Content-Length is past the bound without reading it, and stops a body sent without one
(chunked) as soon as it passes the bound.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from songseek.server.errors import error_response


class BodyLimit:
    """ASGI middleware: ``limit_for(path)`` is the largest body, in bytes, a request to ``path`` may send."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        message = f"the request body is larger than this server's {limit / 2**20:g} MiB for {scope['path']}"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(413, message)(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:  # an HTTPException passes FastAPI's body parsing unchanged
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, bounded, send)
