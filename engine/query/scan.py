"""The exact path's first pass: every frame as int8 codes with a per-row scale, scored against a query by
one memory-bound kernel, with a proven bound (``margin``) on how far each score can be from the real
dot product. The caller re-scores in float32 every frame that the bound cannot rule out, so the answer is
exactly float32 brute force's while reading a quarter of the bytes (docs/performance.md).

The kernel is torch's ``_weight_int8pack_mm`` (int8 rows × bfloat16 query, float32 accumulation, per-row
scale, bfloat16 out), the one behind torch's int8 weight-only quantisation. It is a private op, and on
torch 2.13 CPU it returns garbage for many row lengths that are not a multiple of 32 (dims 1-7, 9-11, ...;
dim 100 in some runs and not others, as if it read past the row), so rows are zero-padded to a multiple
of 64 and every build checks the kernel against float64 on a sample; where the op is missing or fails
the check, ``build_scanner`` returns None and the caller scans float32.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PAD = 64             # rows are zero-padded to a multiple of this (see the module docstring)
BF16_U = 2.0 ** -8   # unit roundoff of bfloat16 (8 significant bits): |x - bf16(x)| <= 2^-8 |x|
F32_U = 2.0 ** -24


def _torch() -> Any:
    import torch

    return torch


def _read_only_tensor(a: np.ndarray) -> Any:
    """A torch view of a (possibly read-only, memory-mapped) array that is only ever read."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not writable": nothing here writes to it
        return _torch().from_numpy(a)


def _gamma(n: int) -> float:
    """Higham's γ_n for float32: bound on the relative error of an n-term dot product, any order."""
    return n * F32_U / (1 - n * F32_U)


def int8_margin(q: np.ndarray, q_bf16: np.ndarray, max_err: float, max_norm: float, dim: int) -> float:
    """A bound on |kernel score − float32 score| for every row, for this query.

    With v̂ = s·c the stored row (exact in float32: an 8-bit scale times a 7-bit code) and q' = bf16(q):
      |q·v − q·v̂|       ≤ ‖q‖ · max‖v − v̂‖                  (Cauchy–Schwarz; max_err measured at build)
      |q·v̂ − q'·v̂|      ≤ ‖q − q'‖ · max‖v̂‖
      float32 sum        ≤ γ_d · Σ|q'_j v̂_j| ≤ γ_d ‖q'‖ max‖v̂‖
      bfloat16 output    ≤ 2^-8 · |y| ≤ 2^-8 (1 + γ_d) ‖q'‖ max‖v̂‖
      float32 re-score   ≤ γ_d ‖q‖ ‖v‖, the float32 brute force the answer must equal
    ``max_norm`` bounds both ‖v‖ and ‖v̂‖; the sum is padded by 1 % and 1e-6 against rounding in this sum.
    """
    qn = float(np.linalg.norm(q.astype(np.float64)))
    qbn = float(np.linalg.norm(q_bf16.astype(np.float64)))
    dq = float(np.linalg.norm(q.astype(np.float64) - q_bf16.astype(np.float64)))
    g = _gamma(dim)
    m = (qn * max_err + dq * max_norm + g * qbn * max_norm + BF16_U * (1 + g) * qbn * max_norm
         + g * qn * max_norm)
    return 1.01 * m + 1e-6


