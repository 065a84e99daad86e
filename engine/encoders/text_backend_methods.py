"""The TextBackendEncoder methods (engine/encoders/base.py) for an encoder whose text tower runs through a
TextTowerRunner (engine/encoders/text_backend.py): one copy for the clap, laion and demo encoders.

Torch-free at import (the runner's module is only named for typing), so an encoder module can inherit it
without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .onnx_text import TextBackendState, validate_backend

if TYPE_CHECKING:
    from .base import EncoderInfo
    from .text_backend import TextTowerRunner


class RunnerTextBackend:
    """Give ``_text_runner`` (build the runner on first use, set ``_runner``, ask it for ``_text_backend``)
    and ``info``; set ``_text_backend`` and ``_runner = None`` in ``__init__``."""

    _text_backend: str
    _runner: TextTowerRunner | None

    @property
    def info(self) -> EncoderInfo:
        raise NotImplementedError

    def _text_runner(self) -> TextTowerRunner:
        raise NotImplementedError

    def set_text_backend(self, backend: str) -> None:
        """``auto`` (the fastest that passes its checks here), ``torch``, ``onnx`` or ``onnx-int8``;
        resolved on the next text (or ``text_backend_state``)."""
        self._text_backend = validate_backend(backend)
        if self._runner is not None:
            self._runner.request(backend)

    def text_backend_state(self) -> TextBackendState:
        """The text backend in use, resolved now (a first ONNX export takes seconds to a minute)."""
        return self._text_runner().state()

    def text_backend_needs_preparing(self) -> bool:
        """Whether ``text_backend_state`` will export the tower to ONNX or time the backends first (once per
        checkpoint and machine): callers can say so before the wait, and stay quiet when it is cached."""
        return self._text_runner().needs_preparing()

    def text_tower_folder(self) -> str:
        """Where this checkpoint's exported ONNX text towers and backend choice are kept."""
        return self._text_runner().cache_folder()

    def _tokenizer_identity(self) -> str:
        """A hash of the tokenizer where it is not part of the fingerprinted files ('' where it is)."""
        return ""

    def text_cache_key(self) -> str:
        """What text vectors are keyed by: the tower's weights fingerprint, the backend in use and, where the
        tokenizer comes from elsewhere than the weights, the tokenizer."""
        runner = self._text_runner()
        key = f"{self.info.name}:{runner.fingerprint}:{runner.state().backend}"
        tokenizer = self._tokenizer_identity()
        return f"{key}:{tokenizer}" if tokenizer else key
