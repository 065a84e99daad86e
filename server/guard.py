"""Headers every answer carries, and the Host check of a server that has no token.

A server without a token listens on loopback only, but a web page the user opens elsewhere could point
its own domain name at 127.0.0.1 (DNS rebinding) and then read the API and the audio as same-origin. A
browser always sends the name it used in Host, so such a server answers only to loopback names.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from songseek.server.config import is_loopback
from songseek.server.errors import error_response

# The page loads nothing from elsewhere and has no inline script: any injected markup stays inert.
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def loopback_name(host: str) -> bool:
    """Whether a Host header (name or address, optional port) names this machine's loopback."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1:name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


class Guard:
    """ASGI middleware: ``nosniff`` on every answer and the page's CSP; with ``loopback_only``, a Host
    that is not a loopback name gets a 400."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        if self.loopback_only and host and not loopback_name(host):
            await error_response(400, f"this server has no access token, so it answers only to localhost or "
                                 f"127.0.0.1, not to Host {host[:100]!r}; give it a token (--token-file) to reach "
                                 "it by another name")(scope, receive, send)
            return
        page = scope["path"] == "/"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                if page:
                    headers.setdefault("content-security-policy", PAGE_CSP)
            await send(message)

        await self.app(scope, receive, with_headers)
