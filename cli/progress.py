"""The CLI's progress bar (rich), implementing engine.progress.Progress."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RichProgress:
    """Files done / total, windows, audio hours and windows per second, on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Progress | None = None
        self._task = 0
        self._total: int | None = None  # files to embed, once the scan has planned them
        self._files = 0
        self._windows = 0
        self._audio_s = 0.0
        self._t0 = time.perf_counter()

    def start(self, total_files: int, description: str = "") -> None:
        self._total = total_files
        if not self.enabled or total_files == 0:
            return
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(description or "files", total=total_files, stats="")

    def advance(self, files: int = 0, windows: int = 0, audio_s: float = 0.0) -> None:
        self._files += files
        self._windows += windows
        self._audio_s += audio_s
        if self._bar is None:
            return
        rate = self._windows / max(time.perf_counter() - self._t0, 1e-9)
        stats = f"{self._windows} windows, {self._audio_s / 3600:.2f} h audio, {rate:.1f} windows/s"
        self._bar.update(self._task, advance=files, stats=stats)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def interrupt_summary(self) -> str:
        """How far an interrupted run got: the indexer commits every file it finished (embedded or recorded as
        failed) before it lets a KeyboardInterrupt through, so each file counted here is in the library."""
        if self._total is None:
            return "before any file was embedded; run the same command to start again"
        return f"{self._files} of {self._total} files committed; run the same command to resume"
