"""Device choice happens here, once, and is passed in to whatever needs it."""

from __future__ import annotations

from .errors import UsageError


def resolve_device(requested: str = "auto") -> str:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` to a torch device string that exists here."""
    requested = (requested or "auto").lower()
    if requested == "cpu":  # no torch import: it costs seconds at every CLI start
        return "cpu"
    try:
        import torch
    except ImportError:  # torch-free installs (precomputed vectors) only ever use the CPU
        if requested in ("auto", "cpu"):
            return "cpu"
        raise UsageError(f"device {requested} needs torch installed") from None
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {requested} was asked for but CUDA is not available here; use device cpu")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise UsageError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps")
    return requested


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    try:
        import faiss
    except ImportError:
        return False
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus and get_num_gpus() > 0)
