"""MS-CLAP 2023 built from parts songseek already depends on (no ``msclap`` package).

MS-CLAP 2023 (microsoft/CLAP, ``CLAP_weights_2023.pth``) is HTSAT-tiny on 7 s of 44.1 kHz audio,
GPT-2 (124M) on text, and one projection head per tower into a 1024-d space. Here:

- audio: transformers' ``ClapAudioModel`` configured as MS-CLAP's HTSAT (width 96, depths 2-2-6-2,
  heads 4-8-16-32, window 8, 256x256 input, 64 mel bands). Its batch norm, bicubic resize to 1024
  frames, 4-way frequency folding and token mean ("latent_output") are the same operations as msclap's
  ``HTSAT_Swin_Transformer`` in eval mode; its AudioSet head (``tscam_conv``/``head``) is not needed
  for the embedding and is left out;
- the log-mel front end is computed in torch: msclap's HTSAT takes its mel settings from its
  ``config.py`` (filters for 32 kHz, 1024-point FFT, hop 320, 64 Slaney bands 50-14,000 Hz,
  10·log10 power), not from its YAML (44.1 kHz, fmax 8,000), and it is fed 44.1 kHz audio. The
  weights were trained with exactly that, so it is reproduced as is;
- text: transformers' ``GPT2Model`` (GPT-2 small); the embedding is the hidden state at the last
  non-pad token, found the way msclap finds it (pad is '!' = id 0: ``(ids != 0).sum() - 1``);
- ``Projection``: msclap's head, ``layer_norm(l1(x) + l2(gelu(l1(x))))`` with bias-free linears
  (its dropout is inactive at inference).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ._torch_util import log_mel, seeded_cpu_rng

SAMPLE_RATE = 44100
WINDOW_S = 7
N_SAMPLES = SAMPLE_RATE * WINDOW_S
DIM = 1024
AUDIO_WIDTH = 768  # HTSAT output (out_emb)
TEXT_WIDTH = 768  # GPT-2 small
# msclap/models/config.py, which its HTSAT really uses (see the module docstring).
N_FFT = 1024
HOP = 320
N_MELS = 64
FMIN = 50.0
FMAX = 14000.0
FILTER_SAMPLE_RATE = 32000
PAD_ID = 0  # msclap sets GPT-2's pad token to '!', id 0


class Projection(nn.Module):
    """msclap's projection head: ``layer_norm(l1(x) + l2(gelu(l1(x))))``, linears without bias."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.linear1(x)
        return self.layer_norm(first + self.linear2(nn.functional.gelu(first)))


def audio_config() -> Any:
    """ClapAudioConfig of MS-CLAP 2023's HTSAT (HTSAT-tiny, no fusion, 64 mel bands, 768-d output)."""
    from transformers import ClapAudioConfig

    return ClapAudioConfig(
        spec_size=256, patch_size=4, patch_stride=[4, 4], patch_embed_input_channels=1,
        patch_embeds_hidden_size=96, depths=[2, 2, 6, 2], num_attention_heads=[4, 8, 16, 32],
        window_size=8, mlp_ratio=4.0, hidden_size=AUDIO_WIDTH, num_mel_bins=N_MELS, enable_fusion=False,
        enable_patch_layer_norm=True, hidden_act="gelu", layer_norm_eps=1e-5, qkv_bias=True)


def text_config() -> Any:
    """GPT2Config of GPT-2 small ('gpt2'), which MS-CLAP 2023 uses as its text tower."""
    from transformers import GPT2Config

    return GPT2Config()


class MsClapModel(nn.Module):
    """MS-CLAP 2023: ``audio`` (HTSAT) + ``audio_projection``, ``text`` (GPT-2) + ``text_projection``."""

    def __init__(self) -> None:
        from transformers import ClapAudioModel, GPT2Model

        super().__init__()
        self.audio = ClapAudioModel(audio_config())
        self.audio_projection = Projection(AUDIO_WIDTH, DIM)
        self.text = GPT2Model(text_config())
        self.text_projection = Projection(TEXT_WIDTH, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.mel_filters = mel_filters()

    def audio_features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(n, 308,700) float32 at 44.1 kHz → HTSAT input (n, 1, 965, 64): msclap's log-mel."""
        return log_mel(waveforms, self.mel_filters, N_FFT, HOP)[:, None]

    def embed_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(n, samples) → (n, 1024) projected audio embeddings (not normalised)."""
        pooled = self.audio(input_features=self.audio_features(waveforms)).pooler_output
        return self.audio_projection(pooled)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids padded with '!' (id 0) → (n, 1024) projected text embeddings (not normalised)."""
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = torch.ne(input_ids, PAD_ID).sum(-1) - 1  # msclap's rule, '!' in a text included
        rows = torch.arange(input_ids.shape[0], device=hidden.device)
        return self.text_projection(hidden[rows, last])


def mel_filters() -> np.ndarray:
    """(513, 64) Slaney-scale, Slaney-normalised triangles for 32 kHz, 50-14,000 Hz (librosa's defaults)."""
    from transformers.audio_utils import mel_filter_bank

    return np.asarray(mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=FMIN,
                                      max_frequency=FMAX, sampling_rate=FILTER_SAMPLE_RATE, norm="slaney",
                                      mel_scale="slaney"), dtype=np.float32)


def random_model(seed: int = 0) -> MsClapModel:
    """The MS-CLAP 2023 architecture with seeded random weights (eval mode); the global RNG is restored."""
    with seeded_cpu_rng(seed):
        return MsClapModel().eval()
