"""The ``demo`` model's networks (torch): a log-mel front end, a 1-D CNN audio tower and a small
transformer text tower over word + hashed character n-gram embeddings. Imported only by
``demo.load`` and the training script, never at ``songseek.engine`` import.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .demo_config import TokenBatch

if TYPE_CHECKING:  # pragma: no cover
    from .demo_config import DemoConfig


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular filters on the HTK mel scale, peak 1: float32 (n_fft // 2 + 1, n_mels)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_mel = np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None, :]) / np.maximum(hi - mid, 1e-9)
    return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


class LogMel(nn.Module):
    """Waveforms float32 (n, samples) → log-mel power in dB, float32 (n, n_mels, frames).

    Centred frames with zero padding (so any length >= 1 sample works), periodic Hann window,
    10·log10(max(mel, 1e-10)).
    """

    window: torch.Tensor
    filters: torch.Tensor

    def __init__(self, cfg: DemoConfig) -> None:
        super().__init__()
        self.n_fft = cfg.n_fft
        self.hop = cfg.hop
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer("filters", torch.from_numpy(fb), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wave, n_fft=self.n_fft, hop_length=self.hop, win_length=self.n_fft,
                          window=self.window, center=True, pad_mode="constant", return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (n, freq, frames)
        mel = torch.einsum("nft,fm->nmt", power, self.filters)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


def _block(c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation),
            nn.BatchNorm1d(c_out), nn.GELU()]


class AudioTower(nn.Module):
    """Standardised log-mel (n, n_mels, frames) → (n, dim): 1-D convolutions over time with the mel
    bands as channels (160 ms steps, receptive field about 2.7 s), then mean and max over time and an MLP."""

    mel_mean: torch.Tensor
    mel_std: torch.Tensor

    def __init__(self, cfg: DemoConfig) -> None:
        super().__init__()
        w = cfg.audio_width
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        self.convs = nn.Sequential(
            *_block(cfg.n_mels, w, 5, stride=2), *_block(w, w, 3, stride=2), *_block(w, w + 32, 3, stride=2),
            *_block(w + 32, w + 64, 3, dilation=2), *_block(w + 64, 2 * w, 3, stride=2),
            *_block(2 * w, 2 * w, 3, dilation=2),
        )
        self.head = nn.Sequential(nn.Linear(4 * w, 2 * w), nn.GELU(), nn.Linear(2 * w, cfg.dim))

    def forward(self, mel_db: torch.Tensor) -> torch.Tensor:
        x = (mel_db - self.mel_mean[None, :, None]) / self.mel_std[None, :, None]
        h = self.convs(x)
        return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


class TextTower(nn.Module):
    """Token ids → (n, dim). Each token is its word embedding (id 1 = unknown word) plus the mean of its
    hashed character n-gram embeddings, so unseen words still land near their spelling neighbours;
    then learned positions, a small transformer encoder and a masked mean."""

    def __init__(self, cfg: DemoConfig, vocab_size: int) -> None:
        super().__init__()
        d = cfg.text_width
        self.words = nn.Embedding(vocab_size, d, padding_idx=0)
        self.ngrams = nn.EmbeddingBag(cfg.n_buckets, d, mode="mean")
        self.positions = nn.Embedding(cfg.max_tokens, d)
        layer = nn.TransformerEncoderLayer(d, cfg.text_heads, 2 * d, dropout=0.1, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.proj = nn.Linear(d, cfg.dim)
        nn.init.normal_(self.words.weight, std=0.1)
        nn.init.normal_(self.ngrams.weight, std=0.1)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.words.weight[0].zero_()

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        word_ids = torch.as_tensor(batch.word_ids)
        mask = torch.as_tensor(batch.mask)
        device = self.proj.weight.device
        word_ids, mask = word_ids.to(device), mask.to(device)
        n, length = word_ids.shape
        grams = self.ngrams(torch.as_tensor(batch.ngram_ids).to(device),
                            torch.as_tensor(batch.ngram_offsets).to(device))  # (tokens, d)
        tok = torch.zeros(n * length, grams.shape[1], device=device, dtype=grams.dtype)
        tok[mask.reshape(-1)] = grams
        x = self.words(word_ids) + tok.reshape(n, length, -1)
        x = x + self.positions(torch.arange(length, device=device))[None]
        x = self.encoder(x, src_key_padding_mask=~mask)
        x = self.norm(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        return self.proj((x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0))


class TextTowerOnArrays(nn.Module):
    """The text tower taking its TokenBatch as four tensors (word_ids, mask, ngram_ids, ngram_offsets):
    the form the text backends run and export to ONNX (engine/encoders/text_backend.py)."""

    def __init__(self, tower: TextTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, word_ids: torch.Tensor, mask: torch.Tensor, ngram_ids: torch.Tensor,
                ngram_offsets: torch.Tensor) -> torch.Tensor:
        # TokenBatch is typed for numpy arrays; the tower reads every field through torch.as_tensor
        return self.tower(TokenBatch(word_ids, mask, ngram_ids, ngram_offsets))  # type: ignore[arg-type]


class DemoCLAP(nn.Module):
    """Both towers and the learned temperature of the contrastive loss."""

    def __init__(self, cfg: DemoConfig, vocab_size: int) -> None:
        super().__init__()
        self.mel = LogMel(cfg)
        self.audio = AudioTower(cfg)
        self.text = TextTower(cfg, vocab_size)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
