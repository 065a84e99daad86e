"""``demo``: a small CLAP-shaped model trained offline on songseek's synthetic music, shipped in the package.

It exists so songseek can be demonstrated and tested end to end where no pretrained CLAP checkpoint
can be downloaded. It knows ten synthesised timbres (piano, strings, guitar, bells, synth lead, bass,
drums, noise texture, organ, flute), loudness, density, tempo and mode, and the words the synthetic
captions use for them. **It is not a model of real music**: use ``clap``/``laion``/``msclap`` for that.
docs/demo-model.md has how it was trained and its measured quality.

Audio: 16 kHz mono windows of any length (trained on 10 s) → log-mel (64 bands, 20 ms hop) → 1-D CNN →
mean+max over time → 128-d. Text: lower-cased word tokens (``tokenize``), at most ``max_tokens`` (64)
of them — longer texts are truncated, keeping the first 64 (``count_tokens`` tells how many a text
has) — each embedded as its word vector plus hashed character 3-5-grams (so unseen words still get
a meaningful vector), then a 2-layer transformer and a masked mean.

Files (``engine/encoders/demo_model/`` or any directory given as checkpoint): ``config.json``
(architecture, front end, training-data provenance), ``vocab.json`` (word list), ``model.safetensors``.
"""

from __future__ import annotations

import json
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError, WeightsNotFoundError
from ..hashing import file_sha256
from .base import EncoderInfo, l2_normalize
from .demo_config import DemoConfig, TokenBatch
from .onnx_text import TowerInputs
from .text_backend_methods import RunnerTextBackend

if TYPE_CHECKING:  # pragma: no cover
    from .text_backend import TextTowerRunner  # imports torch: loaded with the model, not with this module

