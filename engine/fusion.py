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
frames gets H = T (one kernel, the whole track). The best segment is the kernel with the largest p_v
(ties: the earliest).

Fully vectorised: every track's (H, S, W) may differ (proportional mode); the kernels of all tracks are
gathered into one (B, Wmax, Hmax) tensor with a validity mask, so there is no Python loop over tracks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from songseek.engine.errors import UsageError

__all__ = [
    "FusionParams",
    "FusionResult",
    "RERANK_MODES",
    "argmax_frame",
    "fuse",
    "kernel_geometry",
    "pool_max",
    "pool_mean",
    "rerank_scores",
]

RERANK_MODES = ("fusion", "mean", "max")
_GEOMETRY_MODES = ("frames", "proportional")
# Guards floor(T * eta / 30) against representation error (e.g. 0.1 * 30 = 2.9999999999999996).
_FLOOR_EPS = 1e-9


@dataclass(frozen=True)
class FusionParams:
    """Parameters of the fused rerank score.

    ``mode="frames"``: ``kernel`` (H) and ``stride`` (S) are frame counts, rounded to the nearest integer
    (at least 1); the caller converts seconds to frames with the library's hop (H = kernel_s / hop_s).
    ``mode="proportional"`` (the paper): H = floor(T * kernel / 30), S = floor(T * stride / 30), each at
    least 1, so every track has about (30 - kernel) / stride + 1 kernels whatever its length.
    ``temperature`` (tau > 0, inf allowed = uniform attention) divides the cosines inside both softmaxes.
    Defaults chosen on the planted benchmark (benchmarks/planted.py; docs/fusion.md, "Defaults").
    """

    gamma_k: float = 0.5
    gamma_t: float = 0.5
    kernel: float = 3.0
    stride: float = 1.0
    temperature: float = 0.05
    mode: str = "frames"

    def __post_init__(self) -> None:
        where = "FusionParams (engine/fusion.py)"
        if self.mode not in _GEOMETRY_MODES:
            raise UsageError(f"{where}: mode must be one of {_GEOMETRY_MODES}, got {self.mode!r}")
        for name in ("kernel", "stride"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{where}: {name} must be a finite number > 0, got {value!r}")
        if not (self.temperature > 0):  # inf is allowed (uniform attention), NaN and <= 0 are not
            raise UsageError(f"{where}: temperature must be > 0, got {self.temperature!r}")
        for name in ("gamma_k", "gamma_t"):
            if not math.isfinite(getattr(self, name)):
                raise UsageError(f"{where}: {name} must be finite, got {getattr(self, name)!r}")


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
    where = "engine/fusion.py"
    if sims.ndim != 2:
        raise UsageError(f"{where}: sims must be 2-D (candidates, frames), got shape {sims.shape}")
    if lengths.ndim != 1 or lengths.shape[0] != sims.shape[0]:
        raise UsageError(
            f"{where}: lengths must be 1-D with one entry per row of sims ({sims.shape[0]}), "
            f"got shape {lengths.shape}"
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

    frames: H = max(1, round(kernel)), S = max(1, round(stride)); proportional: H = max(1, floor(T *
    kernel / 30)), S = max(1, floor(T * stride / 30)). Then H = min(H, T) (short-track rule) and
    W = floor((T - H) / S) + 1. With S > 1 the last (T - H) mod S frames lie in no kernel (as in Eq. 1).
    """
    t = np.asarray(lengths, dtype=np.int64)
    if params.mode == "frames":
        h = np.full(t.shape, max(1, int(round(params.kernel))), np.int64)
        s = np.full(t.shape, max(1, int(round(params.stride))), np.int64)
    else:
        h = np.maximum(1, np.floor(t * params.kernel / 30.0 + _FLOOR_EPS)).astype(np.int64)
        s = np.maximum(1, np.floor(t * params.stride / 30.0 + _FLOOR_EPS)).astype(np.int64)
    h = np.minimum(h, t)
    w = (t - h) // s + 1
    return h, s, w


# Above this, exp(-(max - min) / tau) could underflow float64 and the shared-shift path is not exact.
_SHARED_SHIFT_LIMIT = 600.0


def _kernel_index(h: np.ndarray, s: np.ndarray, w: np.ndarray, width: int) -> np.ndarray:
    """Flat indices (Hmax, B, Wmax) into a (B, width) array: slot (h, b, v) → frame vS+h of row b, or the
    row's sentinel column ``width - 1`` (which holds 0) where v >= W_b or h >= H_b."""
    b = h.shape[0]
    hmax, wmax = int(h.max()), int(w.max())
    h_ax = np.arange(hmax)[:, None, None]
    v_ax = np.arange(wmax)[None, None, :]
    valid = (h_ax < h[None, :, None]) & (v_ax < w[None, :, None])
    local = np.where(valid, v_ax * s[None, :, None] + h_ax, width - 1)
    return local + (np.arange(b) * width)[None, :, None]


def _masked_frames(sims: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 (B, Tmax + 1) similarities with padding and one sentinel column set to 0, and the mask."""
    mask = _frame_mask(sims, lengths)
    x = np.zeros((sims.shape[0], sims.shape[1] + 1), np.float64)
    x[:, :-1] = np.where(mask, sims, 0.0)
    return x, mask


def _kernel_and_offset_scores(
    x: np.ndarray, mask: np.ndarray, idx: np.ndarray, inv_tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """p float64 (B, Wmax) kernel scores (Eq. 3 weighted sums) and o float64 (B, Hmax) offset scores (Eq. 4);
    entries of invalid kernels / offsets are 0."""
    valid_x = np.where(mask, x[:, :-1], np.nan)
    hi = np.nanmax(valid_x, axis=1)
    spread = float(np.max((hi - np.nanmin(valid_x, axis=1)) * inv_tau)) if inv_tau > 0 else 0.0
    if spread <= _SHARED_SHIFT_LIMIT:
        # Softmax is shift-invariant: one shift per track (its max frame) serves every kernel and every
        # offset, so exp runs once per frame instead of once per (kernel, offset) slot.
        e = np.zeros_like(x)
        e[:, :-1] = np.where(mask, np.exp((x[:, :-1] - hi[:, None]) * inv_tau), 0.0)
        eg = e.ravel()[idx]  # (Hmax, B, Wmax), 0 at invalid slots
        ag = eg * x.ravel()[idx]
    else:
        # Very small tau: shift each kernel (resp. offset) by its own max, as a plain stable softmax does.
        m = x.ravel()[idx]
        ok = e_ok = idx % x.shape[1] != x.shape[1] - 1
        z = np.where(ok, m * inv_tau, -np.inf)
        kmax = z.max(axis=0, keepdims=True)
        omax = z.max(axis=2, keepdims=True)
        ek = np.exp(z - np.where(np.isfinite(kmax), kmax, 0.0))
        eo = np.exp(z - np.where(np.isfinite(omax), omax, 0.0))
        del e_ok
        return _ratio((ek * m).sum(axis=0), ek.sum(axis=0)), _ratio((eo * m).sum(axis=2), eo.sum(axis=2)).T
    p = _ratio(ag.sum(axis=0), eg.sum(axis=0))
    o = _ratio(ag.sum(axis=2), eg.sum(axis=2)).T
    return p, o


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return num / np.where(den > 0, den, 1.0)


def _empty_result() -> FusionResult:
    f = np.zeros(0, np.float32)
    i = np.zeros(0, np.int64)
    return FusionResult(f, f.copy(), f.copy(), f.copy(), i, i.copy())


def fuse(sims: np.ndarray, lengths: np.ndarray, params: FusionParams | None = None) -> FusionResult:
    """Fused CoLLAP score and best segment of every candidate track.

    sims: float (B, Tmax) frame-by-query cosines, row b valid in [:lengths[b]]; lengths: int (B,).
    Returns a FusionResult of (B,) arrays; B = 0 gives empty arrays. Computed in float64, returned float32.
    """
    params = FusionParams() if params is None else params
    sims, lengths = _check(sims, lengths)
    if sims.shape[0] == 0:
        return _empty_result()
    h, s, w = kernel_geometry(lengths, params)
    x, mask = _masked_frames(sims, lengths)
    idx = _kernel_index(h, s, w, x.shape[1])
    p, o = _kernel_and_offset_scores(x, mask, idx, 1.0 / params.temperature)
    kernel_ok = np.arange(p.shape[1])[None, :] < w[:, None]
    r_k = p.sum(axis=1) / w  # invalid kernels / offsets hold 0
    r_t = o.sum(axis=1) / h
    best_v = np.where(kernel_ok, p, -np.inf).argmax(axis=1)
    first = best_v * s
    return FusionResult(
        score=(params.gamma_k * r_k + params.gamma_t * r_t).astype(np.float32),
        r_k=r_k.astype(np.float32),
        r_t=r_t.astype(np.float32),
        best_window=pool_max(sims, lengths),
        seg_first=first.astype(np.int64),
        seg_last=(first + h - 1).astype(np.int64),
    )


def rerank_scores(
    mode: str, sims: np.ndarray, lengths: np.ndarray, params: FusionParams | None = None
) -> FusionResult:
    """Rerank scores for ``mode`` in ``RERANK_MODES``: the same FusionResult shape for every mode.

    fusion: ``fuse``. mean: score = r_k = r_t = mean_t s_t; segment = the kernel (H, S from ``params``)
    with the highest mean similarity. max: score = r_k = r_t = max_t s_t; segment = that best frame.
    """
    params = FusionParams() if params is None else params
    if mode == "fusion":
        return fuse(sims, lengths, params)
    if mode not in RERANK_MODES:
        raise UsageError(
            f"rerank_scores (engine/fusion.py): mode must be one of {RERANK_MODES}, got {mode!r}"
        )
    sims, lengths = _check(sims, lengths)
    if sims.shape[0] == 0:
        return _empty_result()
    best = pool_max(sims, lengths)
    if mode == "max":
        frame = argmax_frame(sims, lengths)
        return FusionResult(best, best.copy(), best.copy(), best.copy(), frame, frame.copy())
    mean = pool_mean(sims, lengths)
    h, s, w = kernel_geometry(lengths, params)
    x, _ = _masked_frames(sims, lengths)
    idx = _kernel_index(h, s, w, x.shape[1])
    kernel_mean = x.ravel()[idx].sum(axis=0) / h[:, None]
    kernel_ok = np.arange(kernel_mean.shape[1])[None, :] < w[:, None]
    first = np.where(kernel_ok, kernel_mean, -np.inf).argmax(axis=1) * s
    return FusionResult(
        mean, mean.copy(), mean.copy(), best, first.astype(np.int64), (first + h - 1).astype(np.int64)
    )
