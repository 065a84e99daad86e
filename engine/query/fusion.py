"""Temporal attention fusion (CoLLAP Eqs. 1-7) as pure, batched numpy: frame similarities → track scores.

Every function takes a padded batch of candidate tracks:

- ``sims``: float (B, Tmax) cosine similarities s_t = f_t · q of each track's frames with the query;
  row b is valid in ``[:lengths[b]]``, the rest is padding and may hold any value (NaN and inf included).
- ``lengths``: int (B,) number of frames of each track, 1 <= lengths[b] <= Tmax.

The computation (docs/fusion.md has it in full): each track is unfolded into W kernels of H consecutive
frames with stride S (kernel v covers frames vS .. vS+H-1, 0-based); a softmax with temperature tau over
the H frames of each kernel gives the kernel score p_v, a softmax over the W kernels at each offset h gives
the offset score o_h; r_K = mean_v p_v, r_T = mean_h o_h, score = gamma_k r_K + gamma_t r_T. Means (not the
paper's 1/H and 1/W) keep the score comparable across tracks of different lengths. A track shorter than H
frames gets H = T (one kernel, the whole track). The best segment (``FusionParams.segment``) is the run of
1 to K frames with the largest sum / length^e (``span``, K = ``segment_kernel``), or the kernel with the
largest p_v (``kernel``) or temporal attention mass sum_h A_T(v, h) (``attention``), searched with kernel
size ``segment_kernel`` when that is set; ties: the earliest (then the shortest).

Vectorised over tracks: every track's (H, S, W) may differ (proportional mode). Tracks are grouped by
stride into blocks of a few thousand frames; within a block each kernel offset h < Hmax is one strided
view over all tracks and kernels, so the only Python loops run over blocks and offsets, never tracks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import numpy as np

from songseek.engine.errors import UsageError

__all__ = [
    "FusionParams",
    "FusionResult",
    "DEFAULT_RERANK",
    "RERANK_MODES",
    "RerankSettings",
    "SEGMENT_RULES",
    "argmax_frame",
    "best_span",
    "fuse",
    "hedged_scores",
    "kernel_geometry",
    "pool_max",
    "pool_mean",
    "rerank_scores",
    "standardize",
]

# The one list of rerank modes (search, the CLI and the benchmarks import it). none = first-stage order.
# auto: part, whole or hedge by the query's kind (engine/query/kind.py); without a kind it is hedge; an audio
# excerpt of several windows: align (engine/query/align.py; for one query vector align is max pooling).
RERANK_MODES = ("auto", "hedge", "part", "whole", "align", "fusion", "blend", "mean", "max", "none")
DEFAULT_RERANK = "auto"
_GEOMETRY_MODES = ("frames", "proportional")
SEGMENT_RULES = ("span", "attention", "kernel")
# Guards floor(T * eta / 30) against representation error (e.g. 0.1 * 30 = 2.9999999999999996).
_FLOOR_EPS = 1e-9


MIN_TEMPERATURE = 1e-6  # below it 1/tau times a similarity overflows to inf, and the softmax gives NaN


@dataclass(frozen=True)
class FusionParams:
    """Parameters of the fused rerank score.

    ``mode="frames"``: ``kernel`` (H) and ``stride`` (S) are frame counts, rounded half up to an integer
    (at least 1); the caller converts seconds to frames with the library's hop (H = kernel_s / hop_s).
    ``mode="proportional"`` (the paper): H = floor(T * kernel / 30), S = floor(T * stride / 30), each at
    least 1, so every track has about (30 - kernel) / stride + 1 kernels whatever its length.
    ``temperature`` (tau > 0, inf allowed = uniform attention) divides the similarities inside both
    softmaxes; ``rerank_scores`` feeds ``fuse`` standardised similarities, so there tau is in standard
    deviations of the query's similarities (scale-free), while ``fuse`` itself takes whatever it is given.
    ``segment``: the best segment is the run of 1 to K consecutive frames (K = ``segment_kernel``, or
    ``kernel`` when that is 0) with the largest sum of its similarities / length^``span_exponent``
    (``"span"``, the default: on the standardised similarities rerank_scores gives fuse, the exponent
    0.7 sits between the sum / sqrt(length) of a scan statistic and the mean), the kernel with the
    largest kernel score p_v (``"kernel"``) or with
    the largest temporal attention mass sum_h A_T(v, h) (``"attention"``); ties → the earliest.
    ``segment_kernel`` (same units as ``kernel``; 0 = ``kernel``): the kernel size of the segment search,
    so that the score and the segment can use different kernels (one extra pass when they differ).
    ``mean_weight``: weight of the mean in the ``blend`` mode (``rerank_scores``).
    ``hedge_weight`` (w >= 1): the ``hedge`` mode orders tracks by min(fusion rank, w x rank under mean
    pooling, w x rank under the soft-max part r_t); ``part`` by min(rank under max pooling, w x fusion
    rank) and ``whole`` by min(rank under mean pooling, w x fusion rank) (``rerank_scores``).
    Defaults chosen on the planted benchmark and the demo model (docs/fusion.md, "Defaults"): with H = 1
    the score is 0.35 x mean + 0.65 x softmax(tau = 0.35 standard deviations) pooling of the frames, and
    the segment is the run of 1 to 3 frames (up to 30 s at a 10 s hop) with the largest sum of standardised
    similarities / length^0.7 (docs/fusion.md, "Session 6: segments of 1 to 3 windows").
    """

    gamma_k: float = 0.35
    gamma_t: float = 0.65
    kernel: float = 1.0
    stride: float = 1.0
    temperature: float = 0.35
    mode: str = "frames"
    segment: str = "span"
    segment_kernel: float = 3.0
    span_exponent: float = 0.7
    mean_weight: float = 1.0
    hedge_weight: float = 3.0

    def __post_init__(self) -> None:
        where = "FusionParams (engine/query/fusion.py)"
        if self.mode not in _GEOMETRY_MODES:
            raise UsageError(f"{where}: mode must be one of {_GEOMETRY_MODES}, got {self.mode!r}")
        if self.segment not in SEGMENT_RULES:
            raise UsageError(f"{where}: segment must be one of {SEGMENT_RULES}, got {self.segment!r}")
        for name in ("kernel", "stride"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{where}: {name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.span_exponent) and 0 <= self.span_exponent <= 1):
            raise UsageError(f"{where}: span_exponent must be a number in [0, 1], got {self.span_exponent!r}")
        if not (math.isfinite(self.segment_kernel) and self.segment_kernel >= 0):
            raise UsageError(f"{where}: segment_kernel must be >= 0 (0 = kernel), got {self.segment_kernel!r}")
        # inf is allowed (uniform attention); NaN, <= 0, and values so small that 1/tau overflows are not
        if not (self.temperature >= MIN_TEMPERATURE):
            raise UsageError(f"{where}: temperature must be > 0 (at least {MIN_TEMPERATURE:g}, which already "
                             f"picks the best window), got {self.temperature!r}")
        if not (math.isfinite(self.mean_weight) and self.mean_weight >= 0):
            raise UsageError(f"{where}: mean_weight must be a finite number >= 0, got {self.mean_weight!r}")
        if not (math.isfinite(self.hedge_weight) and self.hedge_weight >= 1):
            raise UsageError(f"{where}: hedge_weight must be a finite number >= 1, got {self.hedge_weight!r}")
        for name in ("gamma_k", "gamma_t"):
            if not math.isfinite(getattr(self, name)):
                raise UsageError(f"{where}: {name} must be finite, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RerankSettings:
    """A rerank mode and its parameters: what a library keeps in its manifest (`songseek bench rerank
    --save`) and every search uses unless it passes its own. ``to_json``/``from_json`` round-trip it;
    a bad stored value raises UsageError naming the field."""

    mode: str = DEFAULT_RERANK
    params: FusionParams = FusionParams()

    def __post_init__(self) -> None:
        if self.mode not in RERANK_MODES:
            raise UsageError(f"RerankSettings: mode must be one of {RERANK_MODES}, got {self.mode!r}")

    def to_json(self) -> dict[str, object]:
        return {"rerank": self.mode, "params": {f.name: getattr(self.params, f.name) for f in fields(FusionParams)}}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RerankSettings:
        """The inverse of ``to_json``; params not given keep their defaults."""
        mode = data.get("rerank", DEFAULT_RERANK)
        params = data.get("params", {})
        if not isinstance(mode, str) or not isinstance(params, Mapping):
            raise UsageError(f"RerankSettings: expected {{'rerank': str, 'params': {{...}}}}, got {dict(data)!r}")
        kinds = {f.name: f.type for f in fields(FusionParams)}
        unknown = sorted(set(params) - set(kinds))
        if unknown:
            raise UsageError(f"RerankSettings: unknown params {unknown}; known: {', '.join(kinds)}")
        values: dict[str, str | float] = {}
        for name, value in params.items():
            if kinds[name] == "str":
                if not isinstance(value, str):
                    raise UsageError(f"RerankSettings: {name} must be a string, got {value!r}")
                values[name] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                values[name] = float(value)
            else:
                raise UsageError(f"RerankSettings: {name} must be a number, got {value!r}")
        return cls(mode, replace(FusionParams(), **values))  # type: ignore[arg-type]


@dataclass(frozen=True)
class FusionResult:
    """Scores and best segment of each candidate track (all arrays have shape (B,)).

    ``score`` float32 fused score gamma_k * r_k + gamma_t * r_t (the ranking key); ``r_k``/``r_t`` float32
    kernel-wise and temporal parts; ``best_window`` float32 max_t s_t; ``seg_first``/``seg_last`` int64
    first and last (inclusive) 0-based frame index of the best-matching segment.
    """

    score: np.ndarray
    r_k: np.ndarray
    r_t: np.ndarray
    best_window: np.ndarray
    seg_first: np.ndarray
    seg_last: np.ndarray


def _check(sims: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = np.asarray(sims)
    lengths = np.asarray(lengths)
    where = "engine/query/fusion.py"
    if sims.ndim != 2:
        raise UsageError(f"{where}: sims must be 2-D (candidates, frames), got shape {sims.shape}")
    if lengths.ndim != 1 or lengths.shape[0] != sims.shape[0]:
        raise UsageError(
            f"{where}: lengths must be 1-D with one entry per row of sims ({sims.shape[0]}), got shape {lengths.shape}"
        )
    if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
        raise UsageError(f"{where}: lengths must be integers, got dtype {lengths.dtype}")
    lengths = lengths.astype(np.int64, copy=False)
    if lengths.size and (lengths.min() < 1 or lengths.max() > sims.shape[1]):
        raise UsageError(
            f"{where}: every length must be in [1, {sims.shape[1]}] (the padded width of sims), got "
            f"[{lengths.min()}, {lengths.max()}]; drop tracks without frames before reranking"
        )
    return sims, lengths


def _frame_mask(sims: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.arange(sims.shape[1])[None, :] < lengths[:, None]


def pool_mean(sims: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mean of each track's valid similarities: float32 (B,). Padding is ignored."""
    sims, lengths = _check(sims, lengths)
    mask = _frame_mask(sims, lengths)
    total = np.where(mask, sims, 0.0).astype(np.float64).sum(axis=1)
    return (total / np.maximum(lengths, 1)).astype(np.float32)


