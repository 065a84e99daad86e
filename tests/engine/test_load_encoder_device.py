"""load_encoder's device: a device torch cannot use here is one UsageError line, as Library.open says it,
not torch's RuntimeError or AssertionError (docs/api.md: device is cpu, cuda, cuda:1 or mps)."""

from __future__ import annotations

import pytest

from songseek import UsageError, load_encoder


@pytest.mark.parametrize("device", ["tpu", "gpu0"])
def test_an_unknown_device_is_a_usage_error(device: str) -> None:
    with pytest.raises(UsageError, match="unknown device"):
        load_encoder("demo", device=device)


def test_cuda_without_cuda_is_a_usage_error() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(UsageError, match="CUDA is not available"):
        load_encoder("demo", device="cuda")


def test_auto_and_upper_case_cpu_resolve() -> None:
    assert load_encoder("demo", device="CPU").embed_text(["piano"]).shape[0] == 1
    assert load_encoder("demo", device="auto").embed_text(["piano"]).shape[0] == 1
