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
(``spectrogram_extractor``, ``logmel_extractor``), the AudioSet head (``tscam_conv``, ``head``), the
stored Swin attention masks (``attn_mask``), and GPT-2's causal-mask buffers (``attn.bias``,
``attn.masked_bias``) that older transformers versions saved. Any other key, a missing weight or a
wrong shape is an error naming the key: never a silent partial load (msclap itself loads with
``strict=False``).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import WeightsNotFoundError
from ._torch_util import load_checkpoint
from .laion_pt import UNSAFE_PICKLE_ENV, htsat_to_hf
from .msclap_model import MsClapModel, random_model

_HTSAT = "audio_encoder.base.htsat."
_DROP = re.compile(
    r"^(audio_encoder\.base\.htsat\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\.|"
    r"audio_encoder\.base\.htsat\.layers\.\d+\.blocks\.\d+\.attn_mask$|"
    r"caption_encoder\.base\.h\.\d+\.attn\.(bias|masked_bias)$)"
)
_RENAME = (
    ("audio_encoder.projection.", "audio_projection."),
    ("caption_encoder.projection.", "text_projection."),
    ("caption_encoder.base.", "text."),
)


def msclap_to_native(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an msclap ``CLAP`` state dict (``module.`` prefixes allowed) into MsClapModel's names.

    Raises WeightsNotFoundError naming the first key it does not know."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if _DROP.match(key):
            continue
        if key == "logit_scale":
            out[key] = value
        elif key.startswith(_HTSAT) and (htsat := htsat_to_hf(key[len(_HTSAT):], value)) is not None:
            out.update({"audio.audio_encoder." + k: v for k, v in htsat.items()})
        else:
            for old, new in _RENAME:
                if key.startswith(old):
                    out[new + key[len(old):]] = value
                    break
            else:
                raise _unknown(key)
    return out


def _unknown(key: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(f"unsupported MS-CLAP checkpoint: unknown weight {key!r} (songseek reads "
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
        raise _unknown(key)
    for key, tensor in expected.items():
        if tuple(mapped[key].shape) != tuple(tensor.shape):
            raise WeightsNotFoundError(f"{where}: weight {key} has shape {tuple(mapped[key].shape)}, expected "
                                       f"{tuple(tensor.shape)} (is this CLAP_weights_2023.pth?)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an msclap .pth file (``{"model": ...}``, as msclap saves it, or a bare state dict)."""
    try:
        obj = load_checkpoint(path, unsafe=os.environ.get(UNSAFE_PICKLE_ENV, "") == "1")
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # not a refused Python object: a damaged file
            raise WeightsNotFoundError(f"cannot read MS-CLAP checkpoint {path} (not a torch .pth file)") from exc
        raise WeightsNotFoundError(f"{path} holds pickled Python objects that torch.load(weights_only=True) "
                                   f"refuses; if you trust the file, set {UNSAFE_PICKLE_ENV}=1") from exc
    except Exception as exc:
        raise WeightsNotFoundError(f"cannot read MS-CLAP checkpoint {path} ({type(exc).__name__}): is it a "
                                   "complete .pth file?") from exc
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsNotFoundError(f"{path} is not an MS-CLAP checkpoint (no 'model' state dict of tensors)")
    return sd


def load_model(path: Path) -> MsClapModel:
    """MsClapModel (CPU, eval mode) holding the weights of an msclap .pth file, strictly."""
    mapped = msclap_to_native(read_state_dict(path))
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
