"""The Encoder protocol every backend implements, and the facts about it that a library records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .onnx_text import TextBackendState


@dataclass(frozen=True)
class EncoderInfo:
    """What a library's manifest records about the encoder that made its vectors.

    ``name`` is the registry name (``clap``, ``laion``, ``msclap``, ``demo``, ``precomputed``, ...),
    ``checkpoint`` the HF id, directory or file it was loaded from, ``checkpoint_sha256`` the file's
    hash where it is one file (else ""), ``random_weights`` True when the weights were random.
    """

    name: str
    checkpoint: str
    dim: int
    sample_rate: int
    checkpoint_sha256: str = ""
    random_weights: bool = False
    # Longest window the model sees natively in seconds (0 = any); informs the default window.
    native_window_s: float = 0.0
    text_max_tokens: int = 0


@runtime_checkable
class Encoder(Protocol):
    """A CLAP-family model: audio windows and texts into one unit-norm vector space.

    Implementations load lazily, run on the device they were built for, and are deterministic:
    the same window gives the same vector on every call (no random crops).
    """

    @property
    def info(self) -> EncoderInfo: ...

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """windows: float32 (n, samples) mono at ``info.sample_rate``. Returns float32 (n, dim), unit rows."""
        ...

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Returns float32 (len(texts), dim), unit rows."""
        ...


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 unit rows of finite float64 rows with no all-zero row, exact at any magnitude: each row is
    scaled to a peak of 1 before its norm (the squares of values past ~1e154 overflow float64, and those
    below ~1e-154 underflow to zero). Vectors users bring (ingest, query vectors) go through here."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.abs(x).max(axis=1, keepdims=True)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


@runtime_checkable
class TextBackendEncoder(Protocol):
    """An encoder whose text tower can run on torch or ONNX Runtime (clap, laion, demo)."""

    def set_text_backend(self, backend: str) -> None:
        """``auto``, ``torch``, ``onnx`` or ``onnx-int8``; resolved on the next text."""
        ...

    def text_backend_state(self) -> TextBackendState:
        """The backend in use, resolved now (a first ONNX export can take a minute)."""
        ...

    def text_backend_needs_preparing(self) -> bool:
        """Whether ``text_backend_state`` will first export the tower to ONNX or time the backends."""
        ...

    def text_cache_key(self) -> str:
        """The weights' fingerprint and the backend: what cached text vectors are keyed by."""
        ...

    def text_tower_folder(self) -> str:
        """Where this checkpoint's exported ONNX text towers and backend choice are kept."""
        ...
