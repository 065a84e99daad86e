"""songseek: search music libraries by text or audio, down to the segment inside each track.

    from songseek import Library
    lib = Library.open("lib")
    hits = lib.search("dreamy ambient pad", k=10)      # also audio="clip.mp3", vector=..., where="..."
    hits[0].path, hits[0].score, hits[0].segment.start_s, hits[0].segment.end_s

Heavy modules load on first use, so `import songseek` stays cheap.
"""

from __future__ import annotations

from typing import Any

from songseek.engine.version import __version__

_EXPORTS = {
    "Library": "songseek.engine.query.search",
    "Hit": "songseek.engine.query.search",
    "Segment": "songseek.engine.query.search",
    "SearchOptions": "songseek.engine.query.search",
    "FilterLimits": "songseek.engine.query.filters",
    "FusionParams": "songseek.engine.query.fusion",
    "SongseekError": "songseek.engine.errors",
    "load_encoder": "songseek.engine.encoders",
    "index_paths": "songseek.indexers.pipeline",
    "IndexConfig": "songseek.indexers.pipeline",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'songseek' has no attribute {name!r}")