BUNDLED = "bundled:demo-v1"
PACKAGE_DIR = "demo_model"
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "model.safetensors"
PAD, UNK = "<pad>", "<unk>"
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_MIN_SAMPLES_S = 1.0  # shorter windows are repeat-padded to 1 s
_AUDIO_BATCH = 64
_TEXT_BATCH = 256
# The text tower's inputs as the text backends run and export them (TokenBatch's fields, in order).
TEXT_INPUTS = TowerInputs(("word_ids", "mask", "ngram_ids", "ngram_offsets"),
                          {"word_ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                           "ngram_ids": {0: "ngrams"}, "ngram_offsets": {0: "real_tokens"}})


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, inner hyphens and apostrophes kept): every token the
    model could see, before truncation."""
    return _TOKEN_RE.findall(text.lower())


def count_tokens(text: str) -> int:
    """How many tokens ``text`` has; the model reads the first ``max_tokens`` (64) of them."""
    return len(tokenize(text))


@lru_cache(maxsize=65536)
def _ngram_ids(word: str, n_min: int, n_max: int, n_buckets: int) -> tuple[int, ...]:
    w = f"<{word}>"
    grams = [w[i:i + n] for n in range(n_min, n_max + 1) for i in range(len(w) - n + 1)] or [w]
    return tuple(zlib.crc32(g.encode("utf-8")) % n_buckets for g in grams)


class Tokenizer:
    """Word vocabulary plus hashed character n-grams; deterministic, no files beyond ``vocab.json``."""

    def __init__(self, words: list[str], cfg: DemoConfig) -> None:
        if words[:2] != [PAD, UNK]:
            raise ValueError("vocabulary must start with <pad>, <unk>")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(words)}
        self.cfg = cfg

    def encode(self, texts: list[str], length: int | None = None, drop_words: float = 0.0,
               rng: np.random.Generator | None = None) -> TokenBatch:
        """Tokenise and truncate to ``cfg.max_tokens``; pad to ``length`` (default ``max_tokens``).

        ``drop_words`` (training only): probability of replacing a known word by <unk> so the
        n-gram path learns to carry meaning on its own.
        """
        cfg = self.cfg
        length = cfg.max_tokens if length is None else length
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=bool)
        grams: list[int] = []
        offsets: list[int] = []
        for r, text in enumerate(texts):
            toks = tokenize(text)[: min(length, cfg.max_tokens)] or [UNK]
            for c, tok in enumerate(toks):
                wid = self.index.get(tok, 1)
                if drop_words and rng is not None and rng.random() < drop_words:
                    wid = 1
                ids[r, c] = wid
                mask[r, c] = True
                offsets.append(len(grams))
                grams.extend(_ngram_ids(tok, cfg.ngram_min, cfg.ngram_max, cfg.n_buckets))
        return TokenBatch(ids, mask, np.asarray(grams, dtype=np.int64), np.asarray(offsets, dtype=np.int64))


class DemoEncoder(RunnerTextBackend):
    """The demo model behind the Encoder protocol. Deterministic (eval mode, no random crops)."""

    def __init__(self, model: Any, tokenizer: Tokenizer, info: EncoderInfo, device: str) -> None:
        self._model = model.to(device).eval()
        self._tokenizer = tokenizer
        self._info = info
        self._device = device
        self._text_backend = "torch"  # a Library asks for "auto"; plain encoder users opt in
        self._runner: TextTowerRunner | None = None

    @property
    def info(self) -> EncoderInfo:
        return self._info

    @property
    def config(self) -> DemoConfig:
        return self._tokenizer.cfg

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` before truncation (the model reads at most ``info.text_max_tokens``)."""
        return count_tokens(text)

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """windows: float32 (n, samples) mono at 16 kHz, any length. Returns float32 (n, 128), unit rows."""
        import torch

        from ._torch_util import check_windows, fit_windows

        arr = check_windows(windows)
        min_n = int(_MIN_SAMPLES_S * self._info.sample_rate)
        if arr.shape[1] < min_n:
            arr = fit_windows(arr, min_n)
        out = []
        with torch.inference_mode():
            for i in range(0, arr.shape[0], _AUDIO_BATCH):
                x = torch.from_numpy(arr[i:i + _AUDIO_BATCH]).to(self._device)
                out.append(self._model.audio(self._model.mel(x)).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, ...]:
        """The text tower's four inputs, padded to the longest text (at most max_tokens): padding is masked
        out of attention and of the mean, so the vectors equal padding to 64 (tests/engine/test_text_speed.py)
        for less work."""
        longest = max(min(max(count_tokens(t), 1), self._tokenizer.cfg.max_tokens) for t in texts)
        b = self._tokenizer.encode(texts, length=longest)
        return b.word_ids, b.mask, b.ngram_ids, b.ngram_offsets

    def _text_runner(self) -> TextTowerRunner:
        if self._runner is None:
            from .demo_net import TextTowerOnArrays
            from .text_backend import TextTowerRunner

            self._runner = TextTowerRunner(TextTowerOnArrays(self._model.text), self._tokenize, self._device,
                                           self._info.checkpoint_sha256, batch=_TEXT_BATCH, inputs=TEXT_INPUTS)
            self._runner.request(self._text_backend)
        return self._runner

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Returns float32 (len(texts), 128), unit rows. Texts past 64 tokens are truncated."""
        if not texts:
            return np.zeros((0, self._info.dim), np.float32)
        return l2_normalize(self._text_runner().embed(list(texts)))


def bundled_dir() -> Path:
    """The package-data directory holding the shipped checkpoint."""
    from importlib.resources import files

    return Path(str(files("songseek.engine.encoders").joinpath(PACKAGE_DIR)))


def read_checkpoint_dir(root: Path) -> tuple[DemoConfig, list[str]]:
    """Config and vocabulary of a demo checkpoint directory; WeightsNotFoundError when unreadable."""
    try:
        cfg = DemoConfig.from_dict(json.loads((root / CONFIG_FILE).read_text(encoding="utf-8")))
        words = json.loads((root / VOCAB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        raise WeightsNotFoundError(f"demo model files in {root} are missing or unreadable ({exc}); "
                                   "reinstall songseek or pass --checkpoint DIR with config.json, "
                                   "vocab.json and model.safetensors") from None
    if not isinstance(words, list) or words[:2] != [PAD, UNK]:
        raise WeightsNotFoundError(f"{root / VOCAB_FILE} is not a demo vocabulary; reinstall songseek")
    return cfg, words


def load(checkpoint: str | None, device: str = "cpu", random_weights: bool = False) -> DemoEncoder:
    """Build the demo encoder: ``checkpoint`` None or ``bundled:demo-v1`` → the shipped model, a
    directory → that checkpoint. ``random_weights`` keeps the architecture and vocabulary but skips the
    weights (plumbing tests). Raises WeightsNotFoundError for missing or corrupt files."""
    from . import demo_net

    bundled = checkpoint in (None, "", BUNDLED, "bundled", "demo")
    root = bundled_dir() if bundled else Path(str(checkpoint))
    if not bundled and not root.is_dir():
        raise UsageError(f"checkpoint {checkpoint} is not a directory: the demo encoder needs a folder "
                         "with config.json, vocab.json and model.safetensors (or no --checkpoint)")
    cfg, words = read_checkpoint_dir(root)
    from ._torch_util import seeded_cpu_rng

    with seeded_cpu_rng(0):  # random_weights: the same random model on every call
        model = demo_net.DemoCLAP(cfg, len(words))
    sha = ""
    if not random_weights:
        weights = root / WEIGHTS_FILE
        try:
            from safetensors.torch import load_file

            state = load_file(str(weights))
            model.load_state_dict(state, strict=True)
            sha = file_sha256(weights)
        except Exception as exc:  # safetensors raises its own error type for corrupt files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsNotFoundError(f"{weights}: missing or corrupt demo weights ({reason}); reinstall "
                                       "songseek or retrain with python scripts/train_demo_model.py") from None
    info = EncoderInfo(name="demo", checkpoint=BUNDLED if bundled else str(root), dim=cfg.dim,
                       sample_rate=cfg.sample_rate, checkpoint_sha256=sha, random_weights=random_weights,
                       native_window_s=cfg.window_s, text_max_tokens=cfg.max_tokens)
    return DemoEncoder(model, Tokenizer(words, cfg), info, device)
