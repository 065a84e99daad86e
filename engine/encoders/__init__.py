"""Encoder registry: backends by name, each imported only when asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..device import resolve_device
from ..errors import UsageError
from .base import Encoder, EncoderInfo, l2_normalize

# name -> (module, attribute); each loader is ``load(checkpoint, device, random_weights) -> Encoder``.
_BACKENDS: dict[str, tuple[str, str]] = {
    "clap": ("songseek.engine.encoders.clap_hf", "load"),
    "laion": ("songseek.engine.encoders.laion_pt", "load"),
    "msclap": ("songseek.engine.encoders.msclap_backend", "load"),
    "demo": ("songseek.engine.encoders.demo", "load"),
    "fake": ("songseek.engine.encoders.fake", "load"),
}
_EXTRA: dict[str, Callable[..., Encoder]] = {}

# What `songseek index` uses when no --encoder is given (see docs/encoders.md for why).
DEFAULT_ENCODER = "laion"


def register_encoder(name: str, loader: Callable[..., Encoder]) -> None:
    """Add a backend at run time (plugins, tests): ``loader(checkpoint, device, random_weights)``."""
    _EXTRA[name] = loader


def encoder_names() -> list[str]:
    return sorted({*_BACKENDS, *_EXTRA})


def load_encoder(
    name: str, checkpoint: str | None = None, device: str = "cpu", random_weights: bool = False
) -> Encoder:
    """Build the named encoder. Raises UsageError for an unknown name, WeightsNotFoundError when
    the checkpoint cannot be found, MissingDependencyError when its extra is not installed."""
    if name in _EXTRA:
        return _EXTRA[name](checkpoint, device, random_weights)
    if name not in _BACKENDS:
        raise UsageError(f"unknown encoder {name!r}: choose one of {', '.join(encoder_names())}")
    module, attr = _BACKENDS[name]
    loader = getattr(importlib.import_module(module), attr)
    # a device torch does not know (or CUDA absent): UsageError in one line, not torch's own errors
    return loader(checkpoint, resolve_device(device), random_weights)


__all__ = ["DEFAULT_ENCODER", "Encoder", "EncoderInfo", "encoder_names", "l2_normalize", "load_encoder",
           "register_encoder"]
