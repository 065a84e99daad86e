"""Helpers for the encoder tests: tiny ClapModel configs, a test-made tokenizer, the LAION key layout.

Nothing here downloads. ``to_original`` renames a ClapModel state dict into the key names of the
original LAION-CLAP module (laion_clap's ``CLAP``: ``audio_branch`` = HTSAT_Swin_Transformer with
``bn0``, ``norm1/norm2``, fused ``attn.qkv``, ``mlp.fc1/fc2``; ``text_branch`` = RobertaModel;
``*_projection`` = nn.Sequential(Linear, ReLU, Linear)); it is written from those module names, not
from songseek's mapping, and ``test_encoders_laion`` checks its names against the real layout.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.engine.msclap_helpers import slaney_mel

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FUSED_DIR = SHARED_DATA / "clap-htsat-fused"
LAION_KEYS = Path(__file__).with_name("laion_music_keys.txt")
WORDS = "a the jazz trio with vibraphone heavy metal guitar solo and drums slow piano calm loud song".split()


def tiny_config(fusion: bool = False, vocab_size: int = 4 + len(WORDS), proj: int = 24) -> Any:
    """A ClapConfig small enough for a CPU test: 2 HTSAT stages of width 16/32, 1 RoBERTa layer of 32."""
    from transformers import ClapConfig

    audio = {"patch_embeds_hidden_size": 16, "depths": [1, 1], "num_attention_heads": [2, 4],
             "hidden_size": 32, "enable_fusion": fusion, "window_size": 8}
    text = {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 1,
            "intermediate_size": 37, "max_position_embeddings": 80, "layer_norm_eps": 1e-5}
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=proj)


def tiny_model(config: Any, seed: int = 3) -> Any:
    """ClapModel with seeded random weights, including non-trivial norm/batch-norm statistics."""
    from transformers import ClapModel

    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.weight.normal_(1, 0.2)
                module.bias.normal_(0, 0.2)
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    return model


def save_tiny_tokenizer(directory: Path) -> Path:
    """A word-level tokenizer with RoBERTa's special ids (<s>=0, <pad>=1, </s>=2), saved to ``directory``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=77)
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return directory


def save_swapped_tokenizer(directory: Path) -> Path:
    """save_tiny_tokenizer with the ids of "jazz" and "metal" exchanged: RoBERTa's special ids, other meanings."""
    save_tiny_tokenizer(directory)
    path = directory / "tokenizer.json"
    spec = json.loads(path.read_text())
    vocab = spec["model"]["vocab"]
    vocab["jazz"], vocab["metal"] = vocab["metal"], vocab["jazz"]
    path.write_text(json.dumps(spec))
    return directory


def synth_audio(n: int = 3, seconds: float = 10.0, sr: int = 48000, seed: int = 0) -> np.ndarray:
    """float32 (n, seconds*sr): noise, a 440 Hz tone, a chirp-like mixture."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    rows = [rng.standard_normal(t.size) * 0.1, 0.5 * np.sin(2 * np.pi * 440 * t),
            0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)]
    return np.stack([rows[i % 3] for i in range(n)]).astype(np.float32)


def reference_audio(model: Any, fe: Any, windows: np.ndarray) -> np.ndarray:
    """transformers' own path: ClapFeatureExtractor (``is_longer`` forced False) + get_audio_features."""
    fused = bool(model.config.audio_config.enable_fusion)
    inputs = fe(list(windows), sampling_rate=fe.sampling_rate, truncation="fusion" if fused else "rand_trunc",
                padding="repeatpad", return_tensors="pt")
    with torch.no_grad():
        out = model.get_audio_features(input_features=inputs["input_features"],
                                       is_longer=torch.zeros_like(inputs["is_longer"]))
    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


