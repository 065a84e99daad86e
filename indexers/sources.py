"""Find audio files under the folders a user names; never follow directory symlinks (no loops)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from songseek.engine.audio import AUDIO_EXTENSIONS
from songseek.engine.errors import UsageError


@dataclass(frozen=True)
class SourceFile:
    path: Path
    size: int
    mtime: float
    ctime: float = 0.0  # inode change time: moves with chmod too, so a fixed permission is retried


@dataclass(frozen=True)
class ScanResult:
    files: list[SourceFile]
    # paths that could not be listed or stat'ed (or named: not UTF-8), with "ErrorClass: reason"
    unreadable: list[tuple[Path, str]]
    roots: tuple[Path, ...] = ()  # the absolute source folders/files, as given


def display_path(path: Path) -> str:
    """``str(path)``, with bytes that are not UTF-8 shown as ``\\xNN`` escapes (storable in Arrow)."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_sources(sources: list[Path], library: Path | None = None) -> list[Path]:
    """Refuse, before any model loads or anything is written, a source that does not exist, and a run
    whose named sources are all files of a format songseek does not read. Returns the named files that
    are not audio, which the run skips: a shell glob such as ``~/Music/*`` also names cover.jpg and
    playlists, and that should index the music, not fail (a folder's other files are skipped too).

    With ``library`` and no library there yet, a run whose folders hold no audio file at all is refused
    too: it would only create an empty library. An existing library is left to the run, which keeps the
    tracks of a folder that looks unmounted and says so."""
    skipped: list[Path] = []
    usable = False
    for src in sources:
        path = Path(os.path.realpath(src.expanduser()))  # as scan() sees it: a symlink by its target's name
        if not path.exists():
            raise UsageError(f"{path} does not exist: give folders or audio files to index")
        if path.is_dir():
            usable = True
            continue
        if not path.is_file():
            raise UsageError(f"{path} is not a regular file or a folder: give folders or audio files to index")
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            usable = True
        else:
            skipped.append(path)
    if skipped and not usable:
        named = skipped[0] if len(skipped) == 1 else f"{skipped[0]} (and {len(skipped) - 1} more named files)"
        raise UsageError(f"{named} is not an audio format songseek reads "
                         f"({' '.join(sorted(AUDIO_EXTENSIONS))}): give audio files or folders")
    if library is not None and not (Path(library).expanduser() / "manifest.json").exists():
        _require_audio(sources)
    return skipped


def _require_audio(sources: list[Path]) -> None:
    """Raise UsageError when no audio file is under ``sources``. Stops at the first audio file found, so
    a real music folder costs one partial walk; a folder that cannot be listed is left to the run, which
    records it as a failure."""
    others: list[Path] = []
    unlisted = False

    def onerror(_err: OSError) -> None:
        nonlocal unlisted
        unlisted = True

    for src in sources:
        path = Path(os.path.realpath(src.expanduser()))
        if path.is_file():
            if path.suffix.lower() in AUDIO_EXTENSIONS:
                return
            others.append(path)
            continue
        for dirpath, _dirs, names in os.walk(path, onerror=onerror, followlinks=False):
            for name in names:
                if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                    return
                others.append(Path(dirpath) / name)
    if unlisted:
        return
    where = ", ".join(display_path(s) for s in sources)
    skipped = ""
    if others:
        shown = ", ".join(display_path(Path(p.name)) for p in sorted(others)[:5])
        more = ", ..." if len(others) > 5 else ""
        skipped = f" ({len(others)} other file{'s' if len(others) != 1 else ''} skipped: {shown}{more})"
    raise UsageError(f"no audio files under {where}{skipped}; songseek reads {' '.join(sorted(AUDIO_EXTENSIONS))}")


def _stat_failure(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be stat'ed; a link that cannot be followed (dangling, or a loop) says so and
    what to do: ``ls`` lists it, so "No such file or directory" alone reads as nonsense."""
    try:
        target = os.readlink(path)
    except OSError:
        return str(exc.strerror)
    return (f"{exc.strerror}: a symbolic link to {display_path(Path(target))} that cannot be followed; "
            "fix or remove the link")


def scan(sources: list[Path]) -> ScanResult:
    """All audio files (by extension) under the given folders or files, sorted by path, deduplicated."""
    found: dict[Path, SourceFile] = {}
    unreadable: list[tuple[Path, str]] = []
    roots: list[Path] = []
    for src in sources:
        src = Path(os.path.realpath(src.expanduser()))  # one spelling per file: no `..`, no symlinked alias
        if not src.exists():
            raise UsageError(f"{src} does not exist: give folders or audio files to index")
        roots.append(src)
        candidates: list[Path]
        if src.is_file():
            candidates = [src]
        else:
            candidates = []

            def onerror(err: OSError, src: Path = src) -> None:
                unreadable.append((Path(err.filename or src), f"{type(err).__name__}: {err.strerror}"))

            for dirpath, _dirs, names in os.walk(src, onerror=onerror, followlinks=False):
                candidates += [Path(dirpath) / n for n in names]
        for path in candidates:
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            if display_path(path) != str(path):
                unreadable.append((path, "UnicodeError: the file name is not valid UTF-8; rename the file"))
                continue
            try:
                st = path.stat()
            except OSError as exc:
                unreadable.append((path, f"{type(exc).__name__}: {_stat_failure(path, exc)}"))
                continue
            if os.path.isfile(path):
                found[path] = SourceFile(path, st.st_size, st.st_mtime, st.st_ctime)
    return ScanResult(sorted(found.values(), key=lambda f: str(f.path)), unreadable, tuple(roots))
