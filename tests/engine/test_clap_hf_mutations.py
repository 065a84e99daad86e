"""clap_hf details the other tests left open (found by a mutation sweep): which missing tensors
``check_complete`` forgives, ``random_model`` leaving the global RNG as it was, and the tokenizer loader
being asked once. Checked against plain expectations on small stand-ins."""

from __future__ import annotations

import pytest
import torch

from songseek.engine.encoders import clap_hf
from songseek.engine.errors import WeightsNotFoundError
from tests.engine.encoder_helpers import tiny_config


class _Stand(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(2, 2)
        self.logit_scale_a = torch.nn.Parameter(torch.zeros(()))
        self.bn = torch.nn.BatchNorm1d(2)
        self.register_buffer("position_ids", torch.arange(3))


@pytest.mark.parametrize(("missing", "refused"), [
    (["logit_scale_a", "position_ids", "bn.num_batches_tracked"], None),  # training-only or computed
    (["bn.running_mean"], "bn.running_mean"),  # batch-norm statistics are trained, though buffers
    (["bn.running_var", "logit_scale_a"], "bn.running_var"),
    (["proj.weight"], "proj.weight"),
    (["bn.weight", "proj.bias"], "bn.weight"),  # the first, sorted
])
def test_check_complete_refuses_exactly_the_trained_tensors(missing: list[str], refused: str | None) -> None:
    if refused is None:
        clap_hf.check_complete("ckpt", _Stand(), missing)
        return
    n = sum(1 for k in missing if not k.startswith("logit_scale"))
    with pytest.raises(WeightsNotFoundError, match=rf"ckpt lacks {n} trained tensors .*\(e\.g\. {refused}\)"):
        clap_hf.check_complete("ckpt", _Stand(), missing)


def test_random_model_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    a = clap_hf.random_model(tiny_config())
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream goes on as before
    b = clap_hf.random_model(tiny_config())
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_the_tokenizer_loader_is_asked_once_even_when_it_finds_nothing() -> None:
    """A loader that searches folders and the HF cache is not repeated on every text query."""
    calls: list[int] = []

    def loader() -> None:
        calls.append(1)
        return None

    model = clap_hf.random_model(tiny_config())
    fe = clap_hf.laion_feature_extractor()
    info = clap_hf.make_info("clap", "x", model, fe, True)
    enc = clap_hf.ClapEncoder(model, fe, None, info, "cpu", text_error="no tokenizer here",
                              tokenizer_loader=loader)
    for _ in range(3):
        with pytest.raises(WeightsNotFoundError, match="no tokenizer here"):
            enc.embed_text(["jazz"])
    assert calls == [1]
