"""laion_pt's checks that the other tests left open (found by a mutation sweep): wrong shapes and extra
weights named in one line, a scalar ``qkv``, a model without the patch-embedding norm, which names are hub
file names, the offline hint, and which RoBERTa tokenizer wins. State dicts are built in memory from the
tiny random model (no file, no forward pass) and checked against plain expectations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from songseek.engine.encoders import laion_pt
from songseek.engine.errors import WeightsNotFoundError
from tests.engine.encoder_helpers import (
    WORDS,
    isolate_hf,
    save_swapped_tokenizer,
    save_tiny_tokenizer,
    tiny_config,
    tiny_model,
    to_original,
)


@pytest.fixture(scope="module")
def original() -> dict[str, torch.Tensor]:
    return to_original(tiny_model(tiny_config()).state_dict())


def test_a_weight_of_another_shape_is_one_named_error(original: dict[str, torch.Tensor]) -> None:
    key = "text_branch.pooler.dense.bias"  # not read for the architecture: only the shape check sees it
    bad = dict(original, **{key: torch.zeros(original[key].shape[0] + 1)})
    with pytest.raises(WeightsNotFoundError, match=r"pooler\.dense\.bias has shape") as err:
        laion_pt.build_model(bad, "bad.pt")
    assert "bad.pt" in str(err.value) and "\n" not in str(err.value)


def test_an_extra_text_weight_is_an_unknown_weight(original: dict[str, torch.Tensor]) -> None:
    extra = dict(original, **{"text_branch.lm_head.weight": torch.zeros(3, 3)})
    with pytest.raises(WeightsNotFoundError, match=r"unknown weight 'text_model\.lm_head\.weight'") as err:
        laion_pt.build_model(extra, "extra.pt")
    assert "extra.pt" in str(err.value)


def test_a_qkv_that_is_a_scalar_is_refused_not_a_traceback() -> None:
    with pytest.raises(WeightsNotFoundError, match=r"attn\.qkv\.bias has shape \(\)"):
        laion_pt.htsat_to_hf("layers.0.blocks.0.attn.qkv.bias", torch.tensor(1.0), "x.pt")
    fused = torch.arange(12.0).reshape(6, 2)
    parts = laion_pt.htsat_to_hf("layers.1.blocks.0.attn.qkv.weight", fused)
    assert parts is not None
    for i, name in enumerate(("query", "key", "value")):  # rows [0:2], [2:4], [4:6], in that order
        assert torch.equal(parts[f"layers.1.blocks.0.attention.self.{name}.weight"], fused[2 * i:2 * i + 2])


def test_a_model_without_the_patch_embedding_norm_maps_and_says_so() -> None:
    config = tiny_config()
    config.audio_config.enable_patch_layer_norm = False
    hf = tiny_model(config).state_dict()
    assert not any(k.startswith("audio_model.audio_encoder.patch_embed.norm.") for k in hf)
    model = laion_pt.build_model(to_original(hf), "nonorm.pt")
    assert model.config.audio_config.enable_patch_layer_norm is False
    loaded = model.state_dict()
    for key, value in hf.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize(("name", "want"), [
    ("630k-audioset-best.pt", "630k-audioset-best.pt"),
    ("lukewys/laion_clap/630k-audioset-best.pt", "630k-audioset-best.pt"),
    ("model.bin", None), ("630k-audioset-best.ckpt", None), ("other/repo/a.pt", None),
    ("lukewys/laion_clap/sub/a.pt", None),
])
def test_which_names_are_files_of_the_hub_repo(name: str, want: str | None, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # none of these exists locally
    if want is None:
        with pytest.raises(WeightsNotFoundError, match="--checkpoint PATH"):
            laion_pt.local_or_hub_name(name)
    else:
        assert laion_pt.local_or_hub_name(name) == want


def test_offline_the_missing_checkpoint_line_does_not_suggest_going_offline(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_hf(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFoundError) as err:
        laion_pt.resolve_checkpoint(None)
    msg = str(err.value)
    assert "HF_HUB_OFFLINE is set" in msg and "skips the network check" not in msg


def _ids(tok: Any, words: list[str]) -> list[int]:
    return list(tok.convert_tokens_to_ids(words))


def test_the_tokenizer_setting_wins_over_the_files_beside_the_checkpoint(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_hf(monkeypatch, tmp_path / "hf")
    beside = save_swapped_tokenizer(tmp_path / "ckpt")
    chosen = save_tiny_tokenizer(tmp_path / "env")
    plain = {w: i + 4 for i, w in enumerate(WORDS)}
    monkeypatch.setenv(laion_pt.TOKENIZER_ENV, str(chosen))
    tok = laion_pt.find_tokenizer(beside / "music.pt")
    assert tok is not None and _ids(tok, ["jazz", "metal"]) == [plain["jazz"], plain["metal"]]
    monkeypatch.delenv(laion_pt.TOKENIZER_ENV)
    tok = laion_pt.find_tokenizer(beside / "music.pt")  # no setting: the files beside the checkpoint
    assert tok is not None and _ids(tok, ["jazz", "metal"]) == [plain["metal"], plain["jazz"]]


def test_a_tokenizer_exactly_as_large_as_the_vocabulary_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real pair: RoBERTa's 50,265 tokens for a 50,265-row table. One more token than rows does not fit."""
    isolate_hf(monkeypatch, tmp_path / "hf")
    folder = save_tiny_tokenizer(tmp_path / "tok")
    size = 4 + len(WORDS)
    monkeypatch.setenv(laion_pt.TOKENIZER_ENV, str(folder))
    tok = laion_pt.find_tokenizer(None, vocab_size=size)
    assert tok is not None and len(tok) == size
    assert laion_pt.find_tokenizer(None, vocab_size=size - 1) is None


def test_the_mlp_ratio_and_mel_bands_are_read_off_the_shapes() -> None:
    """HTSAT widths other than the released files' (MLP 2x instead of 4x, 32 mel bands) are read, not assumed."""
    config = tiny_config()
    config.audio_config.mlp_ratio = 2.0
    config.audio_config.num_mel_bins = 32
    hf = tiny_model(config).state_dict()
    fc1 = hf["audio_model.audio_encoder.layers.0.blocks.0.intermediate.dense.weight"]
    assert tuple(fc1.shape) == (32, 16)  # 2 x width 16: what the reading must find
    sd = {k: torch.empty(v.shape, device="meta") for k, v in to_original(hf, extras=False).items()}
    audio = laion_pt.build_model(sd, "narrow.pt").config.audio_config
    assert audio.mlp_ratio == 2.0 and audio.num_mel_bins == 32


def test_half_precision_weights_load_as_the_models_float32(original: dict[str, torch.Tensor]) -> None:
    """A checkpoint saved in fp16 gives a float32 model holding the same (rounded) values: a half tower
    would not run on the float32 features songseek feeds it."""
    half = {k: v.half() if v.is_floating_point() else v for k, v in original.items()}
    model = laion_pt.build_model(half, "half.pt")
    params = dict(model.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.float32}
    key = "text_branch.pooler.dense.weight"
    assert torch.equal(params["text_model.pooler.dense.weight"], half[key].float())
