"""Decode any common audio file to mono float32 at a chosen sample rate, streamed.

PyAV (FFmpeg) demuxes and decodes; decoded frames are gathered into chunks of about 16k samples,
averaged over their channels (downmix = mean of channels; integer formats scaled to [-1, 1]),
cleaned (NaN/inf -> 0) and resampled by a streaming ``soxr.ResampleStream`` ("HQ"); the output is
clipped to [-1, 1] (float files may exceed full scale and the resampler overshoots slightly).
Memory stays flat in track length: only a chunk and one output block are held at a time.

Error policy (every failure is a ``DecodeError`` whose one-line message names the file):

- missing path, directory, unreadable file, zero-byte file, not audio / unsupported format, no audio
  stream: raised by ``probe`` and at the start of ``decode_stream`` / ``decode``.
- damaged packets in the middle of a file are skipped, as FFmpeg and every player do (a few
  milliseconds of audio are lost per bad packet); if more than ``MAX_BAD_PACKET_FRACTION`` of the
  packets are bad, the file is reported as corrupt, naming the time of the first bad packet.
- a demuxer failure mid-file raises, naming the time where decoding stopped.
- truncation: where the container declares an exact length (FLAC, WAV/AIFF, MP4/M4A, Ogg,
  Matroska/WebM, ASF, CAF), a decode that ends more than ``max(1 s, 5 %)`` short raises, naming where
  it stopped. Raw MP3/AAC streams only carry an estimate of their length (from the bit rate), so a
  truncated MP3 decodes to wherever it ends, without an error.

Timestamps: sample 0 is the first decoded sample. Encoder delay is removed where the file says how
much (MP3 LAME/Xing header, MP4 edit list, Opus pre-skip); raw ADTS ``.aac`` keeps its ~23 ms of
priming. ``decode(path, sr, start_s, end_s)`` seeks and lands on the same samples as a linear decode:
exactly for PCM/FLAC/MP3/Vorbis/Opus/AAC-in-MP4, within 1 ms for Matroska/WebM and ASF/WMA (their
timestamps are whole milliseconds).

``decode_stream`` is a generator: a corrupt file may raise after some blocks were already yielded;
callers that store per-track results must discard the track's partial output on ``DecodeError``.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.errors import DecodeError, UsageError

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".wav", ".aif", ".aiff", ".aifc", ".wma",
     ".webm", ".mka", ".mkv", ".wv"}
)
"""Extensions the indexer picks up (each tested in tests/engine/test_decode_formats.py). A folder's files of
other extensions are skipped silently, so a format missing here is a part of a collection that is never
indexed and never reported."""

MIN_SAMPLE_RATE = 1000
"""Below this a stream's rate is a damaged header, not a recording: a 100 KB WAV that claims 1 Hz would
decode to 14 hours of audio (thousands of windows to embed) at 48 kHz."""

MAX_BAD_PACKET_FRACTION = 0.05
"""A file with more bad (undecodable) packets than this fraction (and more than 10) is corrupt."""

TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRACTION = 0.05
# Container formats whose header (or last page) gives the exact stream length (FFmpeg format names).
_EXACT_LENGTH_FORMATS = frozenset(
    {"flac", "wav", "w64", "aiff", "mov", "mp4", "m4a", "ogg", "matroska", "webm", "asf", "caf"}
)
_MIN_RESAMPLE_CHUNK = 16384  # native-rate samples gathered before each soxr call (fewer Python calls)


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file's audio stream (no decoding).

    ``duration_s`` is the declared length: exact for FLAC/WAV/MP4/Ogg, an estimate from the bit rate
    for some raw MP3/AAC streams; the decoded length is the ground truth.
    """

    path: Path
    duration_s: float
    sample_rate: int
    channels: int
    codec: str


def _fail(path: Path, what: str) -> DecodeError:
    return DecodeError(f"{path}: {what}")


