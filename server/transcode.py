"""Which library files the browser can play as they are, and 16-bit PCM WAV copies (PyAV) of the others,
kept in a bounded cache folder (least recently used removed first)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from email.utils import formatdate
from pathlib import Path
from typing import cast

from songseek.engine.audio.decode import probe
from songseek.engine.errors import DecodeError, UsageError
from songseek.server.errors import NotFound

# (file extension, codec) pairs Chromium and Firefox play natively, and the content type to send.
PLAYABLE: dict[str, tuple[set[str], str]] = {
    ".mp3": ({"mp3", "mp3float"}, "audio/mpeg"),
    ".wav": ({"pcm_s16le", "pcm_u8", "pcm_f32le", "pcm_s24le", "pcm_s32le"}, "audio/wav"),
    ".flac": ({"flac"}, "audio/flac"),
    ".ogg": ({"vorbis", "opus", "flac"}, "audio/ogg"),
    ".oga": ({"vorbis", "opus", "flac"}, "audio/ogg"),
    ".opus": ({"opus"}, "audio/ogg"),
    ".webm": ({"opus", "vorbis"}, "audio/webm"),
    ".m4a": ({"aac", "mp3", "flac", "opus"}, "audio/mp4"),
    ".mp4": ({"aac", "mp3", "flac", "opus"}, "audio/mp4"),
}
CACHE_BYTES = 2 * 1024**3  # transcoded files kept, least recently used removed first
KNOWN_MAX = 100_000  # file versions remembered (served as is, their copy, or why they cannot play)
FAILURE_TTL_S = 60.0  # a file that failed to probe or transcode is answered from memory this long
TMP_MARK = ".tmp-"  # a copy being written is NAME.wav.tmp-PID




class Transcoder:
    """Decides whether a file plays in the browser, and makes a WAV copy of it when it does not."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else Path(tempfile.gettempdir()) / f"songseek-serve-{os.getuid()}"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = self.folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:  # another user could plant or swap copies there
            raise UsageError(f"transcode folder {self.folder} is not yours alone (owner uid {st.st_uid}, mode "
                             f"{st.st_mode & 0o777:o}): remove it, or give the server a private folder")
        self._lock = threading.Lock()  # guards the dicts below and eviction; never held while decoding
        self._making: dict[Path, threading.Lock] = {}  # one lock per copy being made
        # what each file version is (served as is, or its copy), or why it cannot be played and since when:
        # bounded, oldest first out, so a long-running server over a changing library does not grow without end
        self._known: OrderedDict[tuple[str, int, int], tuple[Path, str] | tuple[str, float]] = OrderedDict()
        remove_stale_temporaries(self.folder)

    def playable(self, path: Path) -> tuple[Path, str]:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            known = self._known.get(key)
            if known is not None:
                self._known.move_to_end(key)
        if known is not None and isinstance(known[1], float):
            if time.monotonic() - known[1] < FAILURE_TTL_S:  # failed just now: not decoded again per request
                raise NotFound(str(known[0]))
            known = None
        if known is not None:
            # a copy may have been evicted or cleaned away since: _transcode makes it again (and marks it used)
            served, media_type = cast(tuple[Path, str], known)
            return (served, media_type) if served == path else (self._transcode(path, key), media_type)
        kind = PLAYABLE.get(path.suffix.lower())
        try:
            try:
                codec = probe(path).codec
            except DecodeError as exc:  # the engine names the file by its full path: the client gets its name
                raise NotFound("the file of this track cannot be read now: "
                               f"{str(exc).replace(str(path), path.name)}") from None
            if kind is not None and codec in kind[0]:
                result = (path, kind[1])
            else:
                result = (self._transcode(path, key), "audio/wav")
        except NotFound as exc:
            self._remember(key, (str(exc), time.monotonic()))
            raise
        self._remember(key, result)
        return result

    def _remember(self, key: tuple[str, int, int], what: tuple[Path, str] | tuple[str, float]) -> None:
        with self._lock:
            self._known[key] = what
            while len(self._known) > KNOWN_MAX:
                self._known.popitem(last=False)

    def _transcode(self, path: Path, key: tuple[str, int, int]) -> Path:
        out = self.folder / (hashlib.sha256(repr(key).encode()).hexdigest()[:32] + ".wav")
        try:
            os.utime(out)  # a cache hit: marked used, no lock (eviction may race: then it is made again)
            return out
        except FileNotFoundError:
            pass
        with self._lock:
            making = self._making.setdefault(out, threading.Lock())
        with making:  # one transcode per copy (CPU-bound, the result shared); other copies go on meanwhile
            if not out.exists():
                tmp = out.with_name(out.name + f"{TMP_MARK}{os.getpid()}")
                try:
                    write_wav(path, tmp)
                    os.replace(tmp, out)
                finally:
                    tmp.unlink(missing_ok=True)
                with self._lock:
                    self._evict(keep=out)
            os.utime(out)
        with self._lock:
            if not making.locked():
                self._making.pop(out, None)
        return out

    def _evict(self, keep: Path) -> None:
        files: list[tuple[float, int, Path]] = []
        for p in self.folder.glob("*.wav"):
            try:
                st = p.stat()
            except FileNotFoundError:  # removed meanwhile (another server sharing the folder evicted it)
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(f for f in files if f[2] != keep):
            if total <= CACHE_BYTES:
                break
            total -= size
            p.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> None:
    """Remove half-written copies (``NAME.wav.tmp-PID``) of servers that are no longer running: a server
    killed mid-transcode left them, and no eviction counted or removed them."""
    for p in folder.glob(f"*.wav{TMP_MARK}*"):
        pid = p.name.rpartition(TMP_MARK)[2]
        if pid.isdigit() and not _running(int(pid)):
            p.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def copy_validators(source: os.stat_result, copy: Path, copy_st: os.stat_result) -> dict[str, str]:
    """ETag and Last-Modified for a WAV copy, from what it is a copy of: its name (a hash of the source's path,
    mtime and size) and size, and the source's mtime. The copy's own mtime moves on every play (it is the
    LRU mark), and validators taken from it made every If-Range fail (a whole 200 for each seek)."""
    return {"etag": f'"{copy.stem}-{copy_st.st_size:x}"', "last-modified": formatdate(source.st_mtime, usegmt=True)}


def write_wav(src: Path, dst: Path) -> None:
    """Decode ``src`` with PyAV to 16-bit PCM WAV (its own rate, mono or stereo) at ``dst``."""
    import av

    try:
        with av.open(str(src)) as container:
            stream = container.streams.audio[0]
            layout = "mono" if (stream.codec_context.channels or 1) == 1 else "stereo"
            with av.open(str(dst), "w", format="wav") as out:
                ostream = out.add_stream("pcm_s16le", rate=stream.codec_context.sample_rate, layout=layout)
                resampler = av.AudioResampler(format="s16", layout=layout, rate=stream.codec_context.sample_rate)
                for frame in container.decode(stream):
                    for piece in resampler.resample(frame):
                        out.mux(ostream.encode(piece))
                for piece in resampler.resample(None):
                    out.mux(ostream.encode(piece))
                out.mux(ostream.encode(None))
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise NotFound(f"{src.name} cannot be played in the browser and could not be transcoded ({exc})") from None
