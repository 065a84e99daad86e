"""The access token: asked of every /api request when the server has one (always beyond loopback).

Scripts send ``Authorization: Bearer TOKEN``. A browser opens ``/?token=TOKEN`` once; the server answers
with an HttpOnly, SameSite=Strict cookie and a redirect to ``/`` (the token leaves the address bar), and
the page's fetches and <audio> elements then carry the cookie, so audio plays without the token in its URL.
``?token=`` on an /api URL works too, for players that can only be given a URL.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from songseek.server.errors import error_response

COOKIE = "songseek_token"


class TokenMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, token: str) -> None:
        super().__init__(app)
        self._token = token.encode()

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        query_token = request.query_params.get("token")
        if request.url.path == "/" and query_token is not None:
            if not self._ok(query_token):
                return error_response(401, "wrong access token")
            # the rest of the query (a shared search: q, like, filters) stays; only the token leaves the URL
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse("/?" + rest if rest else "/", status_code=303)
            response.set_cookie(COOKIE, query_token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            return response
        if not request.url.path.startswith(("/api", "/openapi.json", "/docs", "/redoc")):
            return await call_next(request)  # the page and its static files hold no data
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if self._ok(bearer) or self._ok(request.cookies.get(COOKIE)) or self._ok(query_token):
            return await call_next(request)
        return error_response(401, "this server needs its access token: send 'Authorization: Bearer TOKEN', "
                              "or open /?token=TOKEN once in the browser", {"WWW-Authenticate": "Bearer"})
