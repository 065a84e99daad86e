"""MS-CLAP text tokenisation against a plain re-implementation of msclap 1.3.4's own steps.

msclap (microsoft/CLAP, ``msclap/CLAPWrapper.py``): ``load_clap`` registers '!' as GPT-2's pad token
(``tokenizer.add_special_tokens({'pad_token': '!'})``); ``preprocess_text`` appends ``' <|endoftext|>'``
and calls ``encode_plus(text=..., add_special_tokens=True, max_length=77, padding='max_length')`` with
no ``truncation``, so nothing is cut; ``models/clap.py`` ``TextEncoder.forward`` reads GPT-2's hidden
state at ``torch.ne(input_ids, 0).sum(-1) - 1``. ``reference_tokens`` below is exactly that, on a copy
of the tokenizer, one text at a time (msclap's batch of texts of different lengths past 77 fails).

The tokenizers: a GPT-2-like byte-level BPE that merges '!!' and ' !' (as GPT-2's does, ids 3228 and
5145), so that msclap's '!' pad token matters; songseek's byte stand-in; and GPT-2's own when it is on
the machine.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from songseek.engine.encoders import gpt2_tokenizer, msclap_backend
from songseek.engine.encoders.base import EncoderInfo

torch.set_num_threads(1)
SHORT = "calm piano"
BANG = "wow!! a loud drum solo !"
INFO = EncoderInfo("msclap", "test", 1024, 44100, random_weights=True)
LONG = " ".join(["a slow jazz ballad with brushed drums, upright bass and a muted trumpet"] * 10)  # >77 tokens


@pytest.fixture(scope="module")
def random_enc() -> msclap_backend.MsClapEncoder:
    return msclap_backend.load(None, "cpu", True)


def merging_tokenizer() -> Any:
    """GPT-2's byte tokens plus a few of its merges: '!!' (3228), 'Ġ!' (5145), 'in' (259)... not GPT-2's
    vocabulary (no files here), but a tokenizer whose '!' merges, as GPT-2's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = gpt2_tokenizer._bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols)} | {"!!": 3228, "Ġ!": 5145, "in": 259, "Ġa": 257,
                                                     gpt2_tokenizer.END_OF_TEXT: gpt2_tokenizer.END_OF_TEXT_ID}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("!", "!"), ("Ġ", "!"), ("i", "n"), ("Ġ", "a")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([gpt2_tokenizer.END_OF_TEXT])
    end = gpt2_tokenizer.END_OF_TEXT
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=end, eos_token=end, unk_token=end)


def tokenizers() -> list[tuple[str, Any]]:
    out = [("merging", merging_tokenizer()), ("byte", gpt2_tokenizer.byte_tokenizer())]
    found = gpt2_tokenizer.find_gpt2_tokenizer(None, allow_download=False)
    return out + ([("gpt2", found[0])] if found is not None else [])


def reference_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[int], int]:
    """msclap's (input_ids, attention_mask, read index) for one text, step by step as msclap does them."""
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"pad_token": "!"})  # CLAPWrapper.load_clap, 'gpt' in text_model
    ttext = text + " <|endoftext|>"  # preprocess_text, 'gpt' in text_model
    enc = tok(text=ttext, add_special_tokens=True, max_length=77, padding="max_length", return_tensors="pt")
    ids = enc["input_ids"].reshape(-1)
    read = int(torch.ne(ids, 0).sum(-1) - 1)  # models/clap.py TextEncoder.forward
    return ids.tolist(), enc["attention_mask"].reshape(-1).tolist(), read


