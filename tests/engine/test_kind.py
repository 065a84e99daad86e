"""The query kind read from a query's form, and the ``auto`` rerank that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from songseek.benchmarks.synth.dataset import synth_track
from songseek.engine.query.fusion import RERANK_MODES
from songseek.engine.query.kind import is_tag_list, resolve_mode, shared_kind, text_kind
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, text_tracks


@pytest.mark.parametrize(("text", "kind"), [
    ("a saxophone solo over soft drums", "part"),
    ("Slow sad piano that turns into a string crescendo.", "part"),
    ("Chorus with drum beat, buzzy lead synth and picked guitar; powerful, busy, fast.", "part"),
    ("A calm intro: piano, soft and sparse.", "part"),  # a colon makes it a sentence, not tags
    ("A calm piece in D minor. It opens with piano; at 1:20 the strings come in.", "whole"),
    ("Is it loud? Yes, very loud!", "whole"),
    ("jazz, saxophone, calm", None),
    ("guitar, lead, drums, texture, fast, major, joyful", None),
    ("rock, electric guitar, upbeat", None),
    ("drums, bass", "part"),  # two items: too few to call a tag list
])
def test_text_kind_reads_the_form(text: str, kind: str | None) -> None:
    assert text_kind(text) == kind


def test_a_text_read_as_several_chunks_has_no_kind() -> None:
    assert text_kind("A calm piece. It opens with piano.", n_chunks=2) is None
    assert text_kind("a saxophone solo", n_chunks=1) == "part"


def test_tag_lists_need_short_items() -> None:
    assert is_tag_list("a, b, c")
    assert not is_tag_list("a slow and very quiet intro, strings, piano")
    assert not is_tag_list("a, , c")


def test_tag_items_end_at_three_words_and_every_sentence_mark_breaks_a_list() -> None:
    assert is_tag_list("soft piano intro, jazz, calm")           # TAG_MAX_WORDS words: still a tag
    assert not is_tag_list("soft piano intro loop, jazz, calm")  # one more: a phrase
    for mark in ".:;!?":
        assert not is_tag_list(f"jazz, calm{mark} slow, piano"), mark


def test_the_generator_captions_read_as_their_level() -> None:
    """The demo model's captions (benchmarks/synth): section captions one moment, whole-track
    descriptions a whole track, tags not known (what the rerank report relies on)."""
    for i in range(30):
        t = synth_track(11, i)
        assert text_kind(t.caption) == "whole"
        assert text_kind(t.tags) is None
        assert {text_kind(s) for s in t.section_captions} == {"part"}


def test_shared_kind_needs_one_form() -> None:
    assert shared_kind(["part", "part"]) == "part"
    assert shared_kind(["whole"]) == "whole"
    assert shared_kind(["part", "whole"]) is None
    assert shared_kind(["part", None]) is None
    assert shared_kind([]) is None


def test_resolve_mode_only_changes_auto() -> None:
    assert resolve_mode("auto", "part") == "part"
    assert resolve_mode("auto", "whole") == "whole"
    assert resolve_mode("auto", None) == "hedge"
    for mode in RERANK_MODES:
        if mode != "auto":
            assert resolve_mode(mode, "part") == mode


@pytest.fixture
def lib(tmp_path: Path) -> Library:
    return Library.open(build_library(tmp_path / "lib", text_tracks()))


@pytest.mark.parametrize(("text", "mode"), [
    ("soft piano and a flute", "part"),
    ("Soft piano first. Then loud drums.", "whole"),
    ("piano, drums, flute, strings", "hedge"),
])
def test_auto_search_runs_the_mode_of_the_query_kind(lib: Library, text: str, mode: str) -> None:
    vec = lib.embed_text([text])
    auto = lib.search(text, k=8, candidates=12)
    assert auto == lib.search(vector=vec[0], k=8, candidates=12, rerank=mode)
    assert {h.rerank for h in auto} == {mode} and auto[0].to_json()["rerank"] == mode  # what ran, said
    assert [h.track_id for h in auto] == [h.track_id for h in lib.search_texts([text], k=8, candidates=12)[0]]


def test_auto_differs_by_kind_and_an_explicit_mode_wins(lib: Library) -> None:
    text = "soft piano and a flute"
    vec = lib.embed_text([text])[0]
    assert lib.search(vector=vec, k=12, candidates=12) == lib.search(vector=vec, k=12, candidates=12, rerank="hedge")
    assert lib.search(text, k=12, candidates=12, rerank="mean") == lib.search(vector=vec, k=12, candidates=12,
                                                                              rerank="mean")
    orders = {m: [h.track_id for h in lib.search(vector=vec, k=12, candidates=12, rerank=m)]
              for m in ("part", "whole", "hedge")}
    assert len({tuple(o) for o in orders.values()}) > 1  # the kinds lead to different orders here

