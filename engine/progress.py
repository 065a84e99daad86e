"""One progress abstraction: the API is silent unless given one; the CLI passes a rich progress bar."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total_files: int, description: str = "") -> None: ...

    def advance(self, files: int = 0, windows: int = 0, audio_s: float = 0.0) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Reports nothing (library default)."""

    def start(self, total_files: int, description: str = "") -> None:
        pass

    def advance(self, files: int = 0, windows: int = 0, audio_s: float = 0.0) -> None:
        pass

    def close(self) -> None:
        pass