def _check_file(path: Path) -> None:
    """Raise DecodeError for a missing, directory, unreadable or empty path."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(path, "no such file; check the path") from None
    except PermissionError:
        raise _fail(path, "permission denied reading the file; check its permissions") from None
    except OSError as exc:
        raise _fail(path, f"cannot access the file ({exc.strerror})") from None
    if path.is_dir():
        raise _fail(path, "is a directory, not an audio file; index the folder instead")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open below forever, a device never ends
        raise _fail(path, "is not a regular file (a FIFO, socket or device); give an audio file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise _fail(path, "permission denied reading the file; check its permissions (chmod +r)") from None
    except OSError as exc:
        raise _fail(path, f"cannot read the file ({exc.strerror})") from None
    if st.st_size == 0:
        raise _fail(path, "empty file (0 bytes); re-copy or re-download it")


def _open(path: Path) -> tuple[Any, Any]:
    """Open ``path`` with PyAV and return (container, best audio stream); the caller closes it."""
    import av

    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except av.error.PermissionError:
        raise _fail(path, "permission denied reading the file; check its permissions") from None
    except (av.error.InvalidDataError, av.error.EOFError) as exc:
        raise _fail(path, f"not readable as audio: unknown or unsupported format, or a damaged/"
                          f"truncated file ({_av_reason(exc)}); convert or re-download it") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise _fail(path, f"cannot open as audio ({_av_reason(exc)})") from None
    if not container.streams.audio:
        found = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "nothing"
        fmt = container.format.name
        container.close()
        raise _fail(path, f"contains no audio stream (container {fmt} holds: {found}); not an audio file")
    stream: Any = container.streams.best("audio") or container.streams.audio[0]
    if not stream.rate or stream.rate <= 0:
        container.close()
        raise _fail(path, "audio stream has no sample rate; the file is damaged")
    if stream.rate < MIN_SAMPLE_RATE:
        rate = int(stream.rate)
        container.close()
        raise _fail(path, f"audio stream declares {rate} Hz, below any real recording "
                          f"({MIN_SAMPLE_RATE} Hz); the header is damaged: re-encode or re-download it")
    if _channel_count(stream) <= 0:
        container.close()
        raise _fail(path, "audio stream has no channels; the file is damaged")
    return container, stream


_STANDARD_LAYOUT = re.compile(r"^(mono|stereo|downmix|quad|hexagonal|octagonal|cube|hexadecagonal|binaural"
                              r"|22\.2|[0-9]+\.[0-9]+(\.[0-9]+)?)(\([a-z-]+\))?$")


def _channel_count(stream: Any) -> int:
    """Channel count of ``stream``, read without tripping a PyAV 18 double free.

    PyAV wraps a codec context's channel layout in an ``AudioLayout`` by shallow copy and frees it
    again when the wrapper dies; for a custom-order layout (an 8-channel AIFF, say) that frees
    FFmpeg's channel map twice and corrupts the heap. So: read the layout once, keep that wrapper
    alive for good when the layout is not a standard native one, and decode with the default
    native layout of the same channel count (channel identity does not matter: we average them).
    """
    cc = stream.codec_context
    layout = cc.layout
    n = int(layout.nb_channels)
    if not _STANDARD_LAYOUT.match(layout.name):
        # never freed, not even at exit: freeing it would free FFmpeg's channel map a second time
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(layout))
        if n > 0 and not cc.is_open:
            cc.layout = f"{n}c"
    return n


def _av_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def _declared_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / 1_000_000.0
    return None


def _pcm_header_seconds(path: Path) -> float | None:
    """The length a WAV (data chunk size / byte rate) or AIFF (COMM frames / rate) header declares, read
    from the file itself: FFmpeg caps a WAV's declared length at the bytes present, so a cut file would
    look whole. None where the header gives no usable length (streamed WAVs write 0 or 0xFFFFFFFF)."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[8:12] not in (b"WAVE", b"AIFF", b"AIFC"):
                return None
            wav = head[8:12] == b"WAVE"
            order = "<" if wav else ">"
            byte_rate = 0.0
            while chunk := f.read(8):
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
                if wav and cid == b"fmt ":
                    body = f.read(size)
                    byte_rate = float(struct.unpack("<I", body[8:12])[0]) if len(body) >= 12 else 0.0
                    size = 0
                elif wav and cid == b"data":
                    return size / byte_rate if byte_rate > 0 and 0 < size < 0xFFFFFFFF else None
                elif not wav and cid == b"COMM":
                    body = f.read(size)
                    if len(body) < 18:
                        return None
                    frames = struct.unpack(">I", body[2:6])[0]
                    exponent, mantissa = struct.unpack(">HQ", body[8:18])
                    rate = mantissa * 2.0 ** ((exponent & 0x7FFF) - 16383 - 63)
                    return frames / rate if rate > 0 else None
                f.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to an even size
    except (OSError, struct.error):
        return None
    return None


