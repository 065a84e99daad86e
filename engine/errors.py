"""One exception hierarchy for the whole library; the CLI turns these into one line and an exit code."""

from __future__ import annotations


class SongseekError(Exception):
    """Base class of every error songseek raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(SongseekError):
    """Bad arguments or bad input given by the user (exit code 2)."""

    exit_code = 2


class MissingDependencyError(SongseekError):
    """An optional package is not installed; the message names the extra to install."""

    exit_code = 2


class WeightsNotFoundError(SongseekError):
    """Model weights cannot be found or loaded; the message says what to supply."""

    exit_code = 2


class LibraryError(SongseekError):
    """A library directory is missing, damaged, locked or incompatible."""

    exit_code = 2


class IncompatibleLibraryError(LibraryError):
    """The library was built with another encoder, dimension or schema."""


class LibraryLockedError(LibraryError):
    """Another process is writing to this library."""


class DecodeError(SongseekError):
    """An audio file could not be decoded (corrupt, empty, unsupported)."""


class QueryError(UsageError):
    """A query is malformed: empty text, bad k, bad filter predicate."""


class FilterLimitError(QueryError):
    """A ``where`` predicate ran past one of its limits and was stopped. ``limit`` names the FilterLimits
    field it hit (``timeout_s`` or ``memory_mb``), ``value`` that field's value, so that a caller with its
    own wording for the bound (an HTTP server) can say it its way."""

    def __init__(self, message: str, limit: str, value: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


def require(module: str, extra: str) -> object:
    """Import an optional module or raise MissingDependencyError naming the pip extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'songseek[{extra}]' ({exc})"
        ) from exc