@pytest.mark.parametrize(("name", "tokenizer"), tokenizers(), ids=lambda v: v if isinstance(v, str) else "")
def test_token_ids_and_read_position_match_msclap(name: str, tokenizer: Any) -> None:
    texts = [SHORT, BANG, LONG]
    ids, mask = gpt2_tokenizer.tokenize(tokenizer, texts)
    read = torch.ne(ids, 0).sum(-1) - 1  # MsClapModel.embed_text's index
    for i, text in enumerate(texts):
        ref_ids, ref_mask, ref_read = reference_tokens(tokenizer, text)
        n = int(mask[i].sum())
        assert ids[i, :n].tolist() == ref_ids[:n] and ids[i, n:].eq(0).all()  # right-padded with '!'
        assert all(v == 0 for v in ref_ids[n:]) and ref_mask == [1] * n + [0] * (len(ref_mask) - n)
        assert int(read[i]) == ref_read
    long_ids, _, long_read = reference_tokens(tokenizer, LONG)
    assert len(long_ids) > 77 and ids.shape[1] == len(long_ids)  # msclap does not cut; neither does songseek
    assert long_ids[-1] == gpt2_tokenizer.END_OF_TEXT_ID and long_read == len(long_ids) - 1  # read at the end marker
    short_ids, _, short_read = reference_tokens(tokenizer, SHORT)
    assert len(short_ids) == 77 and short_ids[short_read] == gpt2_tokenizer.END_OF_TEXT_ID


def test_exclamation_marks_are_split_out_as_msclap_pads() -> None:
    tok = merging_tokenizer()
    assert tok.encode("wow!! yes !") == [86, 78, 86, 3228, 220, 88, 68, 82, 5145]  # '!!', ' !' merged
    ids, _ = gpt2_tokenizer.tokenize(tok, ["wow!! yes !"])
    assert ids[0].tolist() == [86, 78, 86, 0, 0, 220, 88, 68, 82, 220, 0, 220, gpt2_tokenizer.END_OF_TEXT_ID]
    assert tok.pad_token is None and "!" not in tok.get_added_vocab()  # the caller's tokenizer is left alone
    enc = msclap_backend.MsClapEncoder(torch.nn.Identity(), INFO, "cpu", None)  # type: ignore[arg-type]
    enc.set_tokenizer(tok, "test")
    assert tok.pad_token is None and enc._get_tokenizer().pad_token == "!"


def test_rows_past_gpt2_positions_keep_their_end_marker() -> None:
    """msclap's GPT-2 fails past 1024 positions; songseek keeps the first 1023 tokens and the end marker."""
    ids, mask = gpt2_tokenizer.tokenize(gpt2_tokenizer.byte_tokenizer(), ["x" * 3000, "y" * 1022, SHORT])
    assert ids.shape == (3, gpt2_tokenizer.MAX_POSITIONS) == (3, 1024)
    assert ids[0, -1] == gpt2_tokenizer.END_OF_TEXT_ID and mask[0].eq(1).all()
    assert ids[1, 1022:].tolist() == [220, gpt2_tokenizer.END_OF_TEXT_ID] and mask[1].eq(1).all()  # 1024: uncut
    assert mask[2].tolist() == reference_tokens(gpt2_tokenizer.byte_tokenizer(), SHORT)[1] + [0] * (1024 - 77)


def test_text_vectors_equal_msclaps_per_text_result_in_one_batch(random_enc: msclap_backend.MsClapEncoder) -> None:
    """A batch of a short, a '!' and a >77-token text = each text alone through msclap's steps (GPT-2 on
    its 77-padded or uncut ids, the state at msclap's index, the projection), where msclap itself would
    fail on the batch."""
    enc, model = random_enc, random_enc.model
    tok = merging_tokenizer()
    enc.set_tokenizer(tok, "test")
    texts = [SHORT, BANG, LONG]
    got = enc.embed_text(texts)
    want = []
    with torch.inference_mode():
        for text in texts:
            ref_ids, ref_mask, read = reference_tokens(tok, text)
            hidden = model.text(input_ids=torch.tensor([ref_ids]),
                                attention_mask=torch.tensor([ref_mask])).last_hidden_state[0]
            want.append(model.text_projection(hidden[read][None])[0].numpy())
    want_arr = np.stack(want)
    want_arr /= np.linalg.norm(want_arr, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want_arr, atol=1e-5)