def reference_text(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    tok = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_BLOCK_NAMES = [("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
                ("attention.self.relative_position_", "attn.relative_position_"),
                ("attention.output.dense.", "attn.proj."), ("intermediate.dense.", "mlp.fc1."),
                ("output.dense.", "mlp.fc2.")]


def to_original(hf: dict[str, torch.Tensor], extras: bool = True) -> dict[str, torch.Tensor]:
    """ClapModel state dict → LAION-CLAP names (with the training-only/recomputed extras LAION saves)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        if key == "text_model.embeddings.token_type_ids":
            continue
        if key.startswith("text_model."):
            out["text_branch." + key[len("text_model."):]] = value
        elif m := re.match(r"^(text|audio)_projection\.linear([12])\.(.+)$", key):
            out[f"{m[1]}_projection.{0 if m[2] == '1' else 2}.{m[3]}"] = value
        elif key.startswith("audio_model.audio_encoder."):
            rest = key[len("audio_model.audio_encoder."):]
            if rest.startswith("batch_norm."):
                out["audio_branch.bn0." + rest[len("batch_norm."):]] = value
            elif b := _BLOCK.match(rest):
                head, tail = f"audio_branch.layers.{b[1]}.blocks.{b[2]}.", b[3]
                if q := re.match(r"^attention\.self\.(query|key|value)\.(weight|bias)$", tail):
                    qkv.setdefault((head, q[2]), {})[q[1]] = value
                    continue
                for new, old in _BLOCK_NAMES:
                    if tail.startswith(new):
                        out[head + old + tail[len(new):]] = value
                        break
                else:
                    raise AssertionError(f"unmapped {key}")
            else:
                out["audio_branch." + rest] = value
        else:
            out[key] = value
    for (head, kind), parts in qkv.items():
        out[f"{head}attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    if extras:
        g = torch.Generator().manual_seed(7)
        proj = hf["audio_projection.linear2.weight"].shape[0]
        out["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024, generator=g)
        # torchlibrosa's filters, as LAION's HTSAT stores them: librosa's Slaney bank for 48 kHz, 50-14,000 Hz
        out["audio_branch.logmel_extractor.melW"] = torch.from_numpy(slaney_mel(48000, 1024, 64, 50.0, 14000.0)).float()
        out["audio_branch.tscam_conv.weight"] = torch.randn(527, 4, 2, 3, generator=g)
        out["audio_branch.head.bias"] = torch.randn(527, generator=g)
        for branch in ("text_transform", "audio_transform"):
            out[f"{branch}.sequential.0.weight"] = torch.randn(proj, proj, generator=g)
            out[f"{branch}.sequential.3.bias"] = torch.randn(proj, generator=g)
        out["audio_branch.layers.0.blocks.1.attn_mask"] = torch.zeros(64, 64, 64)
    return out


def save_laion_pt(model: Any, path: Path) -> Path:
    """Save a ClapModel as LAION's training does: {"epoch", "name", "state_dict"} with ``module.`` keys."""
    sd = {"module." + k: v.clone() for k, v in to_original(model.state_dict()).items()}
    torch.save({"epoch": 15, "name": "tiny-test", "state_dict": sd}, path)
    return path


def laion_layout() -> dict[str, tuple[int, ...]]:
    """Key → shape of the real music checkpoint's layout (tests/engine/laion_music_keys.txt)."""
    out = {}
    for line in LAION_KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, shape = line.partition(" ")
            out[key] = tuple(int(s) for s in shape.split(",") if s)
    return out


def isolate_hf(monkeypatch: Any, root: Path) -> Path:
    """Offline, with an empty Hugging Face cache under ``root``; returns the hub cache folder.

    huggingface_hub reads HF_HOME/HF_HUB_OFFLINE once, at import, so its constants are patched too.
    """
    import huggingface_hub.constants as hf_constants

    cache = root / "hf_home" / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(root / "hf_home"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


class UnreachableHub:
    """Stands in for huggingface_hub's HTTP session: every request fails at once, as DNS does offline."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __getattr__(self, method: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            self.urls += [str(a) for a in (*args, kwargs.get("url")) if "://" in str(a)][:1]
            raise OSError("[Errno -2] Name or service not known")
        return fail

    def probes(self) -> int:
        """Requests for the bare endpoint: songseek's reachability probe."""
        import huggingface_hub.constants as hf_constants

        return self.urls.count(hf_constants.ENDPOINT)

    def repo_requests(self, repo_id: str) -> list[str]:
        """Requests that touched a repository (a download or a metadata lookup)."""
        return [u for u in self.urls if repo_id in u]


def unreachable_hub(monkeypatch: Any, root: Path) -> UnreachableHub:
    """Online mode (HF_HUB_OFFLINE unset), an empty HF cache under ``root``, and a hub nothing reaches.

    Every hub request, the probe's and any download's, goes through the returned stand-in, so a test can
    count them and no real network is used."""
    import huggingface_hub.constants as hf_constants
    import huggingface_hub.utils as hf_utils
    import huggingface_hub.utils._http as hf_http

    from songseek.engine.encoders import _hub

    isolate_hf(monkeypatch, root)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    hub = UnreachableHub()
    monkeypatch.setattr(hf_utils, "get_session", lambda: hub)
    monkeypatch.setattr(hf_http, "get_session", lambda: hub)
    # the probe's answer is kept per process: a fresh cache for this test, the old one back after it
    monkeypatch.setattr(_hub, "hub_reachable", functools.cache(_hub.hub_reachable.__wrapped__))
    return hub
