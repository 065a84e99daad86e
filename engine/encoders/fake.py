"""A deterministic plumbing encoder for tests and smoke runs. Its vectors mean nothing about music.

Audio: log energies of 32 frequency bands of the window, projected by a fixed seeded matrix.
Text: a seeded random vector per word, summed. Same input, same vector, on every machine.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .base import EncoderInfo, l2_normalize

SAMPLE_RATE = 16000
DIM = 32


class FakeEncoder:
    def __init__(self, dim: int = DIM, sample_rate: int = SAMPLE_RATE) -> None:
        self._info = EncoderInfo(name="fake", checkpoint="fake", dim=dim, sample_rate=sample_rate,
                                 random_weights=True)
        self._proj = np.random.default_rng(0).standard_normal((32, dim)).astype(np.float32)

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        windows = np.atleast_2d(np.asarray(windows, dtype=np.float32))
        spec = np.abs(np.fft.rfft(windows, axis=1)) ** 2
        bands = np.array_split(spec, 32, axis=1)
        feats = np.log1p(np.stack([b.sum(axis=1) for b in bands], axis=1)).astype(np.float32)
        feats -= feats.mean(axis=1, keepdims=True)
        return l2_normalize(feats @ self._proj + 1e-3)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._info.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(self._info.dim).astype(np.float32)
        return l2_normalize(out + 1e-6)


def load(checkpoint: str | None, device: str, random_weights: bool) -> FakeEncoder:
    return FakeEncoder()
