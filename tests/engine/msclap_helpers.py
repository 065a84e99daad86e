"""Helpers for the MS-CLAP tests: msclap's checkpoint format written from its module names, a GPT-2-sized
test tokenizer, and the naive mel reference.

``to_msclap`` renames songseek's MsClapModel state dict into the names of msclap's ``CLAP`` module
(``audio_encoder.base.htsat`` = HTSAT_Swin_Transformer with ``bn0``, ``norm1/norm2``, fused ``attn.qkv``,
``mlp.fc1/fc2``; ``caption_encoder.base`` = GPT2Model; ``*.projection`` = msclap's Projection) and adds
the tensors msclap also saves (STFT/mel weights, AudioSet head, attention masks). It is written from
those module names, not from songseek's mapping; ``test_encoders_msclap`` checks its names against the
real layout (tests/engine/msclap_2023_keys.txt).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from songseek.engine.encoders.gpt2_tokenizer import byte_tokenizer

KEYS_FILE = Path(__file__).with_name("msclap_2023_keys.txt")
_BLOCK_NAMES = {"layernorm_before.": "norm1.", "layernorm_after.": "norm2.", "attention.output.dense.": "attn.proj.",
                "intermediate.dense.": "mlp.fc1.", "output.dense.": "mlp.fc2.",
                "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
                "attention.self.relative_position_index": "attn.relative_position_index"}


def msclap_layout() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of CLAP_weights_2023.pth's state dict (from the file generated off msclap's module)."""
    out: dict[str, tuple[int, ...]] = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, shape = line.partition(" ")
            out[key] = tuple(int(s) for s in shape.split(",") if s)
    return out


def to_msclap(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MsClapModel state dict → msclap CLAP state dict (plus the extra tensors msclap saves)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in native.items():
        if key.startswith("audio.audio_encoder."):
            rest = key[len("audio.audio_encoder."):]
            rest = rest.replace("batch_norm.", "bn0.")
            m = re.match(r"^(layers\.\d+\.blocks\.\d+\.)(.+)$", rest)
            if m and (q := re.match(r"attention\.self\.(query|key|value)\.(weight|bias)$", m[2])):
                qkv.setdefault(f"{m[1]}attn.qkv.{q[2]}", {})[q[1]] = value
                continue
            if m:
                old = next(o for o in _BLOCK_NAMES if m[2].startswith(o))
                rest = m[1] + _BLOCK_NAMES[old] + m[2][len(old):]
            out["audio_encoder.base.htsat." + rest] = value
        elif key.startswith("audio_projection."):
            out["audio_encoder.projection." + key[len("audio_projection."):]] = value
        elif key.startswith("text_projection."):
            out["caption_encoder.projection." + key[len("text_projection."):]] = value
        elif key.startswith("text."):
            out["caption_encoder.base." + key[len("text."):]] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        out["audio_encoder.base.htsat." + key] = torch.cat([parts["query"], parts["key"], parts["value"]])
    g = torch.Generator().manual_seed(0)
    extra = {"spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
             "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
             "tscam_conv.weight": (527, 768, 2, 3), "tscam_conv.bias": (527,), "head.weight": (527, 527),
             "head.bias": (527,), "layers.0.blocks.1.attn_mask": (64, 64, 64)}
    for key, shape in extra.items():
        out["audio_encoder.base.htsat." + key] = torch.randn(shape, generator=g)
    # msclap's HTSAT builds its mel filters from config.py: librosa's Slaney bank for 32 kHz, 50-14,000 Hz
    mel = slaney_mel(32000, 1024, 64, 50.0, 14000.0)
    out["audio_encoder.base.htsat.logmel_extractor.melW"] = torch.from_numpy(mel).float()
    return out


def save_msclap_pth(native: dict[str, torch.Tensor], path: Path, legacy_gpt2_buffers: bool = False) -> Path:
    """Write ``{"model": msclap state dict}`` as msclap does; optionally with the GPT-2 causal-mask buffers
    (``h.N.attn.bias``/``masked_bias``) that files saved with older transformers hold."""
    sd = to_msclap(native)
    if legacy_gpt2_buffers:
        for i in range(12):
            sd[f"caption_encoder.base.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 8, 8, dtype=torch.bool))
            sd[f"caption_encoder.base.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save({"model": sd}, path)
    return path


def perturb(model: torch.nn.Module, seed: int = 5) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, norm affines and position biases (random init leaves them 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 3)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) * 20 + 0.5)
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=g))
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


def save_gpt2_sized_tokenizer(directory: Path) -> Path:
    """A tokenizer with GPT-2's vocabulary ids ('!' = 0, 50,257 entries, <|endoftext|> = 50256) but
    no merges: GPT-2's byte tokens plus placeholders, saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = byte_tokenizer().get_vocab()
    vocab = {s: i for s, i in byte_vocab.items()} | {f"<placeholder{i}>": i for i in range(256, 50256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return directory


def naive_log_mel(wave: np.ndarray) -> np.ndarray:
    """(samples,) → (frames, 64) dB: MS-CLAP's front end written out in numpy (centred reflect-padded
    frames, periodic Hann, |rfft|², librosa's Slaney mel filters for 32 kHz 50-14,000 Hz, 10·log10)."""
    n_fft, hop = 1024, 320
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(padded) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[i * hop: i * hop + n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10 * np.log10(np.maximum(power @ slaney_mel(32000, n_fft, 64, 50.0, 14000.0), 1e-10))


def slaney_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel(htk=False, norm='slaney') written out: (n_fft // 2 + 1, n_mels)."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27), f / (200 / 3))

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= 15, 1000 * np.exp((np.log(6.4) / 27) * (m - 15)), m * (200 / 3))

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.T
