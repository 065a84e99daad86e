"""The demo model's configuration and token batch: plain data shared by the tokenizer (demo.py) and the
torch network (demo_net.py), so neither imports the other's module."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DemoConfig:
    """Architecture, front end and provenance of a demo checkpoint (``config.json``)."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 320
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 8000.0
    dim: int = 128
    audio_width: int = 128
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    n_buckets: int = 4096
    ngram_min: int = 3
    ngram_max: int = 5
    max_tokens: int = 64
    window_s: float = 10.0
    # Provenance, written by scripts/train_demo_model.py.
    model_version: str = "demo-v1"
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DemoConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class TokenBatch:
    """Texts ready for the text tower: ``word_ids`` int64 (n, L) (0 pad, 1 unknown), ``mask`` bool
    (n, L) real tokens, ``ngram_ids`` int64 (total n-grams,), ``ngram_offsets`` int64 (real tokens,):
    where each real token's n-grams start, tokens in row-major order."""

    word_ids: np.ndarray
    mask: np.ndarray
    ngram_ids: np.ndarray
    ngram_offsets: np.ndarray
