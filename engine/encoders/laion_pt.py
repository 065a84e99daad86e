"""``laion``: original LAION-CLAP ``.pt`` checkpoints (HTSAT + RoBERTa), mapped into transformers' ClapModel.

No ``laion_clap`` package is needed. The checkpoint's state dict (``{"state_dict": ..., ...}`` with
``module.`` prefixes, as LAION's training saves it) is renamed key by key into ClapModel's names; the
architecture (HTSAT tiny/base, depths, heads, window, fusion; RoBERTa size) is read off the tensor
shapes. Weights LAION computes at run time or uses only in training (STFT and mel filters, the
AudioSet head, the ``*_transform`` MLPs, attention masks) are dropped, the STFT and mel filters after a
check that they are the front end computed here; anything else unknown is an error, never silently
ignored. The file is read with ``torch.load(weights_only=True)`` (numpy scalars allowed: the optimizer
state in LAION's files holds them); a file of another encoder says which one to use.

Audio follows LAION-CLAP's inference path: 48 kHz, 10 s windows (repeat-padded or cut at the end),
64-band Slaney log-mel for unfused models, the 4-channel HTK mel with no "longer" clips for fused
ones. Text uses the RoBERTa BPE tokenizer, 77 tokens, found next to the checkpoint, through
``SONGSEEK_CLAP_TOKENIZER``, or in the Hugging Face cache (``roberta-base``, ``laion/clap-htsat-unfused``).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError, WeightsNotFoundError
from ..hashing import file_sha256
from ._hub import cache_first, hub_problem
from ._torch_util import UNSAFE_PICKLE_ENV as UNSAFE_PICKLE_ENV  # re-exported: the opt-in's name
from ._torch_util import check_front_end, offline
from ._torch_util import read_state_dict as read_checkpoint_state_dict
from .clap_hf import (
    TOKENIZER_ENV,
    ClapEncoder,
    laion_feature_extractor,
    load_tokenizer,
    make_info,
    random_model,
)

HF_REPO = "lukewys/laion_clap"
DEFAULT_CHECKPOINT = "music_audioset_epoch_15_esc_90.14.pt"
TOKENIZER_IDS = ("roberta-base", "FacebookAI/roberta-base", "laion/clap-htsat-unfused")
ROBERTA_SPECIAL = ("<s>", "<pad>", "</s>")  # ids 0, 1, 2 in RoBERTa's vocabulary

# Original keys that inference does not use (recomputed, or training-only).
_DROP = re.compile(
    r"^(text_transform\.|audio_transform\.|text_branch\.embeddings\.position_ids$|"
    r"audio_branch\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\.|"
    r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$)"
)
_BLOCK = re.compile(r"^audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
    "attn.proj.": "attention.output.dense.",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.relative_position_index": "attention.self.relative_position_index",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
}
_AUDIO_SAME = re.compile(r"^(patch_embed\.(proj|norm|mel_conv2d|fusion_model\.(local|global)_att\.\d+)\.|"
                         r"layers\.\d+\.downsample\.(reduction|norm)\.|norm\.)")
_PROJ = re.compile(r"^(text|audio)_projection\.([02])\.(weight|bias)$")
# torchlibrosa's STFT and mel weights: recomputed, but checked against what songseek computes
_FRONT_END = re.compile(r"^audio_branch\.(spectrogram_extractor\.stft\.conv_(real|imag)\.weight|"
                        r"logmel_extractor\.melW)$")
FRONT_END = "1024-point STFT, 64 Slaney mel bands for 48 kHz, 50-14,000 Hz"


def original_to_hf(state_dict: dict[str, torch.Tensor], where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a LAION-CLAP state dict (``module.`` prefixes allowed) into ClapModel's key names.

    The fused ``qkv`` projection of each HTSAT block is split into query/key/value. Raises
    WeightsNotFoundError naming ``where`` and the first key it does not know (e.g. PANN audio or iAFF fusion).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if _FRONT_END.match(key):
            check_front_end(key, value, _slaney_filters(), FRONT_END, where)
        if _DROP.match(key):
            continue
        if key.startswith("text_branch."):
            out["text_model." + key[len("text_branch."):]] = value
        elif key in ("logit_scale_a", "logit_scale_t"):
            out[key] = value
        elif m := _PROJ.match(key):
            out[f"{m[1]}_projection.linear{1 if m[2] == '0' else 2}.{m[3]}"] = value
        elif key.startswith("audio_branch.") and (
                htsat := htsat_to_hf(key[len("audio_branch."):], value, where)) is not None:
            out.update({"audio_model.audio_encoder." + k: v for k, v in htsat.items()})
        else:
            raise _unknown(key, where)
    return out


def htsat_to_hf(key: str, value: torch.Tensor, where: str = "checkpoint") -> dict[str, torch.Tensor] | None:
    """One weight of an original HTSAT module (Ke Chen's ``HTSAT_Swin_Transformer``, used by LAION-CLAP
    and MS-CLAP), key relative to that module, renamed into transformers' ``ClapAudioEncoder`` (keys
    relative to it); a fused ``qkv`` gives three entries. None for a key that is not one of its weights;
    WeightsNotFoundError (naming ``where``) for a ``qkv`` that is not three equal parts."""
    if key.startswith("bn0."):
        return {"batch_norm." + key[len("bn0."):]: value}
    if m := _BLOCK.match("audio_branch." + key):
        prefix = f"layers.{m[1]}.blocks.{m[2]}."
        rest = m[3]
        if rest.startswith("attn.qkv."):
            if value.dim() == 0 or value.shape[0] % 3:
                raise WeightsNotFoundError(f"{where}: HTSAT weight {key} has shape {tuple(value.shape)}, not a fused "
                                           "query/key/value (first dimension a multiple of 3)")
            parts = zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True)
            return {prefix + f"attention.self.{name}.{rest[len('attn.qkv.'):]}": p.contiguous() for name, p in parts}
        for old, new in _BLOCK_PARTS.items():
            if rest.startswith(old):
                return {prefix + new + rest[len(old):]: value}
        return None
    return {key: value} if _AUDIO_SAME.match(key) else None


@functools.cache
def _slaney_filters() -> np.ndarray:
    """(513, 64) float32: the Slaney mel bank of LAION-CLAP's HTSAT (what torchlibrosa stores as ``melW``)."""
    return np.asarray(laion_feature_extractor().mel_filters_slaney, dtype=np.float32)


