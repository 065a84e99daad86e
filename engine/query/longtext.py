"""Long captions (CoLLAP, 250+ words) without silent truncation: sentence chunks × windows, fused.

A CLAP text tower reads at most ``EncoderInfo.text_max_tokens`` tokens (77 for LAION-CLAP; 0 = no known
limit) and drops the rest. A text longer than that is split here into chunks of whole sentences that each
fit, every chunk is embedded, and tracks are scored on the chunk-by-window similarity matrix:

    score(track) = mean over chunks c of fuse(s_c)        s_c[t] = cos(chunk c, window t)

where ``fuse`` is the temporal-attention fusion search uses (engine/query/fusion.py) — each chunk finds the part
of the track it describes (a caption's sentences usually follow the track's sections) and every chunk
counts equally (``CHUNK_POOLS`` has the alternatives, measured in docs/analysis.md). The best segment is
the one of the chunk whose fused score is highest. Where one vector is needed (``embed_texts``: query
files, candidate generation), a long text is the re-normalised mean of its chunk vectors.

Counting tokens: an encoder with a ``count_tokens(text) -> int`` method is asked (it counts what the model
counts toward its limit); otherwise tokens ≈ ceil(1.3 × words) + 2 (start/end tokens) and chunks are packed
to 90% of the limit. On MusicCaps captions and LAION-CLAP's RoBERTa tokenizer the real ratio is 1.24
tokens per word and this estimate agrees with the tokenizer on "longer than 77" for 92% of captions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from songseek.engine.encoders.base import Encoder, l2_normalize
from songseek.engine.encoders.text_cache import normalize_text
from songseek.engine.errors import QueryError, UsageError
from songseek.engine.query.align import align_rerank
from songseek.engine.query.fusion import FusionParams, FusionResult, rerank_scores
from songseek.engine.query.kind import Kind, text_kind

TOKENS_PER_WORD = 1.3
SPECIAL_TOKENS = 2
APPROX_BUDGET = 0.9
CHUNK_POOLS = ("mean", "max", "meanvec")
DEFAULT_POOL = "mean"
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_CLAUSE_END = re.compile(r"(?<=[,:])\s+")


def approx_tokens(text: str) -> int:
    """ceil(1.3 × words) + 2: the fallback token count for encoders without ``count_tokens``."""
    return math.ceil(TOKENS_PER_WORD * len(text.split())) + SPECIAL_TOKENS


def token_counter(encoder: Any) -> tuple[Callable[[str], int], bool]:
    """(count function, exact?) for an encoder: its ``count_tokens`` when it has one, else the estimate."""
    fn = getattr(encoder, "count_tokens", None)
    if callable(fn):
        return (lambda text: int(fn(text))), True
    return approx_tokens, False


def token_limit(encoder: Encoder) -> int:
    """How many tokens of a text the encoder reads (0 = no known limit: texts are never chunked)."""
    return int(getattr(encoder.info, "text_max_tokens", 0) or 0)


def split_sentences(text: str) -> list[str]:
    """Sentences (split after . ! ? ;), stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def chunk_text(text: str, max_tokens: int, count: Callable[[str], int] = approx_tokens) -> list[str]:
    """Whole sentences packed greedily, in order, into chunks of at most ``max_tokens`` (by ``count``).

    A sentence longer than the limit alone is cut at commas/colons, then between words; a single word
    longer than the limit is its own chunk (the encoder truncates that one word's tail: nothing else
    can be done). ``max_tokens`` <= 0 means no limit: the whole text is one chunk."""
    text = " ".join(text.split())
    if not text:
        raise QueryError("the text query is empty: describe the music you are looking for")
    if max_tokens <= 0 or count(text) <= max_tokens:
        return [text]
    pieces: list[str] = []
    for sentence in split_sentences(text):
        pieces += _fit(sentence, max_tokens, count)
    return _pack(pieces, max_tokens, count)


