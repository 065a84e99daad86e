"""Cut audio into fixed windows with a hop; pure (no I/O), seconds in float64, samples in float32.

The rule (one place, three entry points):

- full windows start at ``k * hop`` while ``start + window <= duration``;
- if audio remains after the last full window (its end < duration), one tail window starts at
  ``last_start + hop`` and its real content ends at ``duration``; it is padded to full length. A tail
  with less than a tenth of a window of content (under 1 s for 10 s windows) is dropped: tiled 90 times
  to fill a window, a 0.1 s tail is a buzz that matched text queries at random and showed as a
  ``1:10–1:10`` segment (session 10); the fraction, not seconds, keeps the rule free of the sample rate;
- a track shorter than one window gives one padded window ``[0, duration]``.

``hop > window`` is allowed: windows then sample the track with gaps that are not indexed (a cheap
pass over a huge library); the tail window is added only where it starts before the end.

Padding follows CLAP's feature extractor: ``"repeatpad"`` (default, what LAION-CLAP and
``ClapFeatureExtractor`` do to clips shorter than 10 s) tiles the content a whole number of times and
fills the rest with zeros; ``"repeat"`` tiles and cuts (no silence); ``"zero"`` pads with silence.

In samples, window and hop are ``round(window_s * sample_rate)`` and ``round(hop_s * sample_rate)``;
the streaming and whole-array paths give identical windows, and their bounds equal
``window_bounds(n_samples / sr, window_n / sr, hop_n / sr)``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from typing import Literal

import numpy as np

from songseek.engine.errors import UsageError

PadMode = Literal["repeatpad", "repeat", "zero"]
_EPS_S = 1e-7  # seconds; far below one sample at 192 kHz (5.2 us)
MIN_TAIL_FRACTION = 10  # a tail window needs at least window / MIN_TAIL_FRACTION of real content


def _check_params(window_s: float, hop_s: float) -> None:
    if not (math.isfinite(window_s) and window_s > 0):
        raise UsageError(f"window length must be > 0 seconds, got {window_s!r}")
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise UsageError(f"hop must be > 0 seconds, got {hop_s!r}")


def window_bounds(duration_s: float, window_s: float, hop_s: float) -> np.ndarray:
    """float64 (n, 2) array of [start_s, end_s] of each window's real content (rule in module doc)."""
    _check_params(window_s, hop_s)
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise UsageError(f"duration must be > 0 seconds to cut windows, got {duration_s!r}")
    if duration_s + _EPS_S < window_s:
        return np.array([[0.0, duration_s]], dtype=np.float64)
    n_full = int(math.floor((duration_s - window_s + _EPS_S) / hop_s)) + 1
    starts = np.arange(n_full, dtype=np.float64) * hop_s
    bounds = np.stack([starts, starts + window_s], axis=1)
    tail_start = n_full * hop_s
    if (bounds[-1, 1] < duration_s - _EPS_S and tail_start < duration_s - _EPS_S
            and _long_enough(duration_s - tail_start + _EPS_S, window_s)):
        bounds = np.vstack([bounds, [[tail_start, duration_s]]])
    return bounds


def sample_bounds(n_samples: int, window_n: int, hop_n: int) -> np.ndarray:
    """int64 (n, 2) array of [start, end) sample indices of each window's real content (same rule)."""
    if window_n < 1 or hop_n < 1:
        raise UsageError(f"window and hop must be at least one sample, got {window_n} and {hop_n}")
    if n_samples <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    if n_samples < window_n:
        return np.array([[0, n_samples]], dtype=np.int64)
    n_full = (n_samples - window_n) // hop_n + 1
    starts = np.arange(n_full, dtype=np.int64) * hop_n
    bounds = np.stack([starts, starts + window_n], axis=1)
    tail_start = n_full * hop_n
    if bounds[-1, 1] < n_samples and tail_start < n_samples and _long_enough(n_samples - tail_start, window_n):
        bounds = np.vstack([bounds, np.array([[tail_start, n_samples]], dtype=np.int64)])
    return bounds


def _long_enough(tail: float, window: float) -> bool:
    """Whether a tail of ``tail`` samples or seconds is indexed (module docstring), against its window."""
    return tail * MIN_TAIL_FRACTION >= window


