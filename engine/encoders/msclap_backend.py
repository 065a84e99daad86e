"""``msclap``: Microsoft CLAP 2023 (HTSAT + GPT-2, 1024-d, 44.1 kHz, 7 s), native, no ``msclap`` package.

Weights: a local ``CLAP_weights_2023.pth`` (https://huggingface.co/microsoft/msclap) given as the
checkpoint, read with ``torch.load(weights_only=True)`` and mapped key by key (``msclap_weights``) into
a model built from transformers' ClapAudioModel and GPT2Model (``msclap_model``). Texts need GPT-2's
tokenizer files (``gpt2_tokenizer``), looked for at the first text query, so indexing audio never does.

Determinism: msclap takes a random 7 s crop of a longer file; here each window is cut to its first 7 s,
or repeated to 7 s when shorter (msclap's own fill for short clips). The model runs in eval mode.
With ``random_weights`` the architecture is seeded (CPU generator, seed 0), nothing is downloaded,
and texts use the GPT-2 tokenizer if one is on the machine, else the byte-level stand-in
(``gpt2_tokenizer.byte_tokenizer``); ``tokenizer_source`` says which. A ``checkpoint`` given with
``random_weights`` is not read at all (the 2023 architecture is fixed, and its tokenizer is not looked
for beside it): the encoder records ``checkpoint="msclap-2023"``, never the file it did not use, so a
library built so is reopened (``load_encoder(info.name, info.checkpoint, ..., True)``) with the same
encoder whether or not that file still exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError, WeightsNotFoundError
from ..hashing import file_sha256
from ._torch_util import fit_windows, text_batches
from .base import EncoderInfo, l2_normalize
from .gpt2_tokenizer import (
    BYTE_TOKENIZER,
    MAX_TOKENS,
    TOKENIZER_ENV,
    byte_tokenizer,
    find_gpt2_tokenizer,
    tokenize,
    with_pad_token,
)
from .msclap_model import DIM, N_SAMPLES, SAMPLE_RATE, WINDOW_S, MsClapModel, random_model
from .msclap_weights import load_model

VERSION = "2023"
RANDOM_CHECKPOINT = f"msclap-{VERSION}"  # EncoderInfo.checkpoint of random weights: no file was read
TEXT_BATCH = 64
WEIGHTS_URL = "https://huggingface.co/microsoft/msclap"


class MsClapEncoder:
    """An MsClapModel behind the Encoder protocol. ``checkpoint`` is the .pth the weights came from (None
    for random weights); the tokenizer is resolved on the first ``embed_text``."""

    def __init__(self, model: MsClapModel, info: EncoderInfo, device: str, checkpoint: Path | None) -> None:
        self._model = model.to(device).eval()
        self._device = device
        self._info = info
        self._checkpoint = checkpoint
        self._tokenizer: Any = None
        self.tokenizer_source = ""  # where the tokenizer came from, once one is resolved

    @property
    def info(self) -> EncoderInfo:
        return self._info

    @property
    def model(self) -> MsClapModel:
        return self._model

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """windows: float32 (n, samples) mono at 44.1 kHz. Returns float32 (n, 1024), unit rows."""
        fitted = fit_windows(windows, N_SAMPLES, mode="repeat")
        with torch.inference_mode():
            emb = self._model.embed_audio(torch.from_numpy(fitted).to(self._device))
        return l2_normalize(emb.float().cpu().numpy())

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Returns float32 (len(texts), 1024), unit rows. As msclap, texts past 77 tokens are read whole
        (up to GPT-2's 1024 positions), end marker included (``gpt2_tokenizer``)."""
        batches = text_batches(texts, TEXT_BATCH)
        if not batches:
            return np.zeros((0, DIM), dtype=np.float32)
        tokenizer = self._get_tokenizer()
        out = []
        with torch.inference_mode():
            for batch in batches:
                ids, mask = tokenize(tokenizer, batch)
                emb = self._model.embed_text(ids.to(self._device), mask.to(self._device))
                out.append(emb.float().cpu().numpy())
        return l2_normalize(np.concatenate(out, axis=0))

    def set_tokenizer(self, tokenizer: Any, source: str) -> None:
        """Use this tokenizer for texts (GPT-2's ids: '!' = 0, <|endoftext|> = 50256) instead of looking one up;
        a copy of it with '!' registered as the pad token, as msclap does (``tokenizer`` is not changed)."""
        self._tokenizer, self.tokenizer_source = with_pad_token(tokenizer), source

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is not None:
            return self._tokenizer
        random = self._info.random_weights
        found = find_gpt2_tokenizer(self._checkpoint, allow_download=not random)
        if found is not None:
            self._tokenizer, self.tokenizer_source = with_pad_token(found[0], in_place=True), found[1]
        elif random:  # plumbing runs need some tokenizer; their vectors mean nothing anyway
            self._tokenizer, self.tokenizer_source = with_pad_token(byte_tokenizer(), in_place=True), BYTE_TOKENIZER
        else:  # exit code 2, as laion's and clap's missing tokenizer
            raise WeightsNotFoundError(
                "MS-CLAP text search needs the GPT-2 tokenizer files (vocab.json + merges.txt or tokenizer.json "
                f"of gpt2): set {TOKENIZER_ENV}=DIR, put them beside the checkpoint, or have gpt2 in the "
                "Hugging Face cache")
        return self._tokenizer


def resolve_checkpoint(checkpoint: str | None) -> Path:
    """The local .pth file, or WeightsNotFoundError (one line) saying where to get it."""
    path = Path(checkpoint).expanduser() if checkpoint else None
    if path is not None and path.is_dir():
        raise UsageError(f"--checkpoint {checkpoint} is a directory; the msclap encoder takes the file "
                         f"CLAP_weights_{VERSION}.pth")
    if path is None or not path.is_file():
        what = f"{checkpoint} does not exist" if checkpoint else "no checkpoint was given"
        raise WeightsNotFoundError(f"MS-CLAP weights not found ({what}): download CLAP_weights_{VERSION}.pth "
                                   f"from {WEIGHTS_URL} and pass --checkpoint PATH")
    return path


def load(checkpoint: str | None, device: str, random_weights: bool) -> MsClapEncoder:
    """Build the ``msclap`` encoder from a local CLAP_weights_2023.pth, or the architecture with seeded
    random weights (``checkpoint`` is then ignored and recorded as ``msclap-2023``: see the module
    docstring). Raises WeightsNotFoundError when the file is missing or is not MS-CLAP 2023."""
    path: Path | None
    if random_weights:
        model, label, sha, path = random_model(0), RANDOM_CHECKPOINT, "", None
    else:
        path = resolve_checkpoint(checkpoint)
        model, label, sha = load_model(path), str(path), file_sha256(path)
    info = EncoderInfo(name="msclap", checkpoint=label, dim=DIM, sample_rate=SAMPLE_RATE, checkpoint_sha256=sha,
                       random_weights=random_weights, native_window_s=float(WINDOW_S), text_max_tokens=MAX_TOKENS)
    return MsClapEncoder(model, info, device, path)