def _fit(sentence: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    if count(sentence) <= max_tokens:
        return [sentence]
    clauses = [c for c in _CLAUSE_END.split(sentence) if c]
    if len(clauses) > 1:
        return [p for c in clauses for p in _fit(c, max_tokens, count)]
    return _pack(sentence.split(), max_tokens, count)


def _pack(pieces: list[str], max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """Join consecutive pieces with spaces, greedily, into as few chunks of at most max_tokens as fit."""
    out: list[str] = []
    current = ""
    for piece in pieces:
        joined = f"{current} {piece}" if current else piece
        if current and count(joined) > max_tokens:
            out.append(current)
            current = piece
        else:
            current = joined
    if current:
        out.append(current)
    return out


def text_chunks(encoder: Encoder, text: str) -> list[str]:
    """The chunks ``text`` is embedded as with this encoder (one chunk when it fits)."""
    limit = token_limit(encoder)
    count, exact = token_counter(encoder)
    if limit <= 0:
        return chunk_text(text, 0, count)
    if count(text) <= limit:
        return [" ".join(text.split())]
    return chunk_text(text, limit if exact else max(1, int(limit * APPROX_BUDGET)), count)


@dataclass(frozen=True)
class ChunkedText:
    """A text as the encoder sees it: ``chunks`` and their unit vectors float32 (C, dim)."""

    text: str
    chunks: tuple[str, ...]
    vectors: np.ndarray

    @property
    def mean_vector(self) -> np.ndarray:
        """float32 (dim,): the re-normalised mean of the chunk vectors."""
        return l2_normalize(self.vectors.mean(axis=0, keepdims=True))[0]

    @property
    def kind(self) -> Kind:
        """What the text describes as the ``auto`` rerank reads it (engine/query/kind.py)."""
        return text_kind(self.text, len(self.chunks))


def embed_chunked(encoder: Encoder, texts: list[str]) -> list[ChunkedText]:
    """Chunk every text and embed all chunks in one ``embed_text`` call. The model sees each chunk
    normalised (NFC, whitespace runs collapsed): RoBERTa tokenises "calm  piano" and a decomposed "é" apart,
    and the text cache keys on the normalised text, so without this a search with the cache off (or before
    the text was cached) got another vector than one with it."""
    chunked = [text_chunks(encoder, t) for t in texts]
    flat = [normalize_text(c) for cs in chunked for c in cs]
    vecs = np.asarray(encoder.embed_text(flat), dtype=np.float32) if flat else np.zeros((0, encoder.info.dim))
    out, i = [], 0
    for t, cs in zip(texts, chunked):
        out.append(ChunkedText(t, tuple(cs), vecs[i:i + len(cs)]))
        i += len(cs)
    return out


def embed_texts(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """float32 (len(texts), dim): one unit vector per text, a long text's being its mean chunk vector."""
    if not texts:
        return np.zeros((0, encoder.info.dim), np.float32)
    chunked = embed_chunked(encoder, texts)
    if len(chunked) == 1 and len(chunked[0].chunks) == 1:
        # the common query: one short text, whose vector is already a unit vector (a cached query pays
        # only the lookup; the mean and re-normalisation were half of its 0.05 ms)
        return np.asarray(chunked[0].vectors, dtype=np.float32)
    return np.stack([c.mean_vector for c in chunked]).astype(np.float32)


def chunk_scores(sims: np.ndarray, lengths: np.ndarray, params: FusionParams | None = None,
                 pool: str = DEFAULT_POOL, mode: str = "fusion") -> FusionResult:
    """Track scores from chunk-by-window similarities.

    sims float (B, C, Tmax): s[b, c, t] = cos(chunk c, window t of track b), valid for t < lengths[b];
    ``mode`` scores each chunk's row (fusion / mean / max, as rerank_scores), except ``align``: the chunks are
    an audio excerpt's windows, matched in order (engine/query/align.py). ``pool`` combines chunks:
    ``mean`` (the default: every chunk counts), ``max`` (the best chunk), ``meanvec`` (score the mean of
    the chunk rows, i.e. the similarity with the mean chunk vector up to its norm). Returns a FusionResult
    whose segment is the best chunk's (for ``meanvec``: the mean row's)."""
    if pool not in CHUNK_POOLS:
        raise UsageError(f"chunk pooling must be one of {', '.join(CHUNK_POOLS)}, got {pool!r}")
    sims = np.asarray(sims, dtype=np.float32)
    if sims.ndim != 3:
        raise UsageError(f"chunk similarities must be (tracks, chunks, windows), got shape {sims.shape}")
    b, c, tmax = sims.shape
    if mode == "align" and c > 1:  # an audio excerpt's windows against the track's, in order
        score, first, last = align_rerank(sims, lengths)
        best_window = np.where(np.arange(tmax) < np.asarray(lengths)[:, None, None], sims, -np.inf).max(axis=(1, 2))
        s32 = score.astype(np.float32)
        return FusionResult(score=s32, r_k=s32.copy(), r_t=s32.copy(), best_window=best_window.astype(np.float32),
                            seg_first=first, seg_last=last)
    if pool == "meanvec" or c == 1:
        return rerank_scores(mode, sims.mean(axis=1), lengths, params)
    flat = rerank_scores(mode, sims.reshape(b * c, tmax), np.repeat(np.asarray(lengths), c), params)

    def per(x: np.ndarray) -> np.ndarray:
        return np.asarray(x).reshape(b, c)

    score = per(flat.score)
    best = np.argmax(score, axis=1)
    rows = np.arange(b)
    pooled = score.mean(axis=1) if pool == "mean" else score.max(axis=1)
    r_k = per(flat.r_k).mean(axis=1) if pool == "mean" else per(flat.r_k)[rows, best]
    r_t = per(flat.r_t).mean(axis=1) if pool == "mean" else per(flat.r_t)[rows, best]
    return FusionResult(score=pooled.astype(np.float32), r_k=r_k.astype(np.float32), r_t=r_t.astype(np.float32),
                        best_window=per(flat.best_window).max(axis=1).astype(np.float32),
                        seg_first=per(flat.seg_first)[rows, best].astype(np.int64),
                        seg_last=per(flat.seg_last)[rows, best].astype(np.int64))
