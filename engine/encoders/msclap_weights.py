"""Reading ``CLAP_weights_2023.pth`` into songseek's MS-CLAP model: the explicit key mapping.

msclap saves ``{"model": state_dict}`` of its ``CLAP`` module. Its names, and where they go
(``msclap_to_native``):

- ``audio_encoder.base.htsat.*`` (HTSAT) → ``audio.audio_encoder.*`` of transformers' ClapAudioModel,
  renamed as for LAION-CLAP's HTSAT (``laion_pt.htsat_to_hf``: ``bn0`` → ``batch_norm``, ``norm1/2`` →
  ``layernorm_before/after``, ``attn.qkv`` split into query/key/value, ``attn.proj`` →
  ``attention.output.dense``, ``mlp.fc1/fc2`` → ``intermediate.dense``/``output.dense``);
- ``audio_encoder.projection.*`` → ``audio_projection.*``; ``caption_encoder.projection.*`` →
  ``text_projection.*`` (same module, same names);
- ``caption_encoder.base.*`` (GPT-2) → ``text.*`` of transformers' GPT2Model (same names);
- ``logit_scale`` unchanged.

Dropped, because inference recomputes or never uses them: the STFT and mel filter weights
(``spectrogram_extractor``, ``logmel_extractor``; first checked to be the front end songseek computes,
which the stored filters, made for 32 kHz, confirm), the AudioSet head (``tscam_conv``, ``head``), the
stored Swin attention masks (``attn_mask``), and GPT-2's causal-mask buffers (``attn.bias``,
``attn.masked_bias``) that older transformers versions saved. Any other key, a missing weight or a
wrong shape is an error naming the key: never a silent partial load (msclap itself loads with
``strict=False``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsNotFoundError
from ._torch_util import check_front_end
from ._torch_util import read_state_dict as read_checkpoint_state_dict
from .laion_pt import htsat_to_hf
from .msclap_model import MsClapModel, mel_filters, random_model

_HTSAT = "audio_encoder.base.htsat."
_DROP = re.compile(
    r"^(audio_encoder\.base\.htsat\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\.|"
    r"audio_encoder\.base\.htsat\.layers\.\d+\.blocks\.\d+\.attn_mask$|"
    r"caption_encoder\.base\.h\.\d+\.attn\.(bias|masked_bias)$)"
)
# torchlibrosa's STFT and mel weights: recomputed, but checked against what songseek computes
_FRONT_END = re.compile(r"^audio_encoder\.base\.htsat\.(spectrogram_extractor\.stft\.conv_(real|imag)\.weight|"
                        r"logmel_extractor\.melW)$")
FRONT_END = "1024-point STFT, 64 Slaney mel bands made for 32 kHz, 50-14,000 Hz, as msclap's config.py says"
_RENAME = (
    ("audio_encoder.projection.", "audio_projection."),
    ("caption_encoder.projection.", "text_projection."),
    ("caption_encoder.base.", "text."),
)


def msclap_to_native(state_dict: dict[str, torch.Tensor], where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename an msclap ``CLAP`` state dict (``module.`` prefixes allowed) into MsClapModel's names.

    Raises WeightsNotFoundError naming ``where`` and the first key it does not know."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if _FRONT_END.match(key):
            check_front_end(key, value, _filters(), FRONT_END, where)
        if _DROP.match(key):
            continue
        if key == "logit_scale":
            out[key] = value
        elif key.startswith(_HTSAT) and (htsat := htsat_to_hf(key[len(_HTSAT):], value, where)) is not None:
            out.update({"audio.audio_encoder." + k: v for k, v in htsat.items()})
        else:
            for old, new in _RENAME:
                if key.startswith(old):
                    out[new + key[len(old):]] = value
                    break
            else:
                raise _unknown(key, where)
    return out


@functools.cache
def _filters() -> np.ndarray:
    return mel_filters()


def _unknown(key: str, where: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(f"{where}: unsupported MS-CLAP checkpoint: unknown weight {key!r} (songseek reads "
                                "CLAP_weights_2023.pth: HTSAT + GPT-2; the 2022 CNN14 + BERT model and "
                                "clapcap are not supported)")


def check_state_dict(mapped: dict[str, torch.Tensor], model: MsClapModel, where: str) -> None:
    """Every weight of ``model`` is in ``mapped`` with its shape, and nothing else is; else
    WeightsNotFoundError naming the first offending key (``where`` names the file)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    if missing:
        raise WeightsNotFoundError(f"{where}: MS-CLAP checkpoint lacks {len(missing)} weights, e.g. {missing[0]}")
    for key in sorted(set(mapped) - set(expected)):
        raise _unknown(key, where)
    for key, tensor in expected.items():
        if tuple(mapped[key].shape) != tuple(tensor.shape):
            raise WeightsNotFoundError(f"{where}: weight {key} has shape {tuple(mapped[key].shape)}, expected "
                                       f"{tuple(tensor.shape)} (is this CLAP_weights_2023.pth?)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an msclap .pth file (``{"model": ...}``, as msclap saves it, or a bare state dict);
    one-line WeightsNotFoundError naming the file otherwise (``_torch_util.read_state_dict``)."""
    return read_checkpoint_state_dict(path, "msclap")


def load_model(path: Path) -> MsClapModel:
    """MsClapModel (CPU, eval mode) holding the weights of an msclap .pth file, strictly."""
    mapped = msclap_to_native(read_state_dict(path), str(path))
    with torch.device("meta"):  # no random init of weights that the file replaces
        model = MsClapModel()
    check_state_dict(mapped, model, str(path))
    expected = model.state_dict()
    weights = {k: v.to(expected[k].dtype) for k, v in mapped.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # non-persistent buffers (older
        model = random_model()  # transformers' GPT-2 causal mask): build them for real
        model.load_state_dict(weights, strict=True)
    return model.eval()
