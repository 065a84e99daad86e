"""Waveform peaks (min and max per bin) of a stream of samples, in memory bounded by the bin count.

The samples are cut into sub-bins of ``s`` samples (the last one shorter); bin ``i`` of ``n`` holds sub-bins
``floor(i*m/n)`` to ``floor((i+1)*m/n) - 1`` of the ``m`` there are, so bins are contiguous, cover every
sample and differ in width by at most one sub-bin. ``s`` starts from the expected length (about
``SUB_PER_BIN`` sub-bins a bin) and doubles, by merging neighbouring sub-bins, whenever more than
``MAX_SUB_PER_BIN * n`` would be held, so a length that was badly guessed (a lying header, an estimate
from the bit rate) costs neither memory nor exactness: every min and max is of the exact samples of its
bin, as ``Peaks.edges`` states them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from songseek.engine.audio.decode import decode_stream, probe
from songseek.engine.errors import DecodeError, UsageError

SUB_PER_BIN = 32   # a length guessed up to 32x too long still gives n bins
MAX_SUB_PER_BIN = 64


@dataclass(frozen=True)
class Peaks:
    """``mins``/``maxs``: float32 (bins,), the extremes of the samples ``edges[i]:edges[i+1]``; ``edges``:
    int64 (bins + 1,) sample indices from 0 to ``samples``; ``bins`` <= the n asked for (fewer only for
    audio shorter than n samples, or a length guessed over 32x too long); ``sub_samples``: the final
    sub-bin width (inner bins differ in width by at most that)."""

    mins: np.ndarray
    maxs: np.ndarray
    edges: np.ndarray
    samples: int
    sample_rate: int
    sub_samples: int

    @property
    def bins(self) -> int:
        return len(self.mins)


class _SubBins:
    """Min/max of consecutive runs of ``size`` samples, fed block by block; the open run is an accumulator."""

    def __init__(self, size: int, cap: int) -> None:
        self.size, self.cap = size, cap
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.count = 0  # closed sub-bins held
        self.acc: tuple[float, float, int] | None = None  # (min, max, samples) of the open sub-bin

    def feed(self, x: np.ndarray) -> None:
        if self.acc is not None:  # fill the open sub-bin first
            lo, hi, have = self.acc
            take = x[:self.size - have]
            lo, hi, have = min(lo, float(take.min())), max(hi, float(take.max())), have + len(take)
            x = x[len(take):]
            if have < self.size:
                self.acc = (lo, hi, have)
                return
            self.acc = None
            self._append(np.array([lo], np.float32), np.array([hi], np.float32))
        k = len(x) // self.size
        if k:
            runs = x[:k * self.size].reshape(k, self.size)
            self._append(runs.min(axis=1), runs.max(axis=1))
        rest = x[k * self.size:]
        if len(rest):
            self.acc = (float(rest.min()), float(rest.max()), len(rest))
        # only here, with the open sub-bin last, may sub-bins merge: the samples stay in order
        while self.count > self.cap:
            self._coarsen()

    def _append(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo.append(lo.astype(np.float32))
        self.hi.append(hi.astype(np.float32))
        self.count += len(lo)

    def _coarsen(self) -> None:
        """Double ``size``: merge sub-bins in pairs; an odd last one goes back into the open accumulator."""
        lo, hi = np.concatenate(self.lo), np.concatenate(self.hi)
        if len(lo) % 2:
            a, b = float(lo[-1]), float(hi[-1])
            if self.acc is None:
                self.acc = (a, b, self.size)
            else:
                self.acc = (min(a, self.acc[0]), max(b, self.acc[1]), self.acc[2] + self.size)
            lo, hi = lo[:-1], hi[:-1]
        self.lo, self.hi = [np.minimum(lo[0::2], lo[1::2])], [np.maximum(hi[0::2], hi[1::2])]
        self.count = len(self.lo[0])
        self.size *= 2

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        lo = [*self.lo, np.array([self.acc[0]], np.float32)] if self.acc else self.lo
        hi = [*self.hi, np.array([self.acc[1]], np.float32)] if self.acc else self.hi
        empty = np.zeros(0, np.float32)
        return (np.concatenate(lo) if lo else empty), (np.concatenate(hi) if hi else empty)


def stream_peaks(blocks: Iterable[np.ndarray], n: int, expected_samples: int, sample_rate: int,
                 max_samples: int | None = None) -> Peaks:
    """Peaks of the samples in ``blocks`` (1-D float arrays, in order) in at most ``n`` bins (see the module
    docstring). ``expected_samples`` sizes the first sub-bins (any guess is exact; a good one is fastest);
    past ``max_samples`` samples the stream is abandoned with UsageError."""
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"n must be a positive number of bins (got {n!r})")
    acc = _SubBins(max(1, int(expected_samples) // (SUB_PER_BIN * n)), MAX_SUB_PER_BIN * n)
    total = 0
    for block in blocks:
        x = np.asarray(block, dtype=np.float32).ravel()
        total += len(x)
        if max_samples is not None and total > max_samples:
            raise UsageError(f"the audio runs past max_samples={max_samples:,} samples; peaks were not computed")
        if len(x):
            acc.feed(x)
    lo, hi = acc.finish()
    m = len(lo)
    if m == 0:
        raise DecodeError("no samples: the audio is empty")
    bins = min(n, m)
    first = (np.arange(bins + 1, dtype=np.int64) * m) // bins  # sub-bin index where each bin starts
    edges = np.minimum(first * acc.size, total)
    return Peaks(np.minimum.reduceat(lo, first[:-1]), np.maximum.reduceat(hi, first[:-1]), edges, total,
                 sample_rate, acc.size)


def file_peaks(path: Path, n: int, max_s: float) -> Peaks:
    """Peaks of ``path`` decoded at its own sample rate (mono: the mean of its channels, as decode gives it),
    streamed 10 s at a time; a file whose decoded audio runs past ``max_s`` seconds raises UsageError."""
    info = probe(path)
    rate = info.sample_rate
    blocks = decode_stream(path, rate, block_s=10.0)
    return stream_peaks(blocks, n, int(info.duration_s * rate), rate, max_samples=int(max_s * rate) + rate)