class Int8Scanner:
    """Every frame as int8 codes (dim bytes a frame) + a bfloat16-exact float32 scale per frame."""

    def __init__(self, shards: list[np.ndarray], batch: int = 65536) -> None:
        torch = _torch()
        self.dim = int(shards[0].shape[1]) if shards else 0
        self.width = max(PAD, math.ceil(self.dim / PAD) * PAD)
        n = sum(len(v) for v in shards)
        self.codes = torch.zeros((n, self.width), dtype=torch.int8)
        scales = torch.empty(n, dtype=torch.float32)
        max_err, max_norm, row = 0.0, 0.0, 0
        # Two work buffers reused across batches: fresh temporaries cost a page fault per 4 kB each time.
        work = torch.empty((min(batch, n), self.dim), dtype=torch.float32)
        hat = torch.empty_like(work)
        for vecs in shards:
            for i in range(0, len(vecs), batch):
                b = _read_only_tensor(np.ascontiguousarray(vecs[i:i + batch], dtype=np.float32))
                k = len(b)
                if not k:
                    continue
                c, v_hat = work[:k], hat[:k]
                # Scale so the largest component maps to ±127, rounded to a bfloat16 value (what the
                # kernel reads), never to zero. Any rounding of the codes is fine: the error is measured.
                lo, hi = torch.aminmax(b, dim=1)
                sc = (torch.maximum(hi, -lo) / 127).bfloat16().float().clamp_min(2.0 ** -126)
                torch.div(b, sc[:, None], out=c).round_().clamp_(-127, 127)
                torch.mul(c, sc[:, None], out=v_hat)  # exact in float32: 8-bit scale × 7-bit code
                self.codes[row:row + k, :self.dim].copy_(c)
                scales[row:row + k] = sc
                # float32 norms are within γ_{d+1} (relative) of the real ones: padded by 1e-4 to be bounds.
                norm = max(torch.linalg.vector_norm(v_hat, dim=1).max().item(),
                           torch.linalg.vector_norm(b, dim=1).max().item()) * (1 + 1e-4)
                err = torch.linalg.vector_norm(v_hat.sub_(b), dim=1).max().item() * (1 + 1e-4)
                max_err, max_norm = max(max_err, err), max(max_norm, norm)
                row += k
        self.scales = scales.bfloat16()  # exact: every scale is a bfloat16 value already
        self.max_err, self.max_norm = max_err, max_norm
        self._lock = threading.Lock()

    @property
    def ntotal(self) -> int:
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        return self.ntotal * (self.width + 2)

    def scores(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        """float32 (ntotal,) approximate q·v for every row, and the bound on their error (``int8_margin``)."""
        torch = _torch()
        qp = np.zeros(self.width, np.float32)
        qp[:self.dim] = q
        qb = torch.from_numpy(qp)[None].bfloat16()
        with self._lock:  # the op is thread-safe, but two concurrent scans only fight for memory bandwidth
            out = torch.ops.aten._weight_int8pack_mm(qb, self.codes, self.scales)[0]
        approx = out.float().numpy()
        return approx, int8_margin(qp, qb[0].float().numpy(), self.max_err, self.max_norm, self.dim)

    def check(self, shards: list[np.ndarray], seed: int = 0, sample: int = 4096) -> str | None:
        """None when the kernel's scores stay within the margin of float64 ones on sampled rows, for a
        random query and for stored rows as queries (scores near ±1 test the output rounding); else why."""
        if self.ntotal == 0:
            return None
        rng = np.random.default_rng(seed)
        rows = np.unique(rng.integers(0, self.ntotal, min(sample, self.ntotal)))
        offsets = np.cumsum([0] + [len(v) for v in shards])
        shard = np.searchsorted(offsets, rows, side="right") - 1
        exact = np.stack([np.asarray(shards[s][r - offsets[s]], np.float64) for s, r in zip(shard, rows)])
        for q in (rng.standard_normal(self.dim), exact[0], -exact[-1]):
            q = (q / max(float(np.linalg.norm(q)), 1e-12)).astype(np.float32)
            approx, margin = self.scores(q)
            err = float(np.abs(approx[rows].astype(np.float64) - exact @ q.astype(np.float64)).max())
            if not err <= margin:
                return f"int8 kernel error {err:.3g} exceeds its bound {margin:.3g}"
        return None


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can take without swapping (Linux MemAvailable); else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def build_scanner(shards: list[np.ndarray]) -> Int8Scanner | None:
    """An ``Int8Scanner`` over the shards, or None (and a log line) where this torch cannot run one right
    or the copy would take more than half the memory still available (the float32 scan needs none)."""
    try:
        n = sum(len(v) for v in shards)
        dim = int(shards[0].shape[1]) if shards else 0
        need = n * (max(PAD, math.ceil(dim / PAD) * PAD) + 8)  # codes + scales while building
        free = available_memory()
        if free is not None and need > free // 2:
            raise RuntimeError(f"its {need / 2**30:.1f} GiB would take more than half of the "
                               f"{free / 2**30:.1f} GiB of memory available")
        torch = _torch()
        if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
            raise RuntimeError(f"torch {torch.__version__} has no _weight_int8pack_mm")
        scanner = Int8Scanner(shards)
        problem = scanner.check(shards)
    except (ImportError, RuntimeError) as err:
        problem = str(err)
    if problem:
        log.warning("exact path: the int8 first pass is off (%s); scanning float32 instead", problem)
        return None
    return scanner
