"""GPT-2 tokenisation as MS-CLAP does it, and where the GPT-2 tokenizer files are found.

MS-CLAP (msclap 1.3.4, ``CLAPWrapper.preprocess_text``) appends `` <|endoftext|>`` to every text,
tokenises it with GPT-2's tokenizer on which it has registered '!' (id 0) as the pad token
(``add_special_tokens({'pad_token': '!'})``, so every '!' is split out as its own token and never merged
into '!!' or ' !'), pads with '!' on the right to 77 tokens and reads the text embedding at index
``(ids != 0).sum() - 1``: the end marker for a text without '!'. It passes ``max_length=77`` with
``padding='max_length'`` but no ``truncation``, and transformers then does not cut: a text of more than
77 tokens keeps all its tokens, end marker included (msclap fails only when such texts of different
lengths share a batch). ``tokenize`` does the same: nothing is cut below GPT-2's 1024 positions (a row
longer than that, where msclap's GPT-2 would fail, keeps its first 1023 tokens and the end marker), and
rows are padded to the longest text of the batch: GPT-2 attends causally, so the state at the read token
does not depend on later padding, which makes this equal to padding to 77 and faster for short queries.
``MAX_TOKENS`` (77, msclap's ``text_len``) is what ``EncoderInfo.text_max_tokens`` reports, the length
long queries are chunked to (engine/query/longtext.py), not a cut.

The tokenizer files (``vocab.json`` + ``merges.txt`` or ``tokenizer.json`` of ``gpt2``) are looked up,
in order: the folder in ``$SONGSEEK_GPT2_TOKENIZER``, the checkpoint's own folder, the Hugging Face
cache (``gpt2``, ``openai-community/gpt2``) and, when online and allowed, ``gpt2`` from the hub. A
candidate is accepted only if it is GPT-2's vocabulary ('!' = 0, ``<|endoftext|>`` = 50256).

``byte_tokenizer`` is the stand-in for random-weight models when no GPT-2 files are on the machine:
GPT-2's byte-level BPE without its merges, i.e. every UTF-8 byte becomes GPT-2's own single-byte
token (ids 0-255) and ``<|endoftext|>`` stays 50256. Its ids are valid GPT-2 ids, but it is not
GPT-2's tokenisation; it only serves plumbing runs, whose vectors mean nothing anyway.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from ._torch_util import offline
from .clap_hf import load_tokenizer

TOKENIZER_ENV = "SONGSEEK_GPT2_TOKENIZER"
HUB_IDS = ("gpt2", "openai-community/gpt2")
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
SUFFIX = " " + END_OF_TEXT
MAX_TOKENS = 77  # msclap's text_len: the length it pads to (not a cut; see the module docstring)
MAX_POSITIONS = 1024  # GPT-2 small's n_positions: the longest row its position table can read
PAD = "!"
PAD_ID = 0  # '!' in GPT-2's vocabulary; msclap's pad token
BYTE_TOKENIZER = "byte-level stand-in (GPT-2's 256 byte tokens, no merges)"


def is_gpt2(tokenizer: Any) -> bool:
    """True for a tokenizer with GPT-2's vocabulary ids ('!' = 0, <|endoftext|> = 50256)."""
    try:
        ids = tokenizer.convert_tokens_to_ids(["!", END_OF_TEXT])
    except Exception:
        return False
    return list(ids) == [PAD_ID, END_OF_TEXT_ID] and len(tokenizer) >= END_OF_TEXT_ID + 1


def find_gpt2_tokenizer(checkpoint: Path | None, allow_download: bool) -> tuple[Any, str] | None:
    """(GPT-2 tokenizer, where it came from), or None when no candidate holds GPT-2's files."""
    candidates: list[tuple[str, bool]] = []
    if os.environ.get(TOKENIZER_ENV):
        candidates.append((os.environ[TOKENIZER_ENV], True))
    if checkpoint is not None:
        candidates.append((str(checkpoint.parent), True))
    candidates += [(i, True) for i in HUB_IDS]  # the HF cache first
    if allow_download and not offline():
        candidates.append((HUB_IDS[0], False))
    for source, local_only in candidates:
        tok = load_tokenizer(source, local_only, "GPT2Tokenizer")
        if tok is not None and is_gpt2(tok):
            return tok, source
    return None


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in GPT-2's id order (id = list index)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


def byte_tokenizer() -> Any:
    """GPT-2's byte-level tokenizer without merges (see the module docstring); built here, no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(_bytes_to_unicode())} | {END_OF_TEXT: END_OF_TEXT_ID}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([END_OF_TEXT])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   unk_token=END_OF_TEXT)


def with_pad_token(tokenizer: Any, in_place: bool = False) -> Any:
    """``tokenizer`` with '!' registered as its pad (special) token, as msclap's ``load_clap`` does: then
    every '!' of a text is its own token, id 0. A copy unless ``in_place`` (or it is registered already)."""
    if tokenizer.pad_token == PAD and PAD in tokenizer.get_added_vocab():
        return tokenizer
    tok = tokenizer if in_place else copy.deepcopy(tokenizer)
    tok.add_special_tokens({"pad_token": PAD})
    return tok


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """One text's ids as msclap's ``preprocess_text`` makes them, before padding: ``text + ' <|endoftext|>'``,
    '!' a special token, nothing cut (beyond 1024 positions: the first 1023 and the end marker)."""
    return _ids(with_pad_token(tokenizer), text)


def _ids(tokenizer: Any, text: str) -> list[int]:
    """``token_ids`` for a tokenizer ``with_pad_token`` has prepared already."""
    row = list(tokenizer.encode(text + SUFFIX, add_special_tokens=True))
    return row if len(row) <= MAX_POSITIONS else [*row[: MAX_POSITIONS - 1], END_OF_TEXT_ID]


def tokenize(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """MS-CLAP's token ids for ``texts`` (``token_ids`` of each, '!'-padded on the right to the longest)
    and the attention mask; both int64 (len(texts), length)."""
    tokenizer = with_pad_token(tokenizer)
    rows = [_ids(tokenizer, t) for t in texts]  # prepared once per batch, not once per text
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
