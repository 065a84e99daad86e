"""msclap_weights/msclap_backend details the other tests left open (found by a mutation sweep): ``module.``
prefixes, a mapped weight the model does not have, what random weights record and look for, the checkpoint
hash, empty text batches. Shapes only (meta tensors) or a stand-in model: no 150M-weight model is built."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from songseek.engine.encoders import msclap_backend, msclap_model, msclap_weights
from songseek.engine.errors import WeightsNotFoundError
from tests.engine.msclap_helpers import msclap_layout


@pytest.fixture(scope="module")
def layout() -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in msclap_layout().items()}


@pytest.fixture(scope="module")
def meta_model() -> msclap_model.MsClapModel:
    with torch.device("meta"):
        return msclap_model.MsClapModel()


def test_module_prefixes_map_as_without_them(layout: dict[str, torch.Tensor]) -> None:
    """A checkpoint saved from DataParallel (``module.`` before every key) maps to the same names."""
    plain = msclap_weights.msclap_to_native(layout)
    prefixed = msclap_weights.msclap_to_native({"module." + k: v for k, v in layout.items()})
    assert sorted(prefixed) == sorted(plain)
    assert all(prefixed[k].shape == plain[k].shape for k in plain)


def test_a_mapped_weight_the_model_lacks_is_an_unknown_weight(layout: dict[str, torch.Tensor],
                                                              meta_model: msclap_model.MsClapModel) -> None:
    """``caption_encoder.base.*`` maps to ``text.*`` whatever follows: one GPT-2 does not have is named."""
    sd = dict(layout, **{"caption_encoder.base.lm_head.weight": torch.empty(3, 3, device="meta")})
    mapped = msclap_weights.msclap_to_native(sd)
    assert "text.lm_head.weight" in mapped
    with pytest.raises(WeightsNotFoundError, match=r"x\.pth: .*unknown weight 'text\.lm_head\.weight'"):
        msclap_weights.check_state_dict(mapped, meta_model, "x.pth")


class _StandIn(torch.nn.Module):
    """Stands in for MsClapModel: text vectors from the ids (their sum in every dimension, plus the row)."""

    def embed_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        base = (ids * mask).sum(-1, keepdim=True).float() + torch.arange(len(ids))[:, None]
        return base + torch.zeros(len(ids), msclap_model.DIM)


def test_random_weights_never_read_nor_look_beside_the_checkpoint_given(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Any, bool]] = []

    def find(checkpoint: Any, allow_download: bool) -> None:
        asked.append((checkpoint, allow_download))
        return None

    monkeypatch.setattr(msclap_backend, "random_model", lambda seed=0: _StandIn())
    monkeypatch.setattr(msclap_backend, "find_gpt2_tokenizer", find)
    given = tmp_path / "CLAP_weights_2023.pth"
    given.write_bytes(b"not read")
    enc = msclap_backend.load(str(given), "cpu", True)
    assert enc.info.checkpoint == msclap_backend.RANDOM_CHECKPOINT and enc.info.checkpoint_sha256 == ""
    assert enc.embed_text(["jazz"]).shape == (1, msclap_model.DIM)
    assert asked == [(None, False)]  # no file beside it, no download for a plumbing run


def test_trained_weights_record_the_files_hash_and_may_fetch_the_tokenizer(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Any, bool]] = []

    def find(checkpoint: Any, allow_download: bool) -> None:
        asked.append((checkpoint, allow_download))
        return None

    path = tmp_path / "CLAP_weights_2023.pth"
    path.write_bytes(b"the weights' bytes")
    monkeypatch.setattr(msclap_backend, "load_model", lambda p: _StandIn())
    monkeypatch.setattr(msclap_backend, "find_gpt2_tokenizer", find)
    enc = msclap_backend.load(str(path), "cpu", False)
    assert enc.info.checkpoint == str(path) and not enc.info.random_weights
    assert enc.info.checkpoint_sha256 == hashlib.sha256(b"the weights' bytes").hexdigest()
    with pytest.raises(WeightsNotFoundError):
        enc.embed_text(["jazz"])
    assert asked == [(path, True)]


def test_no_texts_give_an_empty_1024_column_array(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(msclap_backend, "random_model", lambda seed=0: _StandIn())
    enc = msclap_backend.load(None, "cpu", True)
    out = enc.embed_text([])
    assert out.shape == (0, msclap_model.DIM) and out.dtype == np.float32