def _unknown(key: str, where: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{where}: unsupported LAION-CLAP checkpoint: unknown weight {key!r} (songseek maps HTSAT + RoBERTa "
        "models, unfused or 2-D AFF fusion; PANN audio towers and 1-D/iAFF fusion are not supported)")


def config_from_state_dict(sd: dict[str, torch.Tensor], where: str = "checkpoint") -> Any:
    """ClapConfig for a mapped (ClapModel-named) state dict, read off the tensor shapes; WeightsNotFoundError
    naming ``where`` when they are not those of HTSAT + RoBERTa."""
    from transformers import ClapConfig

    a = "audio_model.audio_encoder."
    try:
        tables = sorted((int(k.split(".")[3]), int(k.split(".")[5]), v.shape) for k, v in sd.items()
                        if k.startswith(a + "layers.") and k.endswith("relative_position_bias_table"))
        n_stages = max(t[0] for t in tables) + 1
        depths = [sum(1 for t in tables if t[0] == i) for i in range(n_stages)]
        heads = [next(t[2][1] for t in tables if t[0] == i) for i in range(n_stages)]
        window = (round(tables[0][2][0] ** 0.5) + 1) // 2
        proj = sd[a + "patch_embed.proj.weight"]
        fc1 = sd[a + "layers.0.blocks.0.intermediate.dense.weight"]
        audio_proj = sd["audio_projection.linear1.weight"]
        words = sd["text_model.embeddings.word_embeddings.weight"]
        n_text_layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layer."))
        audio = {
            "patch_embeds_hidden_size": int(proj.shape[0]), "patch_size": int(proj.shape[2]),
            "patch_embed_input_channels": int(proj.shape[1]), "depths": depths, "num_attention_heads": heads,
            "window_size": window, "mlp_ratio": fc1.shape[0] / fc1.shape[1],
            "hidden_size": int(audio_proj.shape[1]),
            "num_mel_bins": int(sd[a + "batch_norm.weight"].shape[0]),
            "enable_fusion": a + "patch_embed.mel_conv2d.weight" in sd,
            "enable_patch_layer_norm": a + "patch_embed.norm.weight" in sd,
        }
        text = {
            "vocab_size": int(words.shape[0]), "hidden_size": int(words.shape[1]),
            "num_hidden_layers": n_text_layers, "num_attention_heads": max(1, int(words.shape[1]) // 64),
            "intermediate_size": int(sd["text_model.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "max_position_embeddings": int(sd["text_model.embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(sd["text_model.embeddings.token_type_embeddings.weight"].shape[0]),
            "layer_norm_eps": 1e-5,  # RoBERTa's (the HF-converted CLAP configs say 1e-12)
        }
    except (KeyError, ValueError, IndexError, StopIteration, ZeroDivisionError) as exc:
        raise WeightsNotFoundError(f"{where}: not a LAION-CLAP HTSAT + RoBERTa checkpoint (cannot read its "
                                   f"architecture: {type(exc).__name__} {exc})") from exc
    if text["type_vocab_size"] != 1:  # BERT (laion_clap's "bert" text tower) has the same names, but 2 types
        raise WeightsNotFoundError(
            f"{where}: unsupported LAION-CLAP checkpoint: its text tower has {text['type_vocab_size']} token types "
            "(text_branch.embeddings.token_type_embeddings), so it is not RoBERTa (which has 1); songseek maps "
            "RoBERTa text towers only")
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=int(audio_proj.shape[0]))


def local_or_hub_name(checkpoint: str | None) -> Path | str:
    """The local .pt file ``checkpoint`` names, or the file name in the ``lukewys/laion_clap`` hub repo it
    names. Raises UsageError for a directory, WeightsNotFoundError for a local path that does not exist."""
    name = checkpoint or DEFAULT_CHECKPOINT
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UsageError(f"checkpoint {name} is a directory; the laion encoder takes a LAION-CLAP .pt file "
                         "(for a transformers model directory use the clap encoder)")
    filename = name[len(HF_REPO) + 1:] if name.startswith(HF_REPO + "/") else name
    if "/" in filename or os.sep in filename or not filename.endswith(".pt"):
        raise WeightsNotFoundError(f"LAION-CLAP checkpoint {name} not found: pass --checkpoint PATH to a "
                                   f"local .pt file (download it from https://huggingface.co/{HF_REPO})")
    return filename


def resolve_checkpoint(checkpoint: str | None) -> Path:
    """A local .pt path, or a file of the ``lukewys/laion_clap`` hub repo (HF cache, else downloaded)."""
    filename = local_or_hub_name(checkpoint)
    if isinstance(filename, Path):
        return filename
    try:
        from huggingface_hub import hf_hub_download

        return Path(cache_first(lambda lo: hf_hub_download(HF_REPO, filename, local_files_only=lo), offline()))
    except Exception as exc:
        problem = hub_problem()
        where = f"not in the HF cache and {problem}" if problem else f"download failed: {type(exc).__name__}"
        skip = " (HF_HUB_OFFLINE=1 skips the network check)" if problem and not offline() else ""
        raise WeightsNotFoundError(f"LAION-CLAP checkpoint {filename} not found ({where}): download it from "
                                   f"https://huggingface.co/{HF_REPO} on a machine with network and pass "
                                   f"--checkpoint PATH{skip}") from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a LAION-CLAP .pt file (``{"state_dict": ...}`` or a bare state dict); one-line
    WeightsNotFoundError naming the file otherwise (``_torch_util.read_state_dict``)."""
    return read_checkpoint_state_dict(path, "laion")


def load_model(path: Path) -> Any:
    """ClapModel with the weights of a LAION-CLAP .pt file (on the CPU, eval mode)."""
    return build_model(read_state_dict(path), str(path))


def build_model(state_dict: dict[str, torch.Tensor], where: str = "checkpoint") -> Any:
    """ClapModel (eval mode) holding an original LAION-CLAP state dict's tensors, architecture read off
    their shapes. Every weight of the model must come from the file (a strict load); raises
    WeightsNotFoundError naming ``where`` otherwise. Meta tensors in give a meta model (shape checks)."""
    from transformers import ClapModel

    mapped = original_to_hf(state_dict, where)
    config = config_from_state_dict(mapped, where)
    try:
        with torch.device("meta"):
            model = ClapModel(config)
    except (ValueError, RuntimeError) as exc:  # e.g. a width that its head count does not divide
        raise WeightsNotFoundError(f"{where}: the architecture read off the file does not build "
                                   f"({type(exc).__name__}: {str(exc)[:160]})") from exc
    expected = model.state_dict()
    optional = {"text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids"}
    missing = sorted(set(expected) - set(mapped) - optional)
    if missing:
        raise WeightsNotFoundError(f"{where}: LAION-CLAP checkpoint lacks {len(missing)} weights, "
                                   f"e.g. {missing[0]}")
    for key in sorted(set(mapped) - set(expected)):
        raise _unknown(key, where)
    for key in optional - set(mapped):
        mapped[key] = _default_buffer(key, expected[key])
    for key, tensor in expected.items():
        if tuple(mapped[key].shape) != tuple(tensor.shape):
            raise WeightsNotFoundError(f"{where}: weight {key} has shape {tuple(mapped[key].shape)}, "
                                       f"expected {tuple(tensor.shape)} (architecture read off the file)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in mapped.items()}, assign=True)
    if not any(t.is_meta for t in mapped.values()):  # non-persistent buffers (older transformers)
        for name, buf in list(model.named_buffers()):
            if buf.is_meta:
                owner, _, leaf = name.rpartition(".")
                model.get_submodule(owner).register_buffer(leaf, _default_buffer(name, buf), persistent=False)
    return model.eval()


def _default_buffer(key: str, like: torch.Tensor) -> torch.Tensor:
    if key.endswith("position_ids"):
        return torch.arange(like.shape[-1], dtype=like.dtype).expand(like.shape).clone()
    if key.endswith("token_type_ids"):
        return torch.zeros(like.shape, dtype=like.dtype)
    raise WeightsNotFoundError(f"LAION-CLAP mapping leaves {key} unset (unsupported transformers version?)")


def find_tokenizer(checkpoint: Path | None, vocab_size: int | None = None) -> Any:
    """RoBERTa tokenizer: $SONGSEEK_CLAP_TOKENIZER, the checkpoint's folder, then the HF cache; else None.

    A candidate must be RoBERTa's (``<s>``, ``<pad>``, ``</s>`` = 0, 1, 2) with ids that fit the model's
    ``vocab_size``: another tokenizer in the same folder (GPT-2's, which msclap wants beside its checkpoint)
    would give ids that index RoBERTa's table but mean other words."""
    candidates: list[tuple[str, bool]] = []
    if os.environ.get(TOKENIZER_ENV):
        candidates.append((os.environ[TOKENIZER_ENV], True))
    if checkpoint is not None:
        candidates.append((str(checkpoint.parent), True))
    candidates += [(i, True) for i in TOKENIZER_IDS]  # HF cache first
    if not offline():
        candidates.append((TOKENIZER_IDS[0], False))
    for source, local_only in candidates:
        tok = load_tokenizer(source, local_only)
        if tok is not None and _is_roberta(tok, vocab_size):
            return tok
    return None


def _is_roberta(tokenizer: Any, vocab_size: int | None) -> bool:
    try:
        ids = list(tokenizer.convert_tokens_to_ids(list(ROBERTA_SPECIAL)))
    except Exception:
        return False
    return ids == [0, 1, 2] and (vocab_size is None or len(tokenizer) <= vocab_size)


def load(checkpoint: str | None, device: str, random_weights: bool) -> ClapEncoder:
    """Build the ``laion`` encoder from a LAION-CLAP .pt (default music_audioset_epoch_15_esc_90.14.pt).

    With ``random_weights`` and no readable file: HTSAT-base + RoBERTa-base (the music checkpoint's
    architecture) with seeded random weights."""
    name = checkpoint or DEFAULT_CHECKPOINT
    local = local_or_hub_name(checkpoint)
    sha = ""
    if random_weights:  # architecture from a local file if one is given; never downloads
        path = local if isinstance(local, Path) else None
        sd = original_to_hf(read_state_dict(path), str(path)) if path is not None else None
        model = random_model(config_from_state_dict(sd, str(path)) if sd is not None else _music_config())
    else:
        path = resolve_checkpoint(checkpoint)
        model = load_model(path)
        sha = file_sha256(path)
    fe = laion_feature_extractor()
    if model.config.audio_config.enable_fusion:
        fe.truncation = "fusion"
    # a local file: its path; a hub file (resolved into the HF cache): the repository's name for it, the
    # same on every machine
    label = str(local) if isinstance(local, Path) else f"{HF_REPO}/{local}"
    info = make_info("laion", label, model, fe, random_weights, sha)
    hint = (f"text search with {Path(name).name} needs the RoBERTa tokenizer files (vocab.json + merges.txt "
            f"or tokenizer.json): set {TOKENIZER_ENV}=DIR, put them beside the checkpoint, or have "
            "roberta-base in the Hugging Face cache")
    return ClapEncoder(model, fe, None, info, device, text_error=hint,
                       tokenizer_loader=lambda: find_tokenizer(path, int(model.config.text_config.vocab_size)))


def _music_config() -> Any:
    """HTSAT-base + RoBERTa-base, 512-d: the architecture of music_audioset_epoch_15_esc_90.14.pt."""
    from transformers import ClapConfig

    return ClapConfig(
        text_config={"layer_norm_eps": 1e-5},
        audio_config={"patch_embeds_hidden_size": 128, "depths": [2, 2, 12, 2], "hidden_size": 1024},
        projection_dim=512)