def _exact_length_format(container: Any) -> bool:
    return bool(set(container.format.name.split(",")) & _EXACT_LENGTH_FORMATS)


def probe(path: Path) -> AudioInfo:
    """Read the container header of ``path`` (no full decode); raises DecodeError.

    Where the header gives no length at all, the packets are counted (still without decoding).
    """
    path = Path(path)
    container, stream = _open(path)
    try:
        duration = _declared_duration(container, stream)
        if duration is None:
            duration = _count_duration(path, container, stream)
        return AudioInfo(
            path=path,
            duration_s=duration,
            sample_rate=int(stream.rate),
            channels=_channel_count(stream),
            codec=stream.codec_context.codec.canonical_name,
        )
    finally:
        container.close()


def _count_duration(path: Path, container: Any, stream: Any) -> float:
    """Length from packet durations, or by decoding when packets carry none."""
    import av

    total = 0.0
    try:
        for packet in container.demux(stream):
            if packet.duration is not None and packet.time_base is not None:
                total += float(packet.duration * packet.time_base)
    except av.error.FFmpegError:
        pass
    if total > 0:
        return total
    samples = sum(len(chunk) for chunk, _rate in _native_chunks(path))
    return samples / float(stream.rate)


class _SeekUnsupported(Exception):
    """Frames carry no timestamps after a seek; decode from the start instead."""


def _first_frame_time(container: Any, stream: Any) -> float:
    """Timestamp (s) of the first decodable frame; it is not always the stream's start time (WMA)."""
    import av

    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            continue
        if frames:
            if frames[0].pts is None:
                raise _SeekUnsupported
            return float(frames[0].pts * frames[0].time_base)
    raise _SeekUnsupported


_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32,
           "dbl": np.float64}


def _frame_channels(frame: Any, converter: Any) -> list[np.ndarray]:
    """One decoded frame as a list of per-channel 1-D arrays (views where possible), native dtype."""
    fmt = frame.format
    channels = frame.layout.nb_channels
    n = frame.samples
    if fmt.is_planar and channels >= 8:  # PyAV mishandles planar frames of 8+ channels
        packed = [f.to_ndarray().reshape(-1, channels) for f in converter.resample(frame)]
        if not packed:
            return [np.zeros(0, np.float32)] * channels
        data = np.concatenate(packed) if len(packed) > 1 else packed[0]
        return [data[:, c] for c in range(channels)]
    dtype = _DTYPES[fmt.name.rstrip("p")]
    planes = frame.planes
    if fmt.is_planar:
        return [np.frombuffer(planes[c], dtype=dtype, count=n) for c in range(channels)]
    data = np.frombuffer(planes[0], dtype=dtype, count=n * channels).reshape(n, channels)
    return [data[:, c] for c in range(channels)]


