"""songseek's native MS-CLAP against the ``msclap`` package itself, with the same random weights.

Runs only where the package can be imported; it is not a songseek dependency (it pins numpy<2 and
transformers<5). To run it, install it beside songseek's environment without touching that:

    pip install --no-deps --target /tmp/msclap_ref msclap            # msclap 1.3.4
    pip install --target /tmp/msclap_deps torchlibrosa librosa       # then delete numpy* from /tmp/msclap_deps
    SONGSEEK_MSCLAP_REFERENCE=/tmp/msclap_ref:/tmp/msclap_deps pytest tests/engine/test_msclap_reference.py -s

The folders go on sys.path for this test only. msclap's module-level ``import torchaudio`` (used only to
read files) is met by an empty stand-in when torchaudio is absent; msclap's GPT-2 comes from
``GPT2Config()`` instead of the hub, and its tokenizer is GPT-2's when on the machine, else songseek's
byte-level stand-in, given an ``encode_plus`` (which transformers 5 removed and msclap still calls).
Random weights are saved in msclap's format (``{"model": CLAP.state_dict()}``) and read by msclap's
own ``CLAPWrapper`` and by songseek's loader; vectors must agree to cosine >= 0.9999.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from songseek.engine.encoders import gpt2_tokenizer, msclap_backend
from tests.engine.msclap_helpers import perturb

REFERENCE_ENV = "SONGSEEK_MSCLAP_REFERENCE"
CONFIG_2023 = dict(audioenc_name="HTSAT", sample_rate=44100, window_size=1024, hop_size=320, mel_bins=64,
                   fmin=50, fmax=8000, classes_num=527, out_emb=768, text_model="gpt2",
                   transformer_embed_dim=768, d_proj=1024)
TEXTS = ["calm piano", "heavy metal guitar solo with drums!", "a jazz trio with vibraphone and upright bass", "x"]


class EncodePlus:
    """A tokenizer with transformers 4's ``encode_plus`` (what msclap calls) on top of ``__call__``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def add_special_tokens(self, tokens: dict[str, str]) -> int:
        return int(self.tokenizer.add_special_tokens(tokens))

    def encode_plus(self, **kwargs: Any) -> Any:
        return self.tokenizer(**kwargs)


@pytest.fixture
def msclap(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    for folder in filter(None, os.environ.get(REFERENCE_ENV, "").split(os.pathsep)):
        monkeypatch.syspath_prepend(folder)
    import transformers.models.gpt2  # noqa: F401  (before any torchaudio stand-in: transformers probes for it)

    try:
        importlib.import_module("torchaudio")
    except ImportError:
        stand_in = types.ModuleType("torchaudio")
        transforms = types.ModuleType("torchaudio.transforms")
        setattr(stand_in, "transforms", transforms)  # noqa: B010
        monkeypatch.setitem(sys.modules, "torchaudio", stand_in)
        monkeypatch.setitem(sys.modules, "torchaudio.transforms", transforms)
    try:
        pkg = importlib.import_module("msclap")
        importlib.import_module("msclap.models.clap")
    except ImportError as exc:
        pytest.skip(f"the msclap package is not importable ({exc}); set {REFERENCE_ENV} to folders holding "
                    "msclap (pip install --no-deps --target DIR msclap) and torchlibrosa + librosa")
    yield pkg
    for name in [n for n in sys.modules if n == "msclap" or n.startswith("msclap.")]:
        del sys.modules[name]


def gpt2_ids_tokenizer() -> tuple[Any, str]:
    found = gpt2_tokenizer.find_gpt2_tokenizer(None, allow_download=False)
    return found if found is not None else (gpt2_tokenizer.byte_tokenizer(), gpt2_tokenizer.BYTE_TOKENIZER)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(1))


def test_native_equals_msclap_package(msclap: types.ModuleType, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    clap_module = sys.modules["msclap.models.clap"]
    wrapper_module = sys.modules["msclap.CLAPWrapper"]
    tokenizer, source = gpt2_ids_tokenizer()

    class ConfigOnly:  # msclap's TextEncoder calls AutoModel.from_pretrained("gpt2")
        @staticmethod
        def from_pretrained(name: str, *args: Any, **kwargs: Any) -> Any:
            return GPT2Model(GPT2Config())

    class LocalTokenizer:  # msclap's load_clap calls AutoTokenizer.from_pretrained("gpt2")
        @staticmethod
        def from_pretrained(name: str, *args: Any, **kwargs: Any) -> Any:
            return EncodePlus(tokenizer)

    monkeypatch.setattr(clap_module, "AutoModel", ConfigOnly)
    monkeypatch.setattr(wrapper_module, "AutoTokenizer", LocalTokenizer)
    torch.manual_seed(11)
    original = clap_module.CLAP(**CONFIG_2023).eval()
    perturb(original)
    path = tmp_path / "CLAP_weights_2023.pth"
    torch.save({"model": original.state_dict()}, path)

    ref = msclap.CLAP(model_fp=str(path), version="2023", use_cuda=False)  # msclap's own loader
    ours = msclap_backend.load(str(path), "cpu", False)
    ours.set_tokenizer(tokenizer, source)

    rng = np.random.default_rng(0)
    t = np.arange(7 * 44100) / 44100
    seven = np.stack([rng.standard_normal(t.size) * 0.1,
                      0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)])
    seven = seven.astype(np.float32)
    short = seven[1, : 3 * 44100]
    monkeypatch.setattr(ref, "read_audio", lambda audio_path, resample=False: (torch.from_numpy(short)[None], 44100))
    filled = ref.load_audio_into_tensor("short.wav", 7, False).numpy()  # msclap's fill of a 3 s clip
    with torch.no_grad():
        ref_audio = ref._get_audio_embeddings(torch.from_numpy(np.stack([*seven, filled]))[:, None, :]).numpy()
        ref_text = ref.get_text_embeddings(TEXTS).numpy()
    audio_cos = cosines(ours.embed_audio(seven), ref_audio[:2])
    short_cos = cosines(ours.embed_audio(short[None]), ref_audio[2:])
    text_cos = cosines(ours.embed_text(TEXTS), ref_text)
    print(f"\nmsclap reference, tokenizer {source}: 1 - cosine: audio {1 - audio_cos}, 3 s clip {1 - short_cos}, "
          f"text {1 - text_cos}")
    assert audio_cos.min() >= 0.9999 and short_cos.min() >= 0.9999 and text_cos.min() >= 0.9999

    htsat = ref.clap.audio_encoder.base.htsat
    wav = torch.from_numpy(seven)
    with torch.no_grad():
        mel_ref = htsat.logmel_extractor(htsat.spectrogram_extractor(wav)).numpy()
        mel_ours = ours.model.audio_features(wav).numpy()
    assert mel_ref.shape == mel_ours.shape == (2, 1, 965, 64)
    for row in range(2):
        loud = mel_ref[row] > mel_ref[row].max() - 60  # below: float32 rounding of tiny powers dominates the dB
        diff = float(np.abs(mel_ref[row] - mel_ours[row])[loud].max())
        p_ref, p_ours = 10 ** (mel_ref[row] / 10), 10 ** (mel_ours[row] / 10)
        power = float(np.abs(p_ref - p_ours).max() / p_ref.max())
        print(f"mel row {row}: max |dB difference| within 60 dB of the peak {diff:.2e}; "
              f"max power difference / peak power {power:.2e}")
        assert diff < 1e-3 and power < 1e-5
