"""benchmarks/text_speed.py: seeded query texts and the rows of a text-speed run (plumbing, fake encoder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from songseek.benchmarks.text_speed import MUSIC_WORDS, query_texts, run_text_speed
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


def test_query_texts_are_distinct_seeded_and_of_the_asked_length() -> None:
    for words in (1, 10, 60):
        texts = query_texts(25, words, seed=3)
        assert len(set(texts)) == 25 and all(len(t.split()) == words for t in texts)
        assert all(w in MUSIC_WORDS for t in texts for w in t.split())
        assert texts == query_texts(25, words, seed=3)
    assert query_texts(5, 10, seed=1) != query_texts(5, 10, seed=2)
    with pytest.raises(UsageError):
        query_texts(len(MUSIC_WORDS) + 1, 1, seed=0)


def test_run_text_speed_rows(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    ingest_table(vector_table(30, 32, seed=2), lib)
    report = run_text_speed(lib, ["torch", "auto"], encoder=FakeEncoder(), queries=4, words=(1, 10), threads=1)
    names = [r.name for r in report.latencies]
    assert names[0] == "baseline-77" and "audio-encode" in names and "audio query" in names
    for b in ("torch", "auto"):
        for w in (1, 10):
            assert f"encode {b} {w}w cold" in names and f"encode {b} {w}w cached" in names
        assert f"text query {b} cold" in names and f"text query {b} cached" in names
    by = {r.requested: r for r in report.backends}
    assert by["torch"].agreement is None and by["auto"].state is None  # the fake encoder has one path
    a = by["auto"].agreement
    assert a is not None and a.identical == 1.0 and by["auto"].min_cosine > 0.9999  # same path, same hits
    assert all(r.p50_ms >= 0 for r in report.latencies)
