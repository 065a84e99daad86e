"""Which engine runs a text tower: torch, or ONNX Runtime in fp32 or int8 (engine/encoders/onnx_text.py).

``TextTowerRunner`` wraps a torch text tower ``tower(*inputs) -> (n, dim)`` and its tokenizer (texts →
those inputs as arrays; by default int64 ids and attention mask, as RoBERTa takes them; the demo tower
takes four). Texts are padded to the longest text of their batch, never to a fixed length: with the
attention mask that gives the same vectors (cosine >= 0.9999, tests/engine/test_text_speed.py) for a
fraction of the work on a short query.

The backend is asked for (``request``) cheaply and resolved on the first text: ``auto`` exports the tower
once per checkpoint, checks and times each backend, and keeps the fastest that passes its checks on this
machine (recorded in the cache folder, so later processes only read it). Anything that stops the ONNX
path (onnxruntime absent, export failure, a GPU device) leaves torch in charge and ``note`` says why in
one line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import onnx_text
from .onnx_text import AUTO, ID_MASK_INPUTS, TextBackendState, TowerInputs

Tokenize = Callable[[list[str]], tuple[np.ndarray, ...]]


class TextTowerRunner:
    """A text tower on torch or ONNX Runtime, chosen per ``request``; thread-safe after resolving."""

    def __init__(self, tower: torch.nn.Module, tokenize: Tokenize, device: str, checkpoint_hash: str = "",
                 batch: int = 64, inputs: TowerInputs = ID_MASK_INPUTS) -> None:
        self._tower = tower.eval()
        self._tokenize = tokenize
        self._inputs = inputs
        self._device = device
        self._checkpoint_hash = checkpoint_hash
        self._batch = batch
        self._requested = AUTO
        self._state: TextBackendState | None = None
        self._session: onnx_text.OnnxTextSession | None = None
        self._fingerprint = ""
        self._lock = threading.Lock()

    # -- identity ----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Hash of the tower's weights (and the checkpoint file's hash where there is one) and of the
        library versions and opset that shape its export (``onnx_text.export_context``)."""
        if not self._fingerprint:
            extra = f"{self._checkpoint_hash}|{onnx_text.export_context(self._tower)}"
            self._fingerprint = onnx_text.weights_fingerprint(self._tower, extra)
        return self._fingerprint

    def cache_folder(self) -> str:
        return str(onnx_text.cache_root() / self.fingerprint)

    # -- backend -----------------------------------------------------------------------------------
    def request(self, backend: str) -> None:
        """Ask for ``auto``, ``torch``, ``onnx`` or ``onnx-int8``; resolved on the next text."""
        onnx_text.validate_backend(backend)
        with self._lock:
            if backend != self._requested:
                self._requested, self._state, self._session = backend, None, None

    def state(self) -> TextBackendState:
        """Resolve the requested backend now (exporting and checking once per checkpoint for auto/onnx)."""
        with self._lock:
            if self._state is None:
                self._state, self._session = self._resolve(self._requested)
            return self._state

    def needs_preparing(self) -> bool:
        """Whether resolving the requested backend exports the tower or times the backends (seconds to a
        minute, once per checkpoint): False once resolved, for torch, off the CPU, without onnxruntime, and
        when this checkpoint's export (and, for auto, the choice for these threads) is already on disk."""
        with self._lock:
            requested, resolved = self._requested, self._state is not None
        if resolved or requested == "torch" or not self._device.startswith("cpu") or onnx_text.missing_reason():
            return False
        folder = onnx_text.cache_root() / self.fingerprint
        if not ((folder / onnx_text.FP32_FILE).exists() and (folder / onnx_text.INT8_FILE).exists()):
            return True
        return requested == AUTO and onnx_text.read_choice(folder, torch.get_num_threads()) is None

    def _resolve(self, requested: str) -> tuple[TextBackendState, onnx_text.OnnxTextSession | None]:
        if requested == "torch":
            return TextBackendState("torch", requested), None
        if not self._device.startswith("cpu"):
            note = "" if requested == AUTO else f"the ONNX text path runs on the CPU only; {self._device} uses torch"
            return TextBackendState("torch", requested, note), None
        missing = onnx_text.missing_reason()
        if missing:
            return TextBackendState("torch", requested, missing), None
        folder = onnx_text.cache_root() / self.fingerprint
        cached = any((folder / name).exists() for name in (onnx_text.FP32_FILE, onnx_text.INT8_FILE))
        try:
            try:
                return self._resolve_onnx(requested, folder)
            except Exception:
                # A cached model that will not load or quantise (truncated copy, disk trouble): export afresh
                # once, rather than fall back to torch on every run until someone deletes the folder. A fresh
                # export that fails is not retried.
                if not cached:
                    raise
                onnx_text.remove_models(folder)
                return self._resolve_onnx(requested, folder)
        except Exception as exc:  # export/quantise/load errors of any kind: the torch path still works
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            note = f"ONNX text path unavailable ({type(exc).__name__}: {first}); text queries use torch"
            return TextBackendState("torch", requested, note), None

    def _resolve_onnx(self, requested: str, folder: Path
                      ) -> tuple[TextBackendState, onnx_text.OnnxTextSession | None]:
        onnx_text.export_text_tower(self._tower, self._tokenize(["music", "a calm piano piece with strings"]),
                                    folder, self._inputs)
        threads = torch.get_num_threads()
        paths = {"onnx": folder / onnx_text.FP32_FILE, "onnx-int8": folder / onnx_text.INT8_FILE}
        if requested != AUTO:
            return TextBackendState(requested, requested), onnx_text.OnnxTextSession(paths[requested], threads)
        choice = onnx_text.read_choice(folder, threads)
        sessions = {} if choice is None or choice.chosen == "torch" else {
            choice.chosen: onnx_text.OnnxTextSession(paths[choice.chosen], threads)}
        if choice is None:
            candidates = onnx_text.auto_candidates(folder)  # reads the saved ranking check once
            sessions = {name: onnx_text.OnnxTextSession(p, threads) for name, p in paths.items()
                        if name in candidates}
            runners: dict[str, Callable[[list[str]], np.ndarray]] = {"torch": self._run_torch}
            for name, sess in sessions.items():
                runners[name] = sess.run_texts(self._tokenize)
            choice = onnx_text.choose_backend(runners, threads)
            onnx_text.write_choice(folder, choice)
        return TextBackendState(choice.chosen, requested, "", choice), sessions.get(choice.chosen)

    # -- running -----------------------------------------------------------------------------------
    def _run_torch(self, texts: list[str]) -> np.ndarray:
        inputs = [torch.from_numpy(a).to(self._device) for a in self._tokenize(texts)]
        with torch.inference_mode():
            out = self._tower(*inputs)
        return out.float().cpu().numpy()

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), dim), NOT normalised, in batches of ``batch`` texts each padded to its
        longest text, on the resolved backend."""
        self.state()
        session = self._session
        step = 1 if session is not None and session.one_text_per_run else self._batch
        out = []
        for i in range(0, len(texts), step):
            chunk = texts[i:i + step]
            if session is None:
                out.append(self._run_torch(chunk))
            else:
                out.append(session.run(*self._tokenize(chunk)))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
