"""Small helpers shared by the torch encoder backends (imported only by those backends).

Everything here is deterministic: windows are fitted to the model's length by repeat-padding or by
keeping their start (never a random crop), and the log-mel spectrogram is computed in torch on the
model's device with the same filters and scaling as transformers' ``ClapFeatureExtractor``. Checkpoint
files are read here too (``read_state_dict``): weights_only, one error line naming the file for each way
a file can be wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError, WeightsNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Set to 1 to let torch.load unpickle arbitrary Python objects (only for checkpoint files you trust).
UNSAFE_PICKLE_ENV = "SONGSEEK_UNSAFE_PICKLE"


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


@contextlib.contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Inside: torch's CPU generator seeded with ``seed`` (to build a random model the same way every time);
    after: its state as before. GPU generators are left alone: ``torch.manual_seed`` would reseed them too."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def load_checkpoint(path: str | Path, unsafe: bool = False) -> Any:
    """``torch.load`` of a checkpoint onto the CPU, memory-mapped where the file allows it; pickled Python
    objects only when ``unsafe`` (the caller's explicit opt-in), numpy scalars always (see
    ``_numpy_scalar_globals``). Errors are the caller's to word."""
    import torch  # only the torch backends call this, after they have imported torch themselves

    safe = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    allow = safe(_numpy_scalar_globals()) if safe is not None and not unsafe else contextlib.nullcontext()
    with allow:
        try:
            return torch.load(path, map_location="cpu", weights_only=not unsafe, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=not unsafe)


def _numpy_scalar_globals() -> list[Any]:
    """What weights_only may rebuild besides tensors: numpy scalars and dtypes. Training checkpoints hold
    them in the optimizer state (LAION-CLAP's cosine schedule stores every learning rate as numpy.float64,
    so its released .pt files need this); they are plain numbers, no code. numpy 1 pickles name the
    constructor ``numpy.core.multiarray.scalar``, numpy 2 ``numpy._core.multiarray.scalar``."""
    import torch
    from torch.torch_version import TorchVersion

    try:
        from numpy._core.multiarray import scalar  # numpy 2 (and 1.26's alias of numpy.core)
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    out: list[Any] = [scalar, np.dtype, *{type(np.dtype(c)) for c in ("f8", "f4", "f2", "i8", "i4", "?")}]
    if TorchVersion(torch.__version__) >= "2.6":  # (object, pickled name) pairs need torch 2.6
        own = f"{scalar.__module__}.{scalar.__name__}"
        out += [(scalar, f"numpy.{m}.multiarray.scalar") for m in ("core", "_core")
                if f"numpy.{m}.multiarray.scalar" != own]
    return out


def check_front_end(key: str, value: torch.Tensor, filters: np.ndarray, front_end: str, where: str) -> None:
    """A torchlibrosa STFT or mel weight stored in a checkpoint (``...stft.conv_real/imag.weight``,
    ``...logmel_extractor.melW``). Inference recomputes them, so they must be what songseek computes:
    ``filters`` (n_fft // 2 + 1, n_mels), described by ``front_end``. A model trained with another FFT size,
    sample rate or band edges would otherwise load silently and hear wrongly. Meta tensors: shapes only."""
    import torch

    n_bins = filters.shape[0]
    if key.endswith(".melW"):
        # 1 % of the peak: float rounding passes, a 1 % shift of a band edge (5 %) or another rate does not
        ok = tuple(value.shape) == filters.shape and (value.is_meta or float(
            (value.float() - torch.from_numpy(filters)).abs().max()) <= 0.01 * float(filters.max()))
    else:
        ok = tuple(value.shape) == (n_bins, 1, 2 * (n_bins - 1))
    if not ok:
        raise WeightsNotFoundError(f"{where}: {key} {tuple(value.shape)} is not the audio front end songseek computes "
                                   f"({front_end}); a model trained with other audio settings is not supported")


# Per encoder: the tower prefixes of its checkpoints (``module.`` stripped), by which a file given to another
# encoder is recognised; the model's name; what such a file is; what its user should do.
_FAMILIES = {
    "laion": (("text_branch.", "audio_branch."), "LAION-CLAP", "a LAION-CLAP checkpoint", "use --encoder laion"),
    "msclap": (("caption_encoder.", "audio_encoder."), "MS-CLAP", "an MS-CLAP checkpoint", "use --encoder msclap"),
    "clap": (("text_model.", "audio_model."), "ClapModel", "a transformers ClapModel state dict",
             "use --encoder clap with the model's directory"),
}


def read_state_dict(path: Path, family: str) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file of ``family`` (``laion`` or ``msclap``): under ``state_dict``
    as LAION saves it, ``model`` as msclap does, or bare. Every failure is one WeightsNotFoundError line
    naming the file: unreadable, not a PyTorch file at all, pickled objects that weights_only refuses, no
    tensors, or a checkpoint of another encoder (saying which)."""
    import pickle

    import torch

    _, kind, noun, _ = _FAMILIES[family]
    try:
        obj = load_checkpoint(path, unsafe=os.environ.get(UNSAFE_PICKLE_ENV, "") == "1")
    except pickle.UnpicklingError as exc:
        if not _is_torch_file(path):  # a web page or Git LFS pointer: nothing to trust, a bad download
            raise WeightsNotFoundError(f"cannot read {kind} checkpoint {path}: not a PyTorch checkpoint file "
                                       "(an HTML page or a Git LFS pointer instead of the file?)") from exc
        refused = re.search(r"GLOBAL (\S+)", str(exc))
        if refused:  # a Python object other than tensors, numbers and containers
            raise WeightsNotFoundError(f"{path} holds pickled Python objects ({refused[1]}) that torch.load("
                                       f"weights_only=True) refuses; if you trust the file, set {UNSAFE_PICKLE_ENV}=1"
                                       ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]{1,120})", str(exc))  # e.g. a newer pickle protocol
        raise WeightsNotFoundError(f"{path}: torch.load(weights_only=True) cannot read it ("
                                   f"{detail[1].strip() if detail else 'UnpicklingError'}); if you trust the file, "
                                   f"set {UNSAFE_PICKLE_ENV}=1") from exc
    except Exception as exc:
        raise WeightsNotFoundError(f"cannot read {kind} checkpoint {path} ({type(exc).__name__}): is it a "
                                   "complete file?") from exc
    candidates = [obj.get("state_dict"), obj.get("model"), obj] if isinstance(obj, dict) else []
    sd = next((c for c in candidates if isinstance(c, dict) and c
               and all(isinstance(v, torch.Tensor) for v in c.values())), None)
    if sd is None:
        raise WeightsNotFoundError(f"{path} is not {noun} (no state dict of tensors)")
    keys = [str(k).removeprefix("module.") for k in sd]
    found = [entry for entry in _FAMILIES.values() if any(k.startswith(entry[0]) for k in keys)]
    if found and _FAMILIES[family] not in found:
        raise WeightsNotFoundError(f"{path} is not {noun}: it is {found[0][2]}; {found[0][3]}")
    return sd


def _is_torch_file(path: Path) -> bool:
    """Whether the file starts as torch.save writes: a zip archive, or a pickle (legacy format)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def text_batches(texts: list[str], size: int = 64) -> list[list[str]]:
    """Split texts into consecutive chunks of at most ``size``; rejects non-strings with UsageError."""
    if isinstance(texts, str):
        raise UsageError("embed_text takes a list of strings, not a single string")
    for t in texts:
        if not isinstance(t, str):
            raise UsageError(f"embed_text takes strings, got {type(t).__name__}")
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]
