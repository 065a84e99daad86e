"""The ``msclap`` backend, against a test double of the ``msclap`` package.

Limits of the double (stated, since the real package cannot run here: it pins numpy<2 and
transformers<5, needs torchaudio and librosa, and its constructor fetches GPT-2 from the hub): the
double's ``CLAP`` has msclap's interface only (``msclap.CLAP(model_fp, version, use_cuda)`` with
``.clap.audio_encoder(x) -> (embedding, clipwise)``, ``.clap.caption_encoder(tokens)``,
``.tokenizer``; ``msclap.models.clap.CLAP(**config)`` building its text tower through
``AutoModel.from_pretrained``). Its "model" is a fixed random projection of band energies, so these
tests check songseek's adapter (window fitting to 7 s at 44.1 kHz, batching, tokens, devices,
normalisation, determinism, errors), not MS-CLAP's numbers. songseek's own check of the real package
code (msclap 1.3.4 installed with --no-deps, GPT-2 built from its config) is described in docs/encoders.md.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from songseek.engine.encoders import load_encoder, msclap_backend
from songseek.engine.errors import MissingDependencyError, SongseekError, WeightsNotFoundError
from tests.engine.encoder_helpers import isolate_hf, save_tiny_tokenizer

N = msclap_backend.SAMPLE_RATE * msclap_backend.WINDOW_S


class FakeClap(torch.nn.Module):
    """Band energies of the waveform → fixed random 1024-d projection; tokens → embedding bag."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.audio_proj = torch.nn.Parameter(torch.randn(32, 1024, generator=g), requires_grad=False)
        self.words = torch.nn.Parameter(torch.randn(128, 1024, generator=g), requires_grad=False)
        self.seen_audio: list[tuple[int, ...]] = []
        self.seen_tokens: list[dict[str, torch.Tensor]] = []

    def audio_encoder(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen_audio.append(tuple(x.shape))
        bands = torch.stack([b.sum(-1) for b in (torch.fft.rfft(x).abs() ** 2).tensor_split(32, dim=-1)], -1)
        return torch.log1p(bands) @ self.audio_proj, torch.zeros(x.shape[0], 527)

    def caption_encoder(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen_tokens.append(tokens)
        ids = tokens["input_ids"] % 128
        return (self.words[ids] * tokens["attention_mask"][..., None]).sum(1)


def fake_msclap(tokenizer: Any) -> types.ModuleType:
    pkg = types.ModuleType("msclap")
    models = types.ModuleType("msclap.models")
    clap_mod = types.ModuleType("msclap.models.clap")

    class AutoModel:  # the real module's text tower goes through AutoModel.from_pretrained("gpt2")
        @staticmethod
        def from_pretrained(name: str) -> Any:
            raise OSError("no network in tests")

    def model_clap(**config: Any) -> FakeClap:
        setattr(clap_mod, "built_with", config)  # noqa: B010
        clap_mod.AutoModel.from_pretrained("gpt2")
        return FakeClap(seed=int(torch.randint(0, 1000, ()).item()))

    class Wrapper:
        def __init__(self, model_fp: str, version: str = "2023", use_cuda: bool = False) -> None:
            pkg.calls.append((model_fp, version, use_cuda))
            self.clap, self.tokenizer = FakeClap(), tokenizer

    for module, values in ((clap_mod, {"CLAP": model_clap, "AutoModel": AutoModel}), (models, {"clap": clap_mod}),
                           (pkg, {"CLAP": Wrapper, "models": models, "calls": []})):
        for name, value in values.items():
            setattr(module, name, value)
    return pkg


@pytest.fixture
def msclap(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(save_tiny_tokenizer(tmp_path_factory.mktemp("tok")))
    pkg = fake_msclap(tok)
    isolate_hf(monkeypatch, tmp_path_factory.mktemp("hf"))  # tests never download (GPT-2's tokenizer included)
    monkeypatch.setitem(sys.modules, "msclap", pkg)
    monkeypatch.setitem(sys.modules, "msclap.models", pkg.models)
    monkeypatch.setitem(sys.modules, "msclap.models.clap", pkg.models.clap)
    return pkg


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "CLAP_weights_2023.pth"
    path.write_bytes(b"stand-in weights")
    return path


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msclap", None)  # import msclap -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'songseek\[msclap\]'"):
        load_encoder("msclap", "x.pth", "cpu", False)


def test_missing_weights_are_one_line(msclap: types.ModuleType, tmp_path: Path) -> None:
    for checkpoint in (None, str(tmp_path / "CLAP_weights_2023.pth")):
        with pytest.raises(WeightsNotFoundError) as err:
            msclap_backend.load(checkpoint, "cpu", False)
        msg = str(err.value)
        assert "\n" not in msg and "--checkpoint PATH" in msg and "huggingface.co/microsoft/msclap" in msg
        if checkpoint:
            assert checkpoint in msg
    assert msclap.calls == []


def test_constructor_failure_says_gpt2(msclap: types.ModuleType, weights: Path) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line")

    setattr(msclap, "CLAP", broken)  # noqa: B010  (the fixture's fake package is this test's own)
    with pytest.raises(WeightsNotFoundError) as err:
        msclap_backend.load(str(weights), "cpu", False)
    assert "\n" not in str(err.value) and "gpt2" in str(err.value) and str(weights) in str(err.value)


def test_audio_windows_are_fitted_to_7s_deterministically(msclap: types.ModuleType, weights: Path) -> None:
    enc = load_encoder("msclap", str(weights), "cpu", False)
    info = enc.info
    assert (info.name, info.dim, info.sample_rate, info.native_window_s) == ("msclap", 1024, 44100, 7.0)
    assert info.checkpoint_sha256 and not info.random_weights
    assert msclap.calls == [(str(weights), "2023", False)]
    rng = np.random.default_rng(0)
    ten = (rng.standard_normal((3, 441000)) * 0.1).astype(np.float32)
    out = enc.embed_audio(ten)
    assert out.shape == (3, 1024) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out, enc.embed_audio(ten))
    np.testing.assert_array_equal(out, enc.embed_audio(ten[:, :N]))  # the first 7 s, never a random crop
    three = ten[:, :3 * 44100]
    np.testing.assert_array_equal(enc.embed_audio(three), enc.embed_audio(np.tile(three, (1, 3))[:, :N]))
    assert set(enc._clap.seen_audio) == {(3, N)}


def test_text_gets_msclap_suffix_and_77_tokens(msclap: types.ModuleType, weights: Path) -> None:
    enc = msclap_backend.load(str(weights), "cpu", False)
    texts = [f"slow jazz piano {i}" for i in range(70)] + ["guitar solo " * 60]
    out = enc.embed_text(texts)
    assert out.shape == (71, 1024)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    seen = enc._clap.seen_tokens
    assert [t["input_ids"].shape for t in seen] == [(64, 77), (7, 77)]  # chunks of 64, padded to 77
    np.testing.assert_array_equal(out, enc.embed_text(texts))
    tokenizer = msclap.CLAP("x").tokenizer
    first = tokenizer(["slow jazz piano 0 <|endoftext|>"], max_length=77, padding="max_length")["input_ids"][0]
    assert seen[0]["input_ids"][0].tolist() == first
    assert enc.embed_text([]).shape == (0, 1024)


def test_random_weights_build_offline_and_restore_the_package(msclap: types.ModuleType) -> None:
    clap_mod = msclap.models.clap
    original = clap_mod.AutoModel
    a = msclap_backend.load(None, "cpu", True)
    b = msclap_backend.load(None, "cpu", True)
    assert clap_mod.AutoModel is original
    assert clap_mod.built_with == msclap_backend.CONFIG_2023
    assert a.info.random_weights and a.info.checkpoint == "msclap-2023" and a.info.checkpoint_sha256 == ""
    wav = np.random.default_rng(1).standard_normal((2, N)).astype(np.float32)
    np.testing.assert_array_equal(a.embed_audio(wav), b.embed_audio(wav))  # seeded
    if a._tokenizer is None:  # gpt2 not in this machine's HF cache: text fails with the reason
        with pytest.raises(SongseekError, match="gpt2"):
            a.embed_text(["jazz"])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available"))])
def test_device_matches_cpu(msclap: types.ModuleType, weights: Path, device: str) -> None:
    wav = np.random.default_rng(2).standard_normal((2, N)).astype(np.float32)
    cpu = msclap_backend.load(str(weights), "cpu", False)
    dev = msclap_backend.load(str(weights), device, False)
    np.testing.assert_allclose(dev.embed_audio(wav), cpu.embed_audio(wav), atol=1e-4)
    np.testing.assert_allclose(dev.embed_text(["calm piano"]), cpu.embed_text(["calm piano"]), atol=1e-4)
