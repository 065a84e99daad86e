"""songseek: search music libraries by text or audio, down to the segment inside each track.

    from songseek import Library
    lib = Library.open("lib")
    hits = lib.search("dreamy ambient pad", k=10)      # also audio="clip.mp3", vector=..., where="..."
    hits[0].path, hits[0].score, hits[0].segment.start_s, hits[0].segment.end_s

Heavy modules load on first use, so `import songseek` stays cheap. The names below are the public API
(docs/api.md); everything else under songseek.* is internal and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from songseek.engine.version import __version__

_ERRORS = "songseek.engine.errors"
_EXPORTS = {
    "Library": "songseek.engine.query.search",
    "Hit": "songseek.engine.query.search",
    "Segment": "songseek.engine.query.search",
    "SearchOptions": "songseek.engine.query.search",
    "FilterLimits": "songseek.engine.query.filters",
    "FusionParams": "songseek.engine.query.fusion",
    "load_encoder": "songseek.engine.encoders",
    "index_paths": "songseek.indexers.pipeline",
    "IndexConfig": "songseek.indexers.pipeline",
    "IndexReport": "songseek.indexers.pipeline",
    # the exceptions a caller may want to tell apart (all are SongseekError)
    "SongseekError": _ERRORS,
    "UsageError": _ERRORS,
    "QueryError": _ERRORS,
    "FilterLimitError": _ERRORS,
    "LibraryError": _ERRORS,
    "IncompatibleLibraryError": _ERRORS,
    "LibraryLockedError": _ERRORS,
    "WeightsNotFoundError": _ERRORS,
    "MissingDependencyError": _ERRORS,
    "DecodeError": _ERRORS,
}

# Spelled out (not built from _EXPORTS) so that linters see the TYPE_CHECKING imports below as re-exports.
__all__ = [
    "__version__", "Library", "Hit", "Segment", "SearchOptions", "FilterLimits", "FusionParams", "load_encoder",
    "index_paths", "IndexConfig", "IndexReport", "SongseekError", "UsageError", "QueryError", "FilterLimitError",
    "LibraryError", "IncompatibleLibraryError", "LibraryLockedError", "WeightsNotFoundError", "MissingDependencyError",
    "DecodeError",
]

if TYPE_CHECKING:  # type checkers see the real names; at run time __getattr__ imports them on first use
    from songseek.engine.encoders import load_encoder
    from songseek.engine.errors import (
        DecodeError,
        FilterLimitError,
        IncompatibleLibraryError,
        LibraryError,
        LibraryLockedError,
        MissingDependencyError,
        QueryError,
        SongseekError,
        UsageError,
        WeightsNotFoundError,
    )
    from songseek.engine.query.filters import FilterLimits
    from songseek.engine.query.fusion import FusionParams
    from songseek.engine.query.search import Hit, Library, SearchOptions, Segment
    from songseek.indexers.pipeline import IndexConfig, IndexReport, index_paths


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'songseek' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
