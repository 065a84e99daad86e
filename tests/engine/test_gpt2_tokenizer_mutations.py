"""gpt2_tokenizer details the MS-CLAP tests left open (found by a mutation sweep): the order and the
cache/download flag of the places a GPT-2 tokenizer is looked for, what counts as GPT-2's vocabulary, and
when ``with_pad_token`` copies. Fake tokenizers; nothing is read from the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from songseek.engine.encoders import gpt2_tokenizer


class _Fake:
    def __init__(self, ids: list[int] | None, size: int) -> None:
        self.ids, self.size = ids, size

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        if self.ids is None:
            raise KeyError(tokens[0])
        return self.ids

    def __len__(self) -> int:
        return self.size


GPT2 = _Fake([0, 50256], 50257)


@pytest.mark.parametrize(("tok", "expected"), [
    (GPT2, True), (_Fake([0, 50256], 50300), True), (_Fake([0, 50256], 50256), False),
    (_Fake([1, 50256], 50257), False), (_Fake([0, 2], 50257), False), (_Fake(None, 50257), False),
])
def test_is_gpt2_wants_both_ids_and_the_whole_vocabulary(tok: _Fake, expected: bool) -> None:
    assert gpt2_tokenizer.is_gpt2(tok) is expected


def _record(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> list[tuple[str, bool]]:
    asked: list[tuple[str, bool]] = []

    def load_tokenizer(source: str, local_only: bool, bpe_class: str = "") -> Any:
        asked.append((source, local_only))
        return answers.get(source) if local_only else answers.get("hub:" + source)

    monkeypatch.setattr(gpt2_tokenizer, "load_tokenizer", load_tokenizer)
    return asked


def test_lookup_order_env_then_beside_the_checkpoint_then_cache_then_hub(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.setenv(gpt2_tokenizer.TOKENIZER_ENV, str(tmp_path / "env"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ckpt = tmp_path / "w" / "CLAP_weights_2023.pth"
    asked = _record(monkeypatch, {"hub:gpt2": GPT2})
    assert gpt2_tokenizer.find_gpt2_tokenizer(ckpt, allow_download=True) == (GPT2, "gpt2")
    assert asked == [(str(tmp_path / "env"), True), (str(tmp_path / "w"), True), ("gpt2", True),
                     ("openai-community/gpt2", True), ("gpt2", False)]
    for allow, offline in ((False, ""), (True, "1")):  # no download when not allowed, or offline
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        asked.clear()
        assert gpt2_tokenizer.find_gpt2_tokenizer(ckpt, allow_download=allow) is None
        assert all(local for _, local in asked) and len(asked) == 4
    monkeypatch.delenv(gpt2_tokenizer.TOKENIZER_ENV)
    asked.clear()
    assert gpt2_tokenizer.find_gpt2_tokenizer(None, allow_download=False) is None
    assert asked == [("gpt2", True), ("openai-community/gpt2", True)]


def test_the_first_candidate_with_gpt2s_vocabulary_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(gpt2_tokenizer.TOKENIZER_ENV, str(tmp_path / "env"))
    other, beside = _Fake([0, 2], 50257), _Fake([0, 50256], 50258)
    ckpt = tmp_path / "w" / "x.pth"
    asked = _record(monkeypatch, {str(tmp_path / "env"): other, str(tmp_path / "w"): beside, "gpt2": GPT2})
    found = gpt2_tokenizer.find_gpt2_tokenizer(ckpt, allow_download=False)
    assert found is not None and found[0] is beside and found[1] == str(tmp_path / "w")
    assert len(asked) == 2  # stops at the first GPT-2 vocabulary


def test_with_pad_token_copies_unless_in_place() -> None:
    tok = gpt2_tokenizer.byte_tokenizer()
    copy = gpt2_tokenizer.with_pad_token(tok)
    assert copy is not tok and tok.pad_token is None and copy.pad_token == "!"
    assert copy.convert_tokens_to_ids("!") == gpt2_tokenizer.PAD_ID
    assert gpt2_tokenizer.with_pad_token(copy) is copy  # registered already: used as is
    same = gpt2_tokenizer.with_pad_token(tok, in_place=True)
    assert same is tok and tok.pad_token == "!" and "!" in tok.get_added_vocab()
