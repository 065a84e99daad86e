"""Public query methods given the wrong type or value: one QueryError that says what to pass, never an
AttributeError/IndexError from deep inside, and never a silent wrong answer (a generator read empty, a
str embedded character by character, int16 samples embedded 32768 times too loud)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from songseek import FilterLimits, FusionParams, Library, QueryError, SearchOptions
from songseek.engine.encoders.base import l2_normalize
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.storage.manifest import Manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")
SR = 16_000


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root: Path = tmp_path_factory.mktemp("types") / "lib"
    rng = np.random.default_rng(0)
    with LibraryWriter(root, Manifest(encoder=FakeEncoder().info, window_s=10.0, hop_s=10.0)) as w:
        for i in range(5):
            n = 1 + i % 3
            starts = np.arange(n) * 10.0
            w.add_track(TrackRecord(track_id=f"t{i}", path=f"/music/{i}.wav", duration_s=10.0 * n),
                        l2_normalize(rng.standard_normal((n, 32)).astype(np.float32)), starts, starts + 10)
        w.commit()
        w.update_index()
    return Library.open(root, encoder=FakeEncoder())


@pytest.mark.parametrize("text", [5, b"piano", ["piano"], None])
def test_a_text_that_is_not_a_str_is_a_query_error(lib: Library, text: Any) -> None:
    with pytest.raises(QueryError, match="must be a str"):
        lib.search_texts([text])
    with pytest.raises(QueryError, match="must be a str"):
        lib.query_kind(text)
    if text is not None:  # None is "no query": give exactly one of ...
        with pytest.raises(QueryError, match="must be a str"):
            lib.search(text)


def test_search_texts_reads_a_generator_and_refuses_a_non_iterable(lib: Library) -> None:
    texts = ["a piano", "brass"]
    assert lib.search_texts(t for t in texts) == lib.search_texts(texts)  # was [] (the check ate it)
    with pytest.raises(QueryError, match="list of texts"):
        lib.search_texts(None)  # type: ignore[arg-type]


def test_embed_text_refuses_a_bare_string(lib: Library) -> None:
    assert lib.embed_text(["piano"]).shape == (1, 32)
    with pytest.raises(QueryError, match=r"list of texts.*embed_text\(\[text\]\)"):
        lib.embed_text("piano")  # type: ignore[arg-type]  # was 5 rows, one per character


@pytest.mark.parametrize("option, value", [("where", 5), ("fusion", {"gamma_k": 1.0}),
                                           ("filter_limits", {"timeout_s": 1.0})])
def test_options_of_the_wrong_type_are_query_errors(lib: Library, option: str, value: Any) -> None:
    with pytest.raises(QueryError, match=f"{option} must be a"):
        lib.search(vector=np.ones(32, np.float32), **{option: value})
    with pytest.raises(QueryError, match="SearchOptions"):
        lib.search(vector=np.ones(32, np.float32), options={"k": 3})  # type: ignore[arg-type]
    ok = SearchOptions(k=2, where="year IS NULL", fusion=FusionParams(), filter_limits=FilterLimits())
    assert len(lib.search(vector=np.ones(32, np.float32), options=ok)) == 2


@pytest.mark.parametrize("kinds", [["moment"], "p"])
def test_unknown_kinds_are_query_errors_whatever_the_rerank(lib: Library, kinds: Any) -> None:
    q = np.ones((1, 32), np.float32)
    for rerank in ("auto", "max"):
        with pytest.raises(QueryError, match="kind"):
            lib.search_vectors(q, kinds=kinds, rerank=rerank)
    assert lib.search_vectors(q, kinds=["part"])[0][0].rerank == "part"


def test_excerpt_bounds_take_numpy_numbers(lib: Library) -> None:
    samples = np.random.default_rng(1).uniform(-0.5, 0.5, 30 * SR).astype(np.float32)
    plain = lib.search(audio=samples, start_s=5.0, end_s=15.0, k=2, rerank="max")
    got = lib.search(audio=samples, start_s=np.float32(5), end_s=np.int64(15), k=2, rerank="max")  # type: ignore[arg-type]
    assert got == plain
    for bad in (None, True):
        with pytest.raises(QueryError, match="start_s must be a finite number"):
            lib.search(audio=samples, start_s=bad)  # type: ignore[arg-type]


def test_samples_must_be_finite_floats(lib: Library) -> None:
    rng = np.random.default_rng(2)
    pcm = (rng.uniform(-0.5, 0.5, 5 * SR) * 32767).astype(np.int16)
    with pytest.raises(QueryError, match="divide int16 PCM by 32768"):
        lib.search(audio=pcm, rerank="max")
    with pytest.raises(QueryError, match="floats"):
        lib.embed_audio(pcm)  # type: ignore[arg-type]
    noisy = rng.uniform(-0.5, 0.5, 5 * SR).astype(np.float32)
    noisy[100] = np.nan
    with pytest.raises(QueryError, match="audio samples contain NaN"):
        lib.embed_audio(noisy)  # was a NaN vector
    with pytest.raises(QueryError, match="audio samples contain NaN"):
        lib.search(audio=noisy)
    for bad in (5, b"clip.wav"):
        with pytest.raises(QueryError, match=r"audio= takes a file path"):
            lib.search(audio=bad)  # type: ignore[arg-type]
    assert lib.embed_audio(pcm / np.float32(32768)).shape == (1, 32)