def repeat_pad(x: np.ndarray, n: int, mode: PadMode = "repeatpad") -> np.ndarray:
    """Pad 1-D ``x`` (0 < len(x) <= n) to float32 (n,) by ``mode`` (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    m = len(x)
    if m == 0:
        raise ValueError("cannot pad an empty window")
    if m >= n:
        return x[:n].copy()
    if mode == "repeat":
        return np.resize(x, n)
    out = np.zeros(n, dtype=np.float32)
    if mode == "repeatpad":
        reps = n // m
        out[: reps * m] = np.tile(x, reps)
    elif mode == "zero":
        out[:m] = x
    else:
        raise UsageError(f"unknown pad mode {mode!r}; use 'repeatpad', 'repeat' or 'zero'")
    return out


def _to_samples(window_s: float, hop_s: float, sample_rate: int, pad: str) -> tuple[int, int]:
    _check_params(window_s, hop_s)
    if pad not in ("repeatpad", "repeat", "zero"):
        raise UsageError(f"unknown pad mode {pad!r}; use 'repeatpad', 'repeat' or 'zero'")
    if sample_rate <= 0:
        raise UsageError(f"sample_rate must be > 0, got {sample_rate!r}")
    window_n, hop_n = round(window_s * sample_rate), round(hop_s * sample_rate)
    if window_n < 1 or hop_n < 1:
        raise UsageError(f"window {window_s} s and hop {hop_s} s must each span at least one sample "
                         f"at {sample_rate} Hz")
    return window_n, hop_n


def frame_windows(audio: np.ndarray, sample_rate: int, window_s: float, hop_s: float,
                  *, pad: PadMode = "repeatpad") -> tuple[np.ndarray, np.ndarray]:
    """Cut a whole 1-D signal: (windows float32 (n, window_n), bounds float64 (n, 2) seconds).

    Empty audio gives n = 0.
    """
    window_n, hop_n = _to_samples(window_s, hop_s, sample_rate, pad)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise UsageError(f"audio must be 1-D mono samples, got shape {audio.shape}")
    idx = sample_bounds(len(audio), window_n, hop_n)
    out = np.empty((len(idx), window_n), dtype=np.float32)
    for i, (start, end) in enumerate(idx):
        out[i] = audio[start:end] if end - start == window_n else repeat_pad(audio[start:end], window_n, pad)
    return out, idx.astype(np.float64) / sample_rate


def iter_windows(blocks: Iterable[np.ndarray], sample_rate: int, window_s: float, hop_s: float,
                 *, pad: PadMode = "repeatpad") -> Generator[tuple[np.ndarray, float, float], None, float]:
    """Stream windows from 1-D blocks of any sizes: yields (float32 (window_n,), start_s, end_s).

    Identical to ``frame_windows`` on the concatenated blocks; holds only the samples not yet
    consumed (about one window + hop beyond the incoming block). Yields nothing for an empty stream.
    Returns the length of the audio in seconds: past the last window's end where a short tail is not
    indexed, or where ``hop > window`` leaves gaps.
    """
    window_n, hop_n = _to_samples(window_s, hop_s, sample_rate, pad)
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # absolute index of buf[0]
    pending: list[np.ndarray] = []
    pending_n = 0
    total = 0
    next_start = 0
    yielded_full = False
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise UsageError(f"audio blocks must be 1-D mono samples, got shape {block.shape}")
        if not len(block):
            continue
        total += len(block)
        pending.append(block)
        pending_n += len(block)
        if buf_start + len(buf) + pending_n < next_start + window_n:
            continue
        buf = np.concatenate([buf, *pending])
        pending, pending_n = [], 0
        while buf_start + len(buf) >= next_start + window_n:
            off = next_start - buf_start
            end = next_start + window_n
            yield buf[off:off + window_n].copy(), next_start / sample_rate, end / sample_rate
            yielded_full = True
            next_start += hop_n
        drop = min(next_start - buf_start, len(buf))
        buf, buf_start = buf[drop:], buf_start + drop
    if total == 0:
        return 0.0
    rest = np.concatenate([buf, *pending])
    if not yielded_full:
        yield repeat_pad(rest, window_n, pad), 0.0, total / sample_rate
    elif next_start - hop_n + window_n < total and next_start < total and _long_enough(total - next_start, window_n):
        content = rest[next_start - buf_start:]
        yield repeat_pad(content, window_n, pad), next_start / sample_rate, total / sample_rate
    return total / sample_rate
