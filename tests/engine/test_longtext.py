"""Long texts: sentence chunking within the token limit, chunk×window fusion against naive references."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders import register_encoder
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.encoders.text_cache import TextVectorCache, with_text_cache
from songseek.engine.errors import QueryError, UsageError
from songseek.engine.query.fusion import FusionParams, rerank_scores
from songseek.engine.query.longtext import (
    approx_tokens,
    chunk_scores,
    chunk_text,
    embed_chunked,
    embed_texts,
    split_sentences,
    text_chunks,
)
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, noisy_copies
from tests.rerank_parts_reference import naive_parts
from tests.rerank_reference import naive_scores

LIMIT = 12


class LimitedEncoder(FakeEncoder):
    """The fake encoder with a word-token limit: it reads the first LIMIT words, as CLAP reads 77 tokens."""

    def __init__(self, exact: bool = True) -> None:
        super().__init__()
        self._info: EncoderInfo = replace(FakeEncoder().info, name="fake-limited", text_max_tokens=LIMIT)
        if exact:
            self.count_tokens = lambda text: len(text.split())

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return super().embed_text([" ".join(t.split()[:LIMIT]) for t in texts])


register_encoder("fake-limited", lambda checkpoint, device, random_weights: LimitedEncoder())
LONG = ("Soft piano opens the track. Then loud drums and bass enter with a fast beat, and the energy rises. "
        "A quiet flute melody closes it over sustained strings; the end fades out slowly.")


def test_approx_tokens() -> None:
    assert approx_tokens("a b c d e f g h i j") == 13 + 2
    assert approx_tokens("") == 2


def test_split_sentences() -> None:
    assert split_sentences(" A b.  C d!  E; f? g ") == ["A b.", "C d!", "E;", "f?", "g"]


@pytest.mark.parametrize("limit", [3, 5, 8, 12, 30])
def test_chunks_fit_keep_every_word_in_order(limit: int) -> None:
    def count(t: str) -> int:
        return len(t.split())

    chunks = chunk_text(LONG, limit, count)
    assert " ".join(chunks).split() == LONG.split()  # nothing dropped, nothing reordered
    assert all(count(c) <= limit for c in chunks)
    if limit >= 15:  # every sentence fits: chunks end at sentence ends
        assert all(c.endswith((".", ";")) for c in chunks)


def test_greedy_packing_uses_few_chunks() -> None:
    chunks = chunk_text("a b. c d. e f. g h.", 4, lambda t: len(t.split()))
    assert chunks == ["a b. c d.", "e f. g h."]


def test_no_limit_or_short_text_is_one_chunk() -> None:
    assert chunk_text(LONG, 0) == [" ".join(LONG.split())]
    assert chunk_text("short text", 77) == ["short text"]
    with pytest.raises(QueryError):
        chunk_text("   ", 10)


def test_text_chunks_uses_count_tokens_when_there_is_one() -> None:
    exact, approx = LimitedEncoder(exact=True), LimitedEncoder(exact=False)
    assert all(len(c.split()) <= LIMIT for c in text_chunks(exact, LONG))
    # the approximation (1.3 tokens per word + 2, packed to 90%) makes smaller chunks
    assert all(approx_tokens(c) <= int(LIMIT * 0.9) or len(c.split()) == 1 for c in text_chunks(approx, LONG))
    assert len(text_chunks(approx, LONG)) > len(text_chunks(exact, LONG))
    assert text_chunks(FakeEncoder(), LONG) == [" ".join(LONG.split())]  # text_max_tokens 0: no limit


def test_embed_texts_is_the_normalised_mean_of_chunk_vectors() -> None:
    enc = LimitedEncoder()
    [ct] = embed_chunked(enc, [LONG])
    np.testing.assert_allclose(ct.vectors, enc.embed_text(list(ct.chunks)), atol=1e-6)
    v = ct.vectors.mean(0)
    np.testing.assert_allclose(embed_texts(enc, [LONG, "soft piano"])[0], v / np.linalg.norm(v), atol=1e-6)
    np.testing.assert_allclose(embed_texts(enc, ["soft piano"])[0], enc.embed_text(["soft piano"])[0], atol=1e-6)


@pytest.mark.parametrize("pool", ["mean", "max", "meanvec"])
@pytest.mark.parametrize("mode", ["fusion", "mean", "max"])
def test_chunk_scores_match_naive(pool: str, mode: str) -> None:
    rng = np.random.default_rng(0)
    lengths = np.array([1, 4, 9, 6])
    sims = rng.uniform(-1, 1, (4, 3, 9)).astype(np.float32)
    res = chunk_scores(sims, lengths, FusionParams(), pool, mode)
    # One query: every (track, chunk) row shares the query's scale (naive_scores standardises over all).
    rows = [list(sims[b, c, :n]) for b, n in enumerate(lengths) for c in range(3)]
    per_all = np.array(naive_scores(mode, rows, FusionParams())).reshape(4, 3)
    parts_all = naive_parts(mode, rows).reshape(4, 3, 3)
    flat = rerank_scores(mode, sims.reshape(12, 9), np.repeat(lengths, 3))
    vec_rows = [list(sims[b, :, :n].mean(0)) for b, n in enumerate(lengths)]
    vec, vec_parts = naive_scores(mode, vec_rows, FusionParams()), naive_parts(mode, vec_rows)
    for b, n in enumerate(lengths):
        per = per_all[b]
        want = {"mean": np.mean(per), "max": np.max(per), "meanvec": vec[b]}[pool]
        assert res.score[b] == pytest.approx(want, abs=1e-5)
        best = int(np.argmax(per))
        # the parts: the mean over chunks, the best chunk's, or the mean row's
        parts = {"mean": parts_all[b].mean(0), "max": parts_all[b, best], "meanvec": vec_parts[b]}[pool][:2]
        np.testing.assert_allclose([res.r_k[b], res.r_t[b]], parts, atol=1e-5)
        # the best window over every chunk (of the mean row for meanvec)
        assert res.best_window[b] == pytest.approx(max(vec_rows[b]) if pool == "meanvec" else sims[b, :, :n].max(),
                                                   abs=1e-6)
        if pool != "meanvec":
            assert (res.seg_first[b], res.seg_last[b]) == (flat.seg_first[3 * b + best], flat.seg_last[3 * b + best])


def test_one_chunk_is_exactly_the_plain_rerank() -> None:
    rng = np.random.default_rng(1)
    sims = rng.uniform(-1, 1, (5, 7)).astype(np.float32)
    lengths = np.array([7, 3, 1, 5, 7])
    a, b = chunk_scores(sims[:, None, :], lengths), rerank_scores("fusion", sims, lengths)
    for x, y in zip(a.__dict__.values(), b.__dict__.values()):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(UsageError):
        chunk_scores(sims, lengths)


def test_library_search_scores_long_text_on_chunks(tmp_path: Path) -> None:
    """Every chunk of the caption describes one section; the right track matches them all, in order."""
    enc = LimitedEncoder()
    rng = np.random.default_rng(2)
    sentences = split_sentences(LONG)
    sec = enc.embed_text(sentences)
    right = np.concatenate([noisy_copies(v, 2, 0.5, rng) for v in sec])
    # a track that matches what the truncated caption (its first LIMIT words) says, and nothing more
    wrong_first_only = noisy_copies(enc.embed_text([LONG])[0], 6, 0.5, rng)
    others = [noisy_copies(rng.standard_normal(32), 5, 0.5, rng) for _ in range(10)]
    info = EncoderInfo("fake-limited", "fake", 32, 16000, random_weights=True, text_max_tokens=LIMIT)
    root = build_library(tmp_path / "lib", [wrong_first_only, right, *others], encoder=info)
    lib = Library.open(root)
    hits = lib.search(LONG, k=12, candidates=12)
    assert hits[0].track_id == "t001"
    # naive: every track, chunk fusion with the mean over chunks
    [ct] = embed_chunked(enc, [LONG])
    assert len(ct.chunks) > 1
    tracks = lib.tracks.to_pylist()
    rows = [list(lib.store.vectors(r["frame_start"], r["frame_count"]) @ q) for r in tracks for q in ct.vectors]
    per = np.array(naive_scores("fusion", rows, FusionParams())).reshape(len(tracks), len(ct.vectors))
    naive = {r["track_id"]: float(per[i].mean()) for i, r in enumerate(tracks)}
    assert [h.track_id for h in hits] == sorted(naive, key=lambda t: (-naive[t], t))
    for h in hits:
        assert h.score == pytest.approx(naive[h.track_id], abs=1e-5)
    # truncation (what the encoder alone does) would prefer the track that matches the first sentence only
    trunc = lib.search(vector=enc.embed_text([LONG])[0], k=1, candidates=12)
    assert trunc[0].track_id == "t000"


def test_search_texts_ranks_every_text_as_search_does(tmp_path: Path) -> None:
    """A batch (what `--query-file` runs) mixes short texts and long captions; each gets the hits a single
    ``search(text)`` gives it, long ones through the chunk rerank, not the mean chunk vector."""
    enc = LimitedEncoder()
    rng = np.random.default_rng(3)
    sec = enc.embed_text(split_sentences(LONG))
    right = np.concatenate([noisy_copies(v, 2, 0.5, rng) for v in sec])
    others = [noisy_copies(rng.standard_normal(32), 5, 0.5, rng) for _ in range(10)]
    info = EncoderInfo("fake-limited", "fake", 32, 16000, random_weights=True, text_max_tokens=LIMIT)
    lib = Library.open(build_library(tmp_path / "lib", [right, *others], encoder=info))
    texts = ["soft piano", LONG, "loud drums and bass", LONG + " Then silence."]
    batch = lib.search_texts(texts, k=5, candidates=11)
    assert [len(hits) for hits in batch] == [5, 5, 5, 5]
    for text, hits in zip(texts, batch):
        assert hits == lib.search(text, k=5, candidates=11)
    assert batch[1] != lib.search(vector=embed_texts(enc, [LONG])[0], k=5, candidates=11)  # not the mean
    with pytest.raises(QueryError, match="empty"):
        lib.search_texts(["fine", "  "])


def test_query_kind_is_the_form_only_for_a_text_read_in_one_piece(tmp_path: Path) -> None:
    """A caption past the token limit is scored chunk by chunk, so its kind is not known (auto: hedge)."""
    rng = np.random.default_rng(5)
    info = EncoderInfo("fake-limited", "fake", 32, 16000, random_weights=True, text_max_tokens=LIMIT)
    lib = Library.open(build_library(tmp_path / "lib", [noisy_copies(rng.standard_normal(32), 4, 0.5, rng)
                                                       for _ in range(3)], encoder=info))
    assert lib.query_kind("soft piano") == "part"
    assert lib.query_kind("Soft piano. Then drums.") == "whole"
    assert lib.query_kind(LONG) is None
    assert {h.rerank for h in lib.search(LONG, k=3)} == {"hedge"}


def test_the_model_sees_each_chunk_normalised_with_or_without_the_text_cache() -> None:
    """RoBERTa tokenises "calm  piano" and a decomposed é apart from their normal forms; the text cache keys
    on the normal form. Both paths now hand the model the normal form, so they give one vector."""
    seen: list[str] = []

    class Recording(FakeEncoder):
        def embed_text(self, texts: list[str]) -> np.ndarray:
            seen.extend(texts)
            return super().embed_text(texts)

    raw = ["calm  piano\tsolo", "cafe\u0301 jazz"]
    plain = embed_texts(Recording(), raw)
    assert seen == ["calm piano solo", "caf\u00e9 jazz"]
    seen.clear()
    cached = embed_texts(with_text_cache(Recording(), TextVectorCache()), raw)
    assert seen == ["calm piano solo", "caf\u00e9 jazz"]
    np.testing.assert_array_equal(plain, cached)
