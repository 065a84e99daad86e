"""engine/query/longtext.py: behaviour the main long-text tests leave open (found by a mutation sweep), each
checked against a direct computation (integer arithmetic, plain loops)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.longtext import approx_tokens, chunk_scores, chunk_text, text_chunks
from tests.rerank_parts_reference import naive_parts
from tests.rerank_reference import naive_scores


def test_approx_tokens_rounds_up_for_every_word_count() -> None:
    """ceil(1.3 x words) + 2, in integer arithmetic: 3 words are ceil(3.9) + 2 = 6 tokens, never 5."""
    for n in range(0, 120):
        text = " ".join(f"w{i}" for i in range(n))
        assert approx_tokens(text) == -(-13 * n // 10) + 2, n
    assert approx_tokens("one two three") == 6


def words(text: str) -> int:
    return len(text.split())


def test_a_long_sentence_is_cut_at_its_one_comma_or_colon_before_between_words() -> None:
    """A sentence past the limit is cut at commas and colons first (one is enough), then between words."""
    assert chunk_text("a, b c d", 3, words) == ["a,", "b c d"]  # word packing would give "a, b c" + "d"
    assert chunk_text("a: b c d", 3, words) == ["a:", "b c d"]
    assert chunk_text("a b c d e", 3, words) == ["a b c", "d e"]  # no clause mark: between words


def test_whitespace_runs_become_one_space_in_every_chunk() -> None:
    text = "soft  piano\n and\tdrums"
    assert chunk_text(text, 0, words) == ["soft piano and drums"]
    assert chunk_text(text, 100, words) == ["soft piano and drums"]
    assert chunk_text("a  b.   c\td.", 2, words) == ["a b.", "c d."]


class ApproxLimited(FakeEncoder):
    """The fake encoder with a token limit and no count_tokens: chunking uses approx_tokens."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._info: EncoderInfo = replace(FakeEncoder().info, text_max_tokens=limit)


def test_a_text_at_exactly_the_estimated_limit_is_one_chunk() -> None:
    """approx_tokens(text) == limit: the text fits and is read whole; packing to 90% applies only to a text that
    does not fit. 7 words are ceil(9.1) + 2 = 12 tokens."""
    text = "Soft piano opens. Then drums enter loudly."
    assert approx_tokens(text) == 12
    assert text_chunks(ApproxLimited(12), text) == [text]
    assert len(text_chunks(ApproxLimited(11), text)) == 2  # one token over: sentence chunks, each within 90%
    assert all(approx_tokens(c) <= int(11 * 0.9) for c in text_chunks(ApproxLimited(11), text))


def test_max_pooling_takes_the_best_chunks_parts_and_the_best_window_of_every_chunk() -> None:
    """pool "max" scores and explains a track by its best chunk (that chunk's r_k and r_t, not the largest of
    each over chunks), while best_window is the best window of any chunk. First case: chunk 0 matches the whole
    track moderately, chunk 1 one window strongly; second: chunk 0 wins by its peak though chunk 1 has the
    larger mean (r_k)."""
    for rows, window in (([[0.6, 0.6, 0.6, 0.6], [0.9, -0.5, -0.5, -0.5]], 0.9),
                         ([[1.0, 0.1, 0.1, 0.1], [0.35, 0.35, 0.35, 0.35]], 1.0)):
        sims = np.array([rows], np.float32)
        lengths = np.array([4])
        per = naive_scores("fusion", rows, FusionParams())
        parts = naive_parts("fusion", rows, FusionParams())
        best = int(np.argmax(per))
        assert best == 0
        for pool in ("max", "mean"):
            res = chunk_scores(sims, lengths, FusionParams(), pool, "fusion")
            assert res.best_window[0] == np.float32(window)  # the best window over every chunk
            if pool == "max":
                assert res.score[0] == pytest.approx(per[best], abs=1e-5)
                np.testing.assert_allclose([res.r_k[0], res.r_t[0]], parts[best][:2], atol=1e-5)
            else:
                np.testing.assert_allclose([res.r_k[0], res.r_t[0]], parts[:, :2].mean(0), atol=1e-5)
