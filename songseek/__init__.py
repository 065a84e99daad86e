"""songseek: search music libraries by text or audio, down to the minute inside each track."""

from __future__ import annotations

__version__ = "0.1.0"
