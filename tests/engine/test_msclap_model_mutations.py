"""msclap_model / msclap_weights details the other tests left open (found by a mutation sweep): the projection
head against a numpy reference (the round-trip tests compare songseek's model with itself), ``random_model``'s
seed and the caller's RNG, and a half-precision checkpoint loading as float32. No 150M-weight model is
built with random init: a stand-in, meta tensors or one half-precision state dict."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from songseek.engine.encoders import msclap_model, msclap_weights
from tests.engine.msclap_helpers import msclap_layout


def naive_projection(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                     eps: float = 1e-5) -> np.ndarray:
    """msclap's Projection written out row by row: layer_norm(l1(x) + l2(gelu(l1(x)))), exact (erf) GELU."""
    out = np.zeros((x.shape[0], w1.shape[0]))
    for r in range(x.shape[0]):
        first = [sum(w1[o, i] * x[r, i] for i in range(x.shape[1])) for o in range(w1.shape[0])]
        gelu = [v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in first]
        summed = [first[o] + sum(w2[o, i] * gelu[i] for i in range(len(gelu))) for o in range(w2.shape[0])]
        mean = sum(summed) / len(summed)
        var = sum((v - mean) ** 2 for v in summed) / len(summed)
        out[r] = [(v - mean) / math.sqrt(var + eps) * gamma[o] + beta[o] for o, v in enumerate(summed)]
    return out


def test_projection_head_matches_msclaps_formula() -> None:
    g = np.random.default_rng(7)
    d_in, d_out = 6, 5
    proj = msclap_model.Projection(d_in, d_out).double().eval()
    assert proj.linear1.bias is None and proj.linear2.bias is None  # msclap's linears have no bias
    w1, w2 = g.standard_normal((d_out, d_in)) * 1.5, g.standard_normal((d_out, d_out))
    gamma, beta = g.standard_normal(d_out), g.standard_normal(d_out)
    with torch.no_grad():
        proj.linear1.weight.copy_(torch.from_numpy(w1))
        proj.linear2.weight.copy_(torch.from_numpy(w2))
        proj.layer_norm.weight.copy_(torch.from_numpy(gamma))
        proj.layer_norm.bias.copy_(torch.from_numpy(beta))
    x = g.standard_normal((4, d_in))
    with torch.no_grad():
        got = proj(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, naive_projection(x, w1, w2, gamma, beta), rtol=0, atol=1e-9)


class _Tiny(torch.nn.Module):
    """Stands in for MsClapModel in random_model: a few random weights drawn from the global RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(4, 3)
        self.drop = torch.nn.Dropout(0.5)


def test_random_model_is_seeded_and_leaves_the_callers_rng_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(msclap_model, "MsClapModel", _Tiny)
    with torch.random.fork_rng(devices=[]):  # this test's seeding stays here
        torch.manual_seed(1234)
        want = torch.rand(5)
        torch.manual_seed(1234)
        a = msclap_model.random_model(seed=3)
        after = torch.rand(5)
        assert torch.equal(after, want), "random_model moved the caller's global RNG"
        b, c = msclap_model.random_model(seed=3), msclap_model.random_model(seed=4)
        torch.manual_seed(3)
        reference = _Tiny()  # what seed 3 draws, built directly
    assert not a.training  # eval mode
    assert torch.equal(a.w.weight, b.w.weight) and torch.equal(a.w.weight, reference.w.weight)  # type: ignore[arg-type, union-attr]
    assert not torch.equal(a.w.weight, c.w.weight)  # type: ignore[arg-type, union-attr]


def test_a_half_precision_checkpoint_loads_as_float32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .pth saved in float16 (a common way to halve the download) loads into the float32 model, values kept:
    never a half-precision model that the float32 audio front end cannot feed."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in msclap_layout().items():
        if key.endswith("relative_position_index"):
            sd[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("melW"):
            sd[key] = torch.from_numpy(msclap_model.mel_filters()).half()
        elif "spectrogram_extractor" in key:
            sd[key] = torch.empty(shape, dtype=torch.half, device="meta")  # dropped after a shape check
        elif key.endswith("attn_mask") or ".tscam_conv." in key or ".head." in key:
            sd[key] = torch.empty(shape, dtype=torch.half, device="meta")
        elif math.prod(shape) <= 4096:  # small tensors random; large ones a constant per key (cheap to build)
            sd[key] = torch.randn(shape, generator=g).half()
        else:
            sd[key] = torch.full(shape, len(sd) / 512 + 1 / 3, dtype=torch.half)
    monkeypatch.setattr(msclap_weights, "read_state_dict", lambda path: sd)
    model = msclap_weights.load_model(tmp_path / "CLAP_weights_2023.pth")
    params = dict(model.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.float32}
    for native, stored in (("text_projection.layer_norm.bias", "caption_encoder.projection.layer_norm.bias"),
                           ("text_projection.linear1.weight", "caption_encoder.projection.linear1.weight")):
        assert torch.equal(params[native], sd[stored].float())
    assert not model.training
