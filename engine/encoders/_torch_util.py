"""Small helpers shared by the torch encoder backends (imported only by those backends).

Everything here is deterministic: windows are fitted to the model's length by repeat-padding or by
keeping their start (never a random crop), and the log-mel spectrogram is computed in torch on the
model's device with the same filters and scaling as transformers' ``ClapFeatureExtractor``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` set to a true value)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_windows(windows: np.ndarray) -> np.ndarray:
    """Validate audio windows: returns float32 (n, samples), C-contiguous. Raises UsageError otherwise."""
    arr = np.asarray(windows)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UsageError(f"audio windows must be a non-empty (n, samples) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise UsageError(f"audio windows must be floating point in [-1, 1], got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def fit_windows(windows: np.ndarray, n_samples: int, mode: str = "repeatpad") -> np.ndarray:
    """Make every window exactly ``n_samples`` long, deterministically.

    Longer windows keep their first ``n_samples`` samples. Shorter ones are repeated: ``repeatpad``
    (LAION-CLAP) repeats the whole window as many times as fits and zero-pads the rest; ``repeat``
    (MS-CLAP) repeats it past the end and cuts. windows: float32 (n, samples).
    Returns float32 (n, n_samples).
    """
    windows = check_windows(windows)
    length = windows.shape[1]
    if length >= n_samples:
        return np.ascontiguousarray(windows[:, :n_samples])
    if mode == "repeat":
        reps = -(-n_samples // length)
        return np.ascontiguousarray(np.tile(windows, (1, reps))[:, :n_samples])
    if mode != "repeatpad":
        raise ValueError(f"unknown fill mode {mode!r}")
    reps = n_samples // length
    out = np.zeros((windows.shape[0], n_samples), dtype=np.float32)
    out[:, : reps * length] = np.tile(windows, (1, reps))
    return out


def log_mel(
    waveforms: torch.Tensor, mel_filters: np.ndarray, n_fft: int, hop_length: int
) -> torch.Tensor:
    """Log-mel power spectrogram in dB, as ``ClapFeatureExtractor`` computes it, in torch.

    waveforms: float32 (n, samples) on any device. mel_filters: (n_fft // 2 + 1, n_mels), the
    extractor's ``mel_filters`` (HTK, fused models) or ``mel_filters_slaney`` (unfused models).
    Centred frames, reflect padding, periodic Hann window, power 2, 10·log10(max(x, 1e-10)).
    Returns float32 (n, frames, n_mels).
    """
    import torch

    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float32, device=waveforms.device)
    spec = torch.stft(waveforms, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (n, freq, frames)
    filters = torch.as_tensor(np.asarray(mel_filters, dtype=np.float32), device=waveforms.device)
    mel = torch.einsum("nft,fm->ntm", power, filters)
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


def load_checkpoint(path: str | Path, unsafe: bool = False) -> Any:
    """``torch.load`` of a checkpoint onto the CPU, memory-mapped where the file allows it; pickled Python
    objects only when ``unsafe`` (the caller's explicit opt-in). Errors are the caller's to word."""
    import torch  # only the torch backends call this, after they have imported torch themselves

    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=not unsafe)


def text_batches(texts: list[str], size: int = 64) -> list[list[str]]:
    """Split texts into consecutive chunks of at most ``size``; rejects non-strings with UsageError."""
    if isinstance(texts, str):
        raise UsageError("embed_text takes a list of strings, not a single string")
    for t in texts:
        if not isinstance(t, str):
            raise UsageError(f"embed_text takes strings, got {type(t).__name__}")
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]
