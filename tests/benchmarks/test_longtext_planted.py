"""Planted long-caption benchmark: construction facts and the measured ordering (chunks beat truncation)."""

from __future__ import annotations

import numpy as np

from songseek.benchmarks.longtext_planted import BagOfWordsEncoder, make_planted_captions, run_longtext_planted
from songseek.engine.query.longtext import text_chunks


def test_bag_of_words_encoder_truncates_like_clap() -> None:
    enc = BagOfWordsEncoder(dim=16, limit=6)  # reads 4 words
    a, b = enc.embed_text(["soft piano loud drums quiet flute", "soft piano loud drums"])
    np.testing.assert_allclose(a, b)
    assert enc.count_tokens("soft piano, loud drums!") == 6
    chunks = text_chunks(enc, "Soft piano plays. Loud drums enter. A quiet flute ends.")
    assert all(enc.count_tokens(c) <= 6 for c in chunks) and len(chunks) == 3


def test_planted_windows_follow_the_sections() -> None:
    p = make_planted_captions(5, seed=3, dim=32, noise=0.0, style=0.0)
    assert len(p.frames) == p.counts.sum() and np.allclose(np.linalg.norm(p.frames, axis=1), 1, atol=1e-5)
    assert p.starts[0] == 0 and np.all(np.diff(p.starts) == p.counts[:-1])
    assert all(len(c.split()) <= 250 for c in p.captions)


def test_chunk_fusion_beats_truncation_on_long_captions() -> None:
    r = run_longtext_planted(80, seed=0, dim=64, noise=0.7, style=0.3, only_long=True)
    m = r["methods"]
    assert r["settings"]["queries"] > 20
    assert m["chunks-mean"]["MRR"] > m["truncate"]["MRR"]
    assert r["captions"]["share_over_limit"] > 0.3 and r["captions"]["max_chunks"] >= 2