def _to_mono(batch: list[list[np.ndarray]]) -> np.ndarray:
    """Average the channels of a batch of frames (same dtype and channel count) into float32 [-1, 1]."""
    channels = len(batch[0])
    dtype = batch[0][0].dtype

    def channel(c: int) -> np.ndarray:
        parts = [frame[c] for frame in batch]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    mono = channel(0).astype(np.float32)  # always a fresh array
    for c in range(1, channels):
        np.add(mono, channel(c), out=mono, casting="unsafe")
    if dtype == np.uint8:
        mono -= 128.0 * channels
        mono *= np.float32(1.0 / (128.0 * channels))
    elif np.issubdtype(dtype, np.integer):
        mono *= np.float32(1.0 / (channels * 2 ** (8 * dtype.itemsize - 1)))
    elif channels > 1:
        mono *= np.float32(1.0 / channels)
    if not np.isfinite(mono).all():
        np.nan_to_num(mono, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return mono


def _native_chunks(
    path: Path, start_s: float = 0.0, opened: tuple[Any, Any] | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 samples, native sample rate) chunks of the file, in order.

    With ``start_s > 0`` the container seeks (to a keyframe before ``start_s``) and the first chunk
    begins at ``start_s`` (placed by frame timestamps; raises _SeekUnsupported when frames carry
    none). Applies the error policy of the module docstring. ``opened`` is an already opened
    (container, stream) pair that this generator takes over (and closes).
    """
    import av

    container, stream = opened if opened is not None else _open(path)
    try:
        origin = 0.0  # timestamp of the first decoded sample: position 0 of a linear decode
        skip_until: float | None = None
        if start_s > 0:
            origin = _first_frame_time(container, stream)
            preroll = max(0.0, start_s - 0.5)  # decoders need a little history after a seek
            try:
                container.seek(int((origin + preroll) / stream.time_base), stream=stream, backward=True)
            except av.error.FFmpegError:
                raise _SeekUnsupported from None
            skip_until = start_s
        converter = av.AudioResampler(format="flt")
        packets = bad = 0
        first_bad_s: float | None = None
        decoded_s = 0.0  # seconds yielded so far (from start_s when seeking)
        batch: list[list[np.ndarray]] = []
        batch_n = 0
        batch_key: tuple[Any, int, int] | None = None
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                raise _fail(path, f"corrupt: the container fails at {start_s + decoded_s:.1f} s "
                                  f"({_av_reason(exc)}); re-encode or re-download the file") from None
            if packet.size or packet.dts is not None:  # the last, empty packet only flushes
                packets += 1
            try:
                frames = list(packet.decode())
            except av.error.FFmpegError:
                bad += 1
                if first_bad_s is None:
                    first_bad_s = start_s + decoded_s + (batch_n / batch_key[2] if batch_key else 0.0)
                continue
            for frame in frames:
                rate = int(frame.sample_rate)
                chans = _frame_channels(frame, converter)
                if skip_until is not None:
                    if frame.pts is None:
                        raise _SeekUnsupported
                    frame_s = float(frame.pts * frame.time_base) - origin
                    cut = int(round((skip_until - frame_s) * rate))
                    if cut >= len(chans[0]):
                        continue
                    chans = [ch[max(cut, 0):] for ch in chans]
                    skip_until = None
                key = (chans[0].dtype, len(chans), rate)
                if batch and (key != batch_key or batch_n >= _MIN_RESAMPLE_CHUNK):
                    assert batch_key is not None
                    decoded_s += batch_n / batch_key[2]
                    yield _to_mono(batch), batch_key[2]
                    batch, batch_n = [], 0
                batch_key = key
                batch.append(chans)
                batch_n += len(chans[0])
        if batch and batch_key is not None:
            decoded_s += batch_n / batch_key[2]
            yield _to_mono(batch), batch_key[2]
        if packets and bad > max(10, MAX_BAD_PACKET_FRACTION * packets):
            raise _fail(path, f"corrupt: {bad} of {packets} packets fail to decode, the first at "
                              f"{first_bad_s or 0.0:.1f} s; re-encode or re-download the file")
        if decoded_s == 0 and start_s == 0:
            raise _fail(path, "no decodable audio in the file (damaged or empty stream)")
        declared = _declared_duration(container, stream)
        if start_s == 0 and {"wav", "aiff"} & set(container.format.name.split(",")):
            declared = max(declared or 0.0, _pcm_header_seconds(path) or 0.0) or None
        if start_s == 0 and declared is not None and _exact_length_format(container):
            missing = declared - decoded_s
            if missing > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * declared):
                raise _fail(path, f"truncated or corrupt: decoding stopped at {decoded_s:.1f} s of "
                                  f"the {declared:.1f} s the header declares; re-download or re-encode it")
    finally:
        container.close()


def _resampled(chunks: Iterator[tuple[np.ndarray, int]], sample_rate: int) -> Iterator[np.ndarray]:
    """Resample a stream of (mono chunk, rate) to ``sample_rate`` with soxr, clipped to [-1, 1]."""
    import soxr

    resampler: Any = None
    rate_in = 0
    pending: list[np.ndarray] = []
    pending_n = 0

    def run(last: bool) -> np.ndarray:
        nonlocal pending, pending_n
        x = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        pending, pending_n = [], 0
        if resampler is None:
            y = x
        else:
            y = resampler.resample_chunk(x, last=last)
        return np.clip(y, -1.0, 1.0, out=np.asarray(y, dtype=np.float32))

    for chunk, rate in chunks:
        if rate != rate_in:
            if pending or resampler is not None:
                yield run(last=True)
            rate_in = rate
            resampler = (None if rate == sample_rate
                         else soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ"))
        pending.append(chunk)
        pending_n += len(chunk)
        if pending_n >= _MIN_RESAMPLE_CHUNK:
            yield run(last=False)
    if pending or resampler is not None:
        yield run(last=True)


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise UsageError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")


def decode_stream(path: Path, sample_rate: int, block_s: float = 30.0) -> Iterator[np.ndarray]:
    """Yield the file as mono float32 blocks at ``sample_rate``: 1-D arrays of exactly
    ``round(block_s * sample_rate)`` samples, except a shorter last block. Memory is flat in track
    length. Raises DecodeError (see the module docstring for the error policy)."""
    _check_rate(sample_rate)
    if not block_s > 0:
        raise UsageError(f"block_s must be > 0, got {block_s!r}")
    path = Path(path)
    opened = _open(path)  # fail fast, before the first next(), on unopenable files
    chunks = _native_chunks(path, opened=opened)
    return _blocks(_resampled(chunks, sample_rate), max(1, round(block_s * sample_rate)))


def _blocks(pieces: Iterator[np.ndarray], block_n: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    pending_n = 0
    for piece in pieces:
        if not len(piece):
            continue
        pending.append(piece)
        pending_n += len(piece)
        if pending_n >= block_n:
            buf = np.concatenate(pending)
            full = (len(buf) // block_n) * block_n
            for i in range(0, full, block_n):
                yield buf[i:i + block_n].copy()
            rest = buf[full:]
            pending, pending_n = ([rest.copy()] if len(rest) else []), len(rest)
    if pending_n:
        yield np.concatenate(pending)


def decode(path: Path, sample_rate: int, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """Decode ``[start_s, end_s)`` of a file (whole file by default) to mono float32 at ``sample_rate``.

    Returns a 1-D float32 array. Seeks when ``start_s > 0`` (falls back to decoding from the start
    when the format has no timestamps). ``end_s`` past the end returns what there is; an empty
    range raises UsageError; an undecodable file raises DecodeError.
    """
    _check_rate(sample_rate)
    if not math.isfinite(start_s) or (end_s is not None and not math.isfinite(end_s)):
        raise UsageError(f"bad segment start_s={start_s!r}, end_s={end_s!r}: need finite seconds")
    if start_s < 0 or (end_s is not None and end_s <= start_s):
        raise UsageError(f"bad segment start_s={start_s!r}, end_s={end_s!r}: need 0 <= start < end")
    path = Path(path)
    if end_s is not None and int(round((end_s - start_s) * sample_rate)) == 0:  # as _collect counts samples
        raise UsageError(f"{path}: the segment {start_s:g}-{end_s:g} s holds no whole sample at "
                         f"{sample_rate} Hz; give a longer segment")
    try:
        audio = _collect(_resampled(_native_chunks(path, start_s), sample_rate), start_s, end_s, sample_rate)
    except _SeekUnsupported:
        whole = _collect(_resampled(_native_chunks(path), sample_rate), 0.0, end_s, sample_rate)
        audio = whole[int(round(start_s * sample_rate)):]
    if len(audio) == 0:
        raise UsageError(f"{path}: the segment starting at {start_s:g} s is past the end of the audio")
    return audio


def _collect(
    pieces: Iterator[np.ndarray], start_s: float, end_s: float | None, sample_rate: int
) -> np.ndarray:
    want = None if end_s is None else int(round((end_s - start_s) * sample_rate))
    out: list[np.ndarray] = []
    have = 0
    for piece in pieces:
        out.append(piece)
        have += len(piece)
        if want is not None and have >= want:
            break
    close = getattr(pieces, "close", None)
    if close is not None:
        close()  # stop decoding and close the container now
    audio = np.concatenate(out) if out else np.zeros(0, np.float32)
    return (audio if want is None else audio[:want]).astype(np.float32, copy=False)


__all__ = ["AUDIO_EXTENSIONS", "AudioInfo", "DecodeError", "decode", "decode_stream", "probe"]
