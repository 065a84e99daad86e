"""songseek errors → HTTP status codes, each answered as ``{"error": "<one line>"}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from songseek.engine.errors import (
    DecodeError,
    FilterLimitError,
    LibraryError,
    MissingDependencyError,
    SongseekError,
    UsageError,
    WeightsNotFoundError,
)
from songseek.server.pool import Busy


class NotFound(Exception):
    """A track id (or file) the library does not have."""


class TooLarge(Exception):
    """An upload or clip past the server's limits (413)."""


class Forbidden(Exception):
    """A missing or wrong access token (401)."""


def status_for(exc: SongseekError) -> int:
    if isinstance(exc, (UsageError, DecodeError)) and not isinstance(exc, MissingDependencyError):
        return 400
    if isinstance(exc, (LibraryError, MissingDependencyError, WeightsNotFoundError)):
        return 503  # the library or its encoder is unusable right now; nothing the client can fix
    return 500


def where_limit_message(exc: FilterLimitError) -> str:
    """The engine names its Python parameter (FilterLimits.timeout_s); a client knows the `where` parameter."""
    if exc.limit == "timeout_s":
        return (f"where: the filter ran past this server's limit of {exc.value:g} s and was stopped; narrow the "
                "where predicate down (or the artist/album/genre/year/tag filters)")
    # stopped while running, or refused before it ran (its values alone would pass the bound): one wording
    return (f"where: the filter needs more memory than this server's {exc.value:g} MB allows; narrow the where "
            "predicate down (or the artist/album/genre/year/tag filters)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status, headers=headers)


def install(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(SongseekError)
    async def _songseek(_: Request, exc: SongseekError) -> JSONResponse:
        return error_response(status_for(exc), str(exc))

    @app.exception_handler(FilterLimitError)
    async def _filter_limit(_: Request, exc: FilterLimitError) -> JSONResponse:
        return error_response(400, where_limit_message(exc))

    @app.exception_handler(NotFound)
    async def _missing(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(TooLarge)
    async def _large(_: Request, exc: TooLarge) -> JSONResponse:
        return error_response(413, str(exc))

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return error_response(503, "the server is busy: every worker is taken and the queue is full; retry "
                              f"in {retry_after_s} s", {"Retry-After": str(retry_after_s)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own 404 / 405 / 413 and FastAPI's body errors, in the same {"error": ...} form
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}) or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "body", "path"))
        return error_response(422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # a bug, or a race nothing above names: still one JSON line (Starlette re-raises it to the log)
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details")
