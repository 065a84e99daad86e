"""``msclap``: Microsoft CLAP 2023 (HTSAT + GPT-2, 1024-d, 44.1 kHz, 7 s) via the ``msclap`` package.

Install with ``pip install 'songseek[msclap]'``. That package pins numpy<2 and transformers<5 and pulls
librosa, torchaudio, pandas and scikit-learn, so pip will downgrade numpy and transformers in the same
environment (songseek's own code works with transformers 4.40+); a separate virtual environment for
MS-CLAP indexing is the tidy choice.

Weights: a LOCAL ``CLAP_weights_2023.pth`` given by ``--checkpoint`` (from
https://huggingface.co/microsoft/msclap). The package's constructor also loads GPT-2 (``gpt2``: model
and tokenizer) with ``from_pretrained``, i.e. from the Hugging Face cache or, online, the hub; fully
offline it works only when ``gpt2`` is already cached (then set HF_HUB_OFFLINE=1).

Determinism: msclap itself takes a random 7 s crop of longer files; here the caller's windows are used
as they are, cut to their first 7 s or repeated to 7 s (msclap's own fill for short clips), and the
model runs in eval mode, where its HTSAT has no random step. Texts get msclap's `` <|endoftext|>``
suffix and are padded (and, unlike msclap, truncated) to 77 tokens.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SongseekError, WeightsNotFoundError, require
from ._torch_util import fit_windows, offline, sha256_file, text_batches
from .base import EncoderInfo, l2_normalize

VERSION = "2023"
SAMPLE_RATE = 44100
WINDOW_S = 7
DIM = 1024
TEXT_MAX_TOKENS = 77
TEXT_BATCH = 64
WEIGHTS_URL = "https://huggingface.co/microsoft/msclap"
# The model arguments of msclap's configs/config_2023.yml (used to build random-weight models).
CONFIG_2023 = dict(audioenc_name="HTSAT", sample_rate=44100, window_size=1024, hop_size=320, mel_bins=64,
                   fmin=50, fmax=8000, classes_num=527, out_emb=768, text_model="gpt2",
                   transformer_embed_dim=768, d_proj=1024)


class MsClapEncoder:
    """An msclap ``CLAP`` model (``.audio_encoder``, ``.caption_encoder``) behind the Encoder protocol."""

    def __init__(self, clap: Any, tokenizer: Any, info: EncoderInfo, device: str) -> None:
        self._clap = clap.to(device).eval()
        self._tokenizer = tokenizer
        self._device = device
        self._info = info

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """windows: float32 (n, samples) mono at 44.1 kHz. Returns float32 (n, 1024), unit rows."""
        fitted = fit_windows(windows, SAMPLE_RATE * WINDOW_S, mode="repeat")
        with torch.inference_mode():
            emb = self._clap.audio_encoder(torch.from_numpy(fitted).to(self._device))[0]
        return l2_normalize(emb.float().cpu().numpy())

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Returns float32 (len(texts), 1024), unit rows."""
        batches = text_batches(texts, TEXT_BATCH)
        if not batches:
            return np.zeros((0, DIM), dtype=np.float32)
        if self._tokenizer is None:
            raise SongseekError("MS-CLAP text search needs the GPT-2 tokenizer ('gpt2') in the Hugging Face "
                                "cache: run once online or unset HF_HUB_OFFLINE")
        out = []
        with torch.inference_mode():
            for batch in batches:
                tok = self._tokenizer([t + " <|endoftext|>" for t in batch], max_length=TEXT_MAX_TOKENS,
                                      padding="max_length", truncation=True, return_tensors="pt")
                inputs = {k: tok[k].to(self._device) for k in ("input_ids", "attention_mask")}
                out.append(self._clap.caption_encoder(inputs).float().cpu().numpy())
        return l2_normalize(np.concatenate(out, axis=0))


def _gpt2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained("gpt2", local_files_only=offline())
    except Exception:
        return None
    tok.add_special_tokens({"pad_token": "!"})  # what msclap does
    return tok


def _random_clap(msclap: Any) -> Any:
    """msclap's CLAP architecture with seeded random weights; GPT-2 built from GPT2Config (no download)."""
    from transformers import AutoModel, GPT2Config

    clap_module = msclap.models.clap

    class _ConfigOnly:
        @staticmethod
        def from_pretrained(name: str, *args: Any, **kwargs: Any) -> Any:
            return AutoModel.from_config(GPT2Config())

    original = clap_module.AutoModel
    state = torch.random.get_rng_state()
    try:
        clap_module.AutoModel = _ConfigOnly
        torch.manual_seed(0)
        return clap_module.CLAP(**CONFIG_2023)
    finally:
        clap_module.AutoModel = original
        torch.random.set_rng_state(state)


def load(checkpoint: str | None, device: str, random_weights: bool) -> MsClapEncoder:
    """Build the ``msclap`` encoder from a local CLAP_weights_2023.pth. Raises MissingDependencyError
    without the msclap package, WeightsNotFoundError without the file (or GPT-2 offline)."""
    msclap: Any = require("msclap", "msclap")
    path = Path(checkpoint).expanduser() if checkpoint else None
    sha = ""
    if random_weights:
        importlib.import_module("msclap.models.clap")  # makes msclap.models.clap an attribute
        clap, tokenizer = _random_clap(msclap), _gpt2_tokenizer()
        name = str(path) if path else f"msclap-{VERSION}"
    else:
        if path is None or not path.is_file():
            what = f"{checkpoint} does not exist" if checkpoint else "no --checkpoint was given"
            raise WeightsNotFoundError(f"MS-CLAP weights not found ({what}): download CLAP_weights_"
                                       f"{VERSION}.pth from {WEIGHTS_URL} and pass --checkpoint PATH")
        try:
            wrapper = msclap.CLAP(model_fp=str(path), version=VERSION, use_cuda=False)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:120]
            raise WeightsNotFoundError(
                f"cannot build MS-CLAP from {path} ({type(exc).__name__}: {first}); msclap also needs "
                "GPT-2 ('gpt2') from the Hugging Face cache or hub: run once online or unset HF_HUB_OFFLINE"
            ) from exc
        clap, tokenizer, name, sha = wrapper.clap, wrapper.tokenizer, str(path), sha256_file(path)
    info = EncoderInfo(name="msclap", checkpoint=name, dim=DIM, sample_rate=SAMPLE_RATE,
                       checkpoint_sha256=sha, random_weights=random_weights,
                       native_window_s=float(WINDOW_S), text_max_tokens=TEXT_MAX_TOKENS)
    return MsClapEncoder(clap, tokenizer, info, device)