def pool_max(sims: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Max of each track's valid similarities: float32 (B,). Padding is ignored."""
    sims, lengths = _check(sims, lengths)
    if sims.shape[0] == 0:
        return np.zeros(0, np.float32)
    return np.where(_frame_mask(sims, lengths), sims, -np.inf).max(axis=1).astype(np.float32)


def argmax_frame(sims: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """0-based index of each track's best frame (ties: the earliest): int64 (B,)."""
    sims, lengths = _check(sims, lengths)
    if sims.shape[0] == 0:
        return np.zeros(0, np.int64)
    return np.where(_frame_mask(sims, lengths), sims, -np.inf).argmax(axis=1).astype(np.int64)


def kernel_geometry(lengths: np.ndarray, params: FusionParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-track kernel size H, stride S and kernel count W (each int64 (B,)) for ``params``.

    frames: H = max(1, floor(kernel + 0.5)), S = max(1, floor(stride + 0.5)) (round half up);
    proportional: H = max(1, floor(T * kernel / 30)), S = max(1, floor(T * stride / 30)). Then
    H = min(H, T) (short-track rule) and W = floor((T - H) / S) + 1. With S > 1 the last (T - H) mod S
    frames lie in no kernel (as in Eq. 1).
    """
    t = np.asarray(lengths, dtype=np.int64)
    if params.mode == "frames":
        h = np.full(t.shape, max(1, math.floor(params.kernel + 0.5)), np.int64)
        s = np.full(t.shape, max(1, math.floor(params.stride + 0.5)), np.int64)
    else:
        h = np.maximum(1, np.floor(t * params.kernel / 30.0 + _FLOOR_EPS)).astype(np.int64)
        s = np.maximum(1, np.floor(t * params.stride / 30.0 + _FLOOR_EPS)).astype(np.int64)
    h = np.minimum(h, t)
    w = (t - h) // s + 1
    return h, s, w


# Above this, exp(-(max - min) / tau) could underflow float64 and the shared-shift path is not exact.
_SHARED_SHIFT_LIMIT = 600.0
# Below this, float32 exp of the shifted values keeps every weight >= e^-60 (float32 normals reach e^-87).
_F32_EXP_LIMIT = 60.0
# Frames per row block in ``fuse`` (speed only; see ``_row_blocks``).
_BLOCK_ELEMS = 16384


@dataclass(frozen=True)
class _Batch:
    """A batch laid out for the kernel loops.

    ``x`` float64 (B, width) holds each track's valid similarities and zeros after them, with
    ``width = Tmax + Hmax`` so that every slice ``x[:, off :: S][:, :Wmax]`` exists. ``hi``/``lo`` float64
    (B,) are each track's max / min valid similarity, ``t`` int64 (B,) its length.
    ``kernel_ok`` bool (B, Wmax) marks real kernels, ``kernel_w`` is the same as float64 0/1.
    """

    x: np.ndarray
    mask: np.ndarray
    t: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    h: np.ndarray
    s: np.ndarray
    w: np.ndarray
    kernel_ok: np.ndarray
    kernel_w: np.ndarray


def _prepare(sims: np.ndarray, lengths: np.ndarray, params: FusionParams) -> _Batch:
    h, s, w = kernel_geometry(lengths, params)
    b, tmax = sims.shape
    width = tmax + int(h.max())
    mask = np.arange(width)[None, :] < lengths[:, None]
    x = np.zeros((b, width), np.float64)
    np.copyto(x[:, :tmax], sims, where=mask[:, :tmax])  # padding is never read, NaN and inf included
    hi = np.max(x, axis=1, where=mask, initial=-np.inf)
    lo = np.min(x, axis=1, where=mask, initial=np.inf)
    if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
        raise UsageError("engine/query/fusion.py: sims holds NaN or inf inside a track's valid frames")
    kernel_ok = np.arange(int(w.max()))[None, :] < w[:, None]
    return _Batch(x, mask, lengths, hi, lo, h, s, w, kernel_ok, kernel_ok.astype(np.float64))


def _offset_view(x: np.ndarray, off: int, stride: int, wmax: int) -> np.ndarray:
    """(B, Wmax) strided view of frames v * stride + off, v < Wmax, of every row of ``x`` (no copy)."""
    return x[:, off : off + (wmax - 1) * stride + 1 : stride]


def _scores(bt: _Batch, inv_tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel scores p float64 (B, Wmax) (Eq. 3 weighted sums), offset scores o float64 (B, Hmax)
    (Eq. 4 weighted sums) and each kernel's temporal attention mass float64 (B, Wmax), sum over h < H_b
    of A_T(v, h). Entries of invalid kernels (v >= W_b) and offsets (h >= H_b) are meaningless.

    Softmax is shift-invariant, so one shift per track (its best frame) serves every kernel and every
    offset and exp runs once per frame; one pass per offset h, vectorised over tracks and kernels,
    accumulates the kernel-wise sums (over h) and the temporal sums (over v). All rows of ``bt`` share
    one stride (``_blocked`` groups them), so kernels are strided views with no copies. When
    (max - min) / tau is so large that exp could underflow, each kernel and offset is shifted by its own
    max instead."""
    spread = float(np.max(bt.hi - bt.lo)) * inv_tau if inv_tau > 0 else 0.0
    if spread > _SHARED_SHIFT_LIMIT:
        return _scores_own_shift(bt, inv_tau)
    # Few, reused temporaries: fresh large allocations page-fault, and that dominates at this size.
    e = np.subtract(bt.x, bt.hi[:, None])
    e *= inv_tau
    if spread <= _F32_EXP_LIMIT:  # weights >= e^-spread: float32 exp is exact enough and 4x faster
        e32 = e.astype(np.float32)
        e[...] = np.exp(e32, out=e32)
    else:
        np.exp(e, out=e)
    e *= bt.mask
    a = e * bt.x
    b, wmax = bt.kernel_ok.shape
    hmax = int(bt.h.max())
    kernel_w = bt.kernel_w
    # Rows with H_b < Hmax read zeros at h >= H_b only when shrunk to their full length (H_b = T_b).
    partial = bool(np.any((bt.h < hmax) & (bt.h < bt.t)))
    num_k = np.zeros((b, wmax))
    den_k = np.zeros((b, wmax))
    num_o = np.zeros((b, hmax))
    den_o = np.zeros((b, hmax))
    mass = np.zeros((b, wmax))
    stride = int(bt.s[0])  # one stride per block (``fuse`` groups rows by stride)
    for off in range(hmax):
        va = _offset_view(a, off, stride, wmax)
        ve = _offset_view(e, off, stride, wmax)
        if partial:
            keep = (off < bt.h)[:, None]
            np.add(num_k, va, out=num_k, where=keep)
            np.add(den_k, ve, out=den_k, where=keep)
        else:
            num_k += va
            den_k += ve
        num_o[:, off] = np.einsum("bv,bv->b", va, kernel_w)
        den_o[:, off] = den = np.einsum("bv,bv->b", ve, kernel_w)
        inv = np.divide(1.0, den, out=np.zeros_like(den), where=den > 0)
        if partial:
            inv *= off < bt.h
        mass += ve * inv[:, None]  # A_T(v, off) = e(v, off) / sum_v' e(v', off)
    return _ratio(num_k, den_k), _ratio(num_o, den_o), mass


def _scores_own_shift(bt: _Batch, inv_tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_scores`` for very small tau: every kernel (resp. offset) is shifted by its own max, as a
    textbook stable softmax, on the full (Hmax, B, Wmax) tensor."""
    hmax = int(bt.h.max())
    stride, wmax = int(bt.s[0]), bt.kernel_ok.shape[1]
    m = np.stack([_offset_view(bt.x, off, stride, wmax) for off in range(hmax)])
    valid = bt.kernel_ok[None, :, :] & (np.arange(hmax)[:, None, None] < bt.h[None, :, None])
    z = np.where(valid, m * inv_tau, -np.inf)
    kmax = z.max(axis=0, keepdims=True)
    omax = z.max(axis=2, keepdims=True)
    ek = np.exp(z - np.where(np.isfinite(kmax), kmax, 0.0))
    eo = np.exp(z - np.where(np.isfinite(omax), omax, 0.0))
    den_o = eo.sum(axis=2, keepdims=True)
    mass = np.divide(eo, den_o, out=np.zeros_like(eo), where=den_o > 0).sum(axis=0)
    p = _ratio((ek * m).sum(axis=0), ek.sum(axis=0))
    return p, _ratio((eo * m).sum(axis=2), den_o[:, :, 0]).T, mass


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in place, 0 where den == 0 (slots that hold no frame)."""
    return np.divide(num, den, out=num, where=den > 0)


def _empty_result(b: int) -> list[np.ndarray]:
    """Output columns of a FusionResult for ``b`` tracks (score, r_k, r_t, best_window, first, last)."""
    return [np.zeros(b, np.float32) for _ in range(4)] + [np.zeros(b, np.int64) for _ in range(2)]


def _best_kernel(key: np.ndarray, bt: _Batch) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame (int64 (B,)) of the kernel with the largest ``key`` (B, Wmax); ties → the
    earliest. ``key`` is overwritten."""
    np.copyto(key, -np.inf, where=~bt.kernel_ok)
    first = key.argmax(axis=1) * bt.s
    return first.astype(np.int64), (first + bt.h - 1).astype(np.int64)


def fuse(sims: np.ndarray, lengths: np.ndarray, params: FusionParams | None = None) -> FusionResult:
    """Fused CoLLAP score and best segment of every candidate track.

    sims: float (B, Tmax) frame-by-query cosines, row b valid in [:lengths[b]]; lengths: int (B,).
    Returns a FusionResult of (B,) arrays; B = 0 gives empty arrays. Computed in float64, returned float32.
    """
    params = FusionParams() if params is None else params
    sims, lengths = _check(sims, lengths)
    if sims.shape[0] == 0:
        return FusionResult(*_empty_result(0))
    inv_tau = 1.0 / params.temperature
    out = _blocked(sims, lengths, params, inv_tau, params.segment)
    if params.segment == "span":
        longest = params.segment_kernel if params.segment_kernel > 0 else params.kernel
        out[4:] = list(best_span(sims, lengths, max(1, math.floor(longest + 0.5)), params.span_exponent))
        return FusionResult(*out)
    seg_params = _segment_params(params)
    if seg_params is not None:
        out[4:] = _blocked(sims, lengths, seg_params, inv_tau, params.segment)[4:]
    return FusionResult(*out)


def best_span(sims: np.ndarray, lengths: np.ndarray, longest: int, exponent: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) int64 (B,): per row, the run of 1..``longest`` consecutive valid frames with the
    largest sum / length**exponent (ties: the shorter run, then the earliest start)."""
    b, tmax = sims.shape
    valid = np.arange(tmax)[None, :] < lengths[:, None]
    x = np.where(valid, sims, 0.0).astype(np.float64)
    csum = np.concatenate([np.zeros((b, 1)), np.cumsum(x, axis=1)], axis=1)
    best = np.full(b, -np.inf)
    first, last = np.zeros(b, np.int64), np.zeros(b, np.int64)
    rows = np.arange(b)
    for n in range(1, min(longest, tmax) + 1):
        score = (csum[:, n:] - csum[:, :-n]) / n**exponent  # start i covers i .. i + n - 1
        score[np.arange(tmax - n + 1)[None, :] + n > lengths[:, None]] = -np.inf
        start = np.argmax(score, axis=1)
        value = score[rows, start]
        better = value > best
        best[better], first[better], last[better] = value[better], start[better], start[better] + n - 1
    return first, last


def _segment_params(params: FusionParams) -> FusionParams | None:
    """The params of the segment search when ``segment_kernel`` asks for another kernel, else None."""
    if params.segment_kernel in (0.0, params.kernel):
        return None
    return replace(params, kernel=params.segment_kernel, segment_kernel=0.0)


def _blocked(
    sims: np.ndarray, lengths: np.ndarray, params: FusionParams, inv_tau: float, segment: str
) -> list[np.ndarray]:
    """Result columns (see ``_empty_result``) of a checked, non-empty batch, computed block by block."""
    out = _empty_result(sims.shape[0])
    for rows in _row_blocks(lengths, params):
        block = _fuse_block(sims[rows], lengths[rows], params, inv_tau, segment)
        for column, values in zip(out, block, strict=True):
            column[rows] = values
    return out


def _row_blocks(lengths: np.ndarray, params: FusionParams) -> list[np.ndarray]:
    """Row indices of blocks that share one kernel stride, each of about ``_BLOCK_ELEMS`` frames.

    Results do not depend on the blocking. Equal strides make every kernel a strided view; small blocks
    keep temporaries small enough for the allocator to reuse instead of page-faulting fresh memory, which
    dominated the run time with one-shot (B, Tmax) arrays; rows are sorted by length and each block is cut
    to its own longest track."""
    _, s, _ = kernel_geometry(lengths, params)
    order = np.lexsort((lengths, s))  # by stride, then by length: blocks of similar lengths pad little
    blocks: list[np.ndarray] = []
    for group in np.split(order, np.flatnonzero(np.diff(s[order])) + 1):
        rows = max(1, _BLOCK_ELEMS // (int(lengths[group].max()) + 1))
        blocks.extend(group[r : r + rows] for r in range(0, group.shape[0], rows))
    return blocks


def _fuse_block(
    sims: np.ndarray, lengths: np.ndarray, params: FusionParams, inv_tau: float, segment: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    bt = _prepare(sims[:, : int(lengths.max())], lengths, params)
    p, o, mass = _scores(bt, inv_tau)
    r_k = np.einsum("bv,bv->b", p, bt.kernel_w) / bt.w
    r_t = np.sum(o, axis=1, where=np.arange(o.shape[1])[None, :] < bt.h[:, None]) / bt.h
    if segment == "span":  # fuse finds the span on the whole batch
        first = last = np.zeros(len(lengths), np.int64)
    else:
        first, last = _best_kernel(mass if segment == "attention" else p, bt)
    score = (params.gamma_k * r_k + params.gamma_t * r_t).astype(np.float32)
    return score, r_k.astype(np.float32), r_t.astype(np.float32), bt.hi.astype(np.float32), first, last


def standardize(sims: np.ndarray, lengths: np.ndarray, query_of: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z float64 (B, Tmax), mu float64 (B,), sigma float64 (B,)): each row's similarities in units of its
    query's similarities, z = (s - mu) / sigma. mu and sigma are the mean and standard deviation of the
    similarities of the rows of that query (``query_of`` int (B,) labels rows by query; None: the whole
    batch is one query), every row (candidate track) weighing the same whatever its length: a long track
    does not set the scale, and a track repeated end to end leaves mu and sigma as they were.
    An increasing affine map s -> a*s + b of a query's similarities leaves its z unchanged: this is what
    makes the rerank scale-free. sigma = 0 (all equal) counts as 1. Padding becomes 0."""
    sims, lengths = _check(sims, lengths)
    mask = _frame_mask(sims, lengths)
    x = np.where(mask, sims, 0.0).astype(np.float64)
    groups = _groups(query_of, sims.shape[0])
    n_groups = int(groups.max()) + 1 if groups.size else 0
    rows = np.bincount(groups, minlength=n_groups).astype(np.float64)
    mu = (np.bincount(groups, x.sum(axis=1) / lengths, n_groups) / np.maximum(rows, 1))[groups]
    dev = np.where(mask, x - mu[:, None], 0.0)
    var = np.bincount(groups, np.einsum("bt,bt->b", dev, dev) / lengths, n_groups) / np.maximum(rows, 1)
    sd_g = np.sqrt(var)
    sd_g[~(sd_g > 1e-12)] = 1.0  # every similarity equal: z = 0
    sd = sd_g[groups]
    return dev / sd[:, None], mu, sd


def _groups(query_of: np.ndarray | None, b: int) -> np.ndarray:
    """int64 (B,) query index 0..G-1 of every row (all 0 when ``query_of`` is None)."""
    if query_of is None:
        return np.zeros(b, np.int64)
    labels = np.asarray(query_of).reshape(-1)
    if labels.shape[0] != b:
        raise UsageError(f"engine/query/fusion.py: query_of must have one label per row of sims ({b}), "
                         f"got {labels.shape[0]}")
    return np.unique(labels, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _center(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """x (B,) standardised over the candidates of each query (mean 0, std 1; a constant group → 0)."""
    n = int(groups.max()) + 1
    cnt = np.bincount(groups, minlength=n).astype(np.float64)
    mu = np.bincount(groups, x, n) / cnt
    d = x - mu[groups]
    sd = np.sqrt(np.bincount(groups, d * d, n) / cnt)
    sd[~(sd > 1e-12)] = 1.0
    return d / sd[groups]


def _ranks(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """int64 (B,) 1-based rank of each row within its group, highest value first (ties: the earlier row)."""
    order = np.lexsort((np.arange(len(values)), -values, groups))
    start = np.concatenate([[0], np.cumsum(np.bincount(groups))])[groups[order]]
    ranks = np.empty(len(values), np.int64)
    ranks[order] = np.arange(len(values)) - start + 1
    return ranks


def hedged_scores(score: np.ndarray, others: list[np.ndarray], groups: np.ndarray, weight: float) -> np.ndarray:
    """A hedged order as scores: each row's key is min(rank under ``score``, w * its rank under each of
    ``others``) within its group (ties: the better rank under ``score``, then the earlier row); the
    group's ``score`` values, sorted, are handed out in that order, so the scores stay on the scale of
    ``score`` and their order is the hedged one. Twins (rows of a group equal under ``score`` and every
    list of ``others``, e.g. one track indexed twice) are ranked once and share that score: a tie, as
    under a plain pooling, rather than an order that row numbers decide."""
    by_score = np.lexsort((np.arange(len(score)), -score, groups))
    s, g = score[by_score], groups[by_score]
    if np.any((s[1:] == s[:-1]) & (g[1:] == g[:-1])):  # equal scores in a group: are they twins?
        _, first, twin = np.unique(np.column_stack([groups, score, *others]), axis=0, return_index=True,
                                   return_inverse=True)
        if len(first) < len(score):
            rep = np.sort(first)  # the first row of each twin group, in row order
            at = np.searchsorted(rep, first)[twin.reshape(-1)]
            return hedged_scores(score[rep], [o[rep] for o in others], groups[rep], weight)[at]
    rank_s = _ranks(score, groups)
    key = rank_s.copy()
    for other in others:
        key = np.minimum(key, weight * _ranks(other, groups))
    final = np.lexsort((np.arange(len(score)), rank_s, key, groups))
    out = np.empty_like(score)
    out[final] = score[by_score]  # both sorted by group first: the k-th of a group gets its k-th best score
    return out


def rerank_scores(mode: str, sims: np.ndarray, lengths: np.ndarray, params: FusionParams | None = None,
                  query_of: np.ndarray | None = None) -> FusionResult:
    """Rerank scores for ``mode`` in ``RERANK_MODES`` of the candidates of one query (or of several:
    ``query_of`` int (B,) labels each row's query): the same FusionResult shape for every mode.

    Every mode is scale-free: it sees the similarities standardised over its query's candidate windows
    (``standardize``), and scores are mapped back to the query's own scale (mu + sigma * z) so that they
    still read as similarities; an increasing affine map of a query's similarities changes no ranking and
    no segment. ``params.temperature`` is therefore in units of that standard deviation.

    auto (the default) is hedge here: the search engine resolves it per query to part, whole or hedge by
    the query's kind (engine/query/kind.py), which these similarities alone do not show (docs/fusion.md).
    part: for a query that describes one moment: tracks ordered by min(rank under max pooling, w x fusion
    rank) (ties: the better max rank); scores: the query's max-pooling scores handed out in that order.
    whole: for a description of a whole track: the same with mean pooling in place of max. Both keep the
    fusion's parts and segment (segment quality does not depend on the kind).
    hedge: the fusion order, hedged towards the two poolings it mixes, for a query whose kind
    (a description of the whole track or of one part) is not known: tracks are ordered by
    min(fusion rank, w x rank under mean pooling of z, w x rank under r_t), r_t being soft-max pooling at tau
    when H = 1, w = ``params.hedge_weight`` (ties: the better fusion rank). The first result is the fusion's
    first, and a track at rank r under mean or r_t is at most at position floor(w r) + 2r. Its scores are the
    query's fusion scores handed out in that order (``hedged_scores``): they read as similarities and follow the
    hedged order. Parts and segment as fusion.
    fusion: CoLLAP (``fuse``) on z. mean: score = r_k = r_t = mean_t s_t; segment = the kernel
    (``segment_kernel`` or ``kernel``, and ``stride``) with the highest mean similarity (ties: the
    earliest). max, none and align (one query vector: engine/query/align.py scores several): score =
    max_t s_t; segment = that best frame. blend: the mean and the CoLLAP score, each standardised over the
    query's candidates, added with weights ``params.mean_weight`` and 1 (it leans to mean pooling;
    docs/fusion.md has where that wins); segment and parts as fusion; its score is mu + sigma * (that sum /
    (1 + mean_weight)), a ranking key, not a similarity.
    """
    params = FusionParams() if params is None else params
    if mode not in RERANK_MODES:
        raise UsageError(f"rerank_scores (engine/query/fusion.py): mode must be one of {RERANK_MODES}, got {mode!r}")
    sims, lengths = _check(sims, lengths)
    if sims.shape[0] == 0:
        return FusionResult(*_empty_result(0))
    best = pool_max(sims, lengths)
    if mode in ("max", "none", "align"):  # align with one query vector: its best window (engine/query/align.py)
        frame = argmax_frame(sims, lengths)
        return FusionResult(best, best.copy(), best.copy(), best.copy(), frame, frame.copy())
    if mode == "mean":
        mean = pool_mean(sims, lengths)
        # tau = inf (uniform attention): p_v is the mean of kernel v, and the best kernel is the segment.
        first, last = _blocked(sims, lengths, _segment_params(params) or params, 0.0, "kernel")[4:]
        return FusionResult(mean, mean.copy(), mean.copy(), best, first, last)
    z, mu, sd = standardize(sims, lengths, query_of)
    res = fuse(z.astype(np.float32), lengths, params)  # float32 like raw similarities: fuse is ~2x faster
    r_k, r_t = res.r_k.astype(np.float64), res.r_t.astype(np.float64)
    score = params.gamma_k * r_k + params.gamma_t * r_t
    if mode != "fusion":
        groups = _groups(query_of, len(z))
        mean_z = np.einsum("bt->b", z) / lengths  # padding of z is 0
        w = params.hedge_weight
        if mode in ("hedge", "auto"):
            score = hedged_scores(score, [mean_z, r_t], groups, w)
        elif mode == "part":  # max pooling of z is (best - mu) / sd: the same order as max pooling
            score = hedged_scores((best - mu) / sd, [score], groups, w)
        elif mode == "whole":
            score = hedged_scores(mean_z, [score], groups, w)
        else:
            score = params.mean_weight * _center(mean_z, groups) + _center(score, groups)
            score = score / (1.0 + params.mean_weight)  # about the spread of one standardised score
    return FusionResult(
        (mu + sd * score).astype(np.float32), (mu + sd * r_k).astype(np.float32), (mu + sd * r_t).astype(np.float32),
        best, res.seg_first, res.seg_last)


def params_for_hop(hop_s: float, base: FusionParams | None = None, kernel_s: float | None = None,
                   stride_s: float | None = None, segment_s: float | None = 30.0, *,
                   window_s: float | None = None) -> FusionParams:
    """FusionParams in frames for a library with this hop and window (``window_s`` None: equal to the hop),
    from lengths in seconds.

    The defaults are in frames of 10 s windows at a 10 s hop. A kernel or segment of S seconds is the run of
    frames that covers S seconds: (S - window) / hop + 1 of them, so a library indexed with --window 10
    --hop 5 takes 5 frames for the same 30 s segment. A stride is a step: S / hop frames. ``None`` keeps
    the base's value.
    """
    window = hop_s if window_s is None else window_s
    for name, value in (("kernel_s", kernel_s), ("stride_s", stride_s), ("segment_s", segment_s),
                        ("window_s", window)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise UsageError(f"{name} must be a finite number of seconds above 0 (got {value!r})")

    def covering(seconds: float) -> float:
        return max(1.0, float(round((seconds - window) / hop_s + 1)))

    base = base or FusionParams()
    changes: dict[str, float | str] = {}
    if kernel_s is not None:
        changes.update(kernel=covering(kernel_s), mode="frames")
    if stride_s is not None:
        changes.update(stride=max(1.0, float(round(stride_s / hop_s))), mode="frames")
    if segment_s is not None:
        changes["segment_kernel"] = covering(segment_s)
    return replace(base, **changes)  # type: ignore[arg-type]
