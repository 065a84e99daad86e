"""The text-vector cache: LRU bound, keys, thread safety, persistence, and its use by Library.search."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders import demo
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.encoders.text_cache import (
    CachedCountingEncoder,
    TextVectorCache,
    encoder_cache_key,
    normalize_text,
    with_text_cache,
)
from songseek.engine.query.search import Library
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


class CountingFake(FakeEncoder):
    """The fake encoder, counting the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed_text(self, texts: list[str]) -> np.ndarray:
        self.embedded += list(texts)
        return super().embed_text(texts)


def test_normalize_text() -> None:
    assert normalize_text("  calm\tpiano \n solo ") == "calm piano solo"
    assert normalize_text("cafe\u0301") == normalize_text("caf\u00e9")  # NFC
    assert normalize_text("Piano") != normalize_text("piano")  # RoBERTa is case-sensitive


def test_lru_bound_and_order() -> None:
    cache = TextVectorCache(max_entries=3)
    v = np.eye(4, dtype=np.float32)
    cache.put("k", ["a", "b", "c"], v[:3])
    assert cache.get("k", ["a"])[0] is not None  # a is now the most recently used
    cache.put("k", ["d"], v[3:])
    got = cache.get("k", ["a", "b", "c", "d"])
    assert [g is not None for g in got] == [True, False, True, True]  # b, the least recently used, went
    assert len(cache) == 3
    assert cache.get("other", ["a"]) == [None]  # keys keep encoders apart


def test_cached_rows_cannot_be_changed_by_a_caller() -> None:
    cache = TextVectorCache()
    cache.put("k", ["a"], np.ones((1, 4), np.float32))
    row = cache.get("k", ["a"])[0]
    assert row is not None
    with pytest.raises(ValueError):
        row[0] = 5.0


def test_concurrent_readers_and_writers_see_consistent_rows() -> None:
    cache = TextVectorCache(max_entries=50)
    texts = [f"text {i}" for i in range(200)]
    want = {t: np.full(8, i, np.float32) for i, t in enumerate(texts)}
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(2000):
            t = texts[int(rng.integers(len(texts)))]
            if rng.random() < 0.5:
                cache.put("k", [t], want[t][None])
            else:
                got = cache.get("k", [t])[0]
                if got is not None and not np.array_equal(got, want[t]):
                    errors.append(t)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(cache) <= 50


def test_wrapper_embeds_each_missing_text_once_and_matches_the_encoder() -> None:
    inner = CountingFake()
    enc = with_text_cache(inner, TextVectorCache())
    texts = ["calm piano", "loud  drums", "calm piano", "loud drums"]
    got = enc.embed_text(texts)
    assert inner.embedded == ["calm piano", "loud drums"]  # distinct normalised texts, once each
    np.testing.assert_allclose(got, FakeEncoder().embed_text(["calm piano", "loud drums"] * 2), rtol=1e-6)
    again = enc.embed_text(["loud drums", "calm piano"])
    assert inner.embedded == ["calm piano", "loud drums"]  # all hits
    np.testing.assert_array_equal(again, got[[1, 0]])
    assert (enc.cache.hits, enc.cache.misses) == (2, 4)


def test_wrapper_keeps_count_tokens() -> None:
    d = demo.load(None)
    enc = with_text_cache(d, TextVectorCache())
    assert isinstance(enc, CachedCountingEncoder) and enc.count_tokens("a b c") == 3
    assert not hasattr(with_text_cache(FakeEncoder(), TextVectorCache()), "count_tokens")
    assert encoder_cache_key(d) != encoder_cache_key(demo.load(None, random_weights=True))


def test_token_counts_are_remembered_and_bounded() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split())

    enc = CachedCountingEncoder(FakeEncoder(), count, TextVectorCache(max_entries=2))
    assert [enc.count_tokens(t) for t in ("a b", "c", "a b", "a  b")] == [2, 1, 2, 2]
    assert calls == ["a b", "c", "a  b"]  # a repeat is not counted again; the exact text is the key
    # bound 2: "a  b" pushed out the least recently used, "c"; "a b" (used since) stayed
    assert [enc.count_tokens(t) for t in ("a b", "c")] == [2, 1]
    assert calls == ["a b", "c", "a  b", "c"]


def test_persisted_cache_round_trip(tmp_path: Path) -> None:
    first = with_text_cache(CountingFake(), TextVectorCache(), tmp_path / "tc")
    vecs = first.embed_text(["a", "b"])
    files = list((tmp_path / "tc").glob("*.npz"))
    assert len(files) == 1
    inner = CountingFake()
    second = with_text_cache(inner, TextVectorCache(), tmp_path / "tc")  # a new process, in effect
    np.testing.assert_array_equal(second.embed_text(["b", "a"]), vecs[[1, 0]])
    assert inner.embedded == []
    good = files[0].read_bytes()
    at = good.index(vecs.tobytes())
    flipped = good[:at] + bytes([good[at] ^ 0x40]) + good[at + 1:]  # a changed value: the zip's CRC-32 fails
    # a damaged file only costs the work it would have saved (a truncated zip raised BadZipFile into search)
    for damaged in (b"damaged", good[: len(good) // 2], good[:-10], b"", flipped):
        files[0].write_bytes(damaged)
        third_inner = CountingFake()
        third = with_text_cache(third_inner, TextVectorCache(), tmp_path / "tc")
        np.testing.assert_array_equal(third.embed_text(["a"]), vecs[:1])
        assert third_inner.embedded == ["a"]


def test_library_search_uses_the_cache(tmp_path: Path) -> None:
    lib_dir = tmp_path / "lib"
    ingest_table(vector_table(20, 32, seed=5), lib_dir)
    inner = CountingFake()
    cache = TextVectorCache()
    lib = Library.open(lib_dir, encoder=inner, text_cache=cache, persist_text_cache=True)
    first = lib.search("a jazz trio with vibraphone", k=5)
    assert inner.embedded == ["a jazz trio with vibraphone"]
    second = lib.search("  a jazz trio   with vibraphone ", k=5)
    assert inner.embedded == ["a jazz trio with vibraphone"]
    assert [h.track_id for h in first] == [h.track_id for h in second]
    assert [h.score for h in first] == [h.score for h in second]
    assert list((lib_dir / "text-cache").glob("*.npz"))
    uncached_inner = CountingFake()
    plain = Library.open(lib_dir, encoder=uncached_inner, text_cache=None)
    assert [h.track_id for h in plain.search("a jazz trio with vibraphone", k=5)] == [h.track_id for h in first]
    plain.search("a jazz trio with vibraphone", k=5)
    assert len(uncached_inner.embedded) == 2
    # the next process finds the vectors the first one kept in the library
    later = CountingFake()
    Library.open(lib_dir, encoder=later, text_cache=TextVectorCache(), persist_text_cache=True).search(
        "a jazz trio with vibraphone", k=5)
    assert later.embedded == []
    assert Library.open(lib_dir, encoder=FakeEncoder()).text_backend() is None  # one path only


def _tiny_clap_dir(directory: Path, swap_words: bool = False) -> Path:
    """A saved tiny ClapModel (the same seeded weights every time) with the test tokenizer; ``swap_words``
    gives two of its words each other's ids, as another tokenizer over the same weights would."""
    from songseek.engine.encoders import clap_hf
    from tests.engine.encoder_helpers import save_swapped_tokenizer, save_tiny_tokenizer, tiny_config, tiny_model

    tiny_model(tiny_config()).save_pretrained(directory)
    clap_hf.laion_feature_extractor().save_pretrained(directory)
    (save_swapped_tokenizer if swap_words else save_tiny_tokenizer)(directory)
    return directory


def test_another_tokenizer_over_the_same_weights_gets_its_own_vectors(tmp_path: Path) -> None:
    """The clap key was the weights and the backend only; the tokenizer can change without them
    ($SONGSEEK_CLAP_TOKENIZER, files copied into the folder), and a library's persisted cache then kept
    serving the old tokenizer's vectors."""
    from songseek.engine.encoders import clap_hf

    first = clap_hf.load(str(_tiny_clap_dir(tmp_path / "a")), "cpu", False)
    other = clap_hf.load(str(_tiny_clap_dir(tmp_path / "b", swap_words=True)), "cpu", False)
    same = clap_hf.load(str(_tiny_clap_dir(tmp_path / "c")), "cpu", False)
    key = encoder_cache_key(first)
    assert key != encoder_cache_key(other)
    first.embed_text(["heavy metal guitar solo"])  # a call sets the tokenizer's truncation state
    assert encoder_cache_key(first) == key == encoder_cache_key(same)
    text = ["jazz piano"]
    persisted = tmp_path / "tc"
    with_text_cache(first, TextVectorCache(), persisted).embed_text(text)
    got = with_text_cache(other, TextVectorCache(), persisted).embed_text(text)  # a later process
    np.testing.assert_allclose(got, other.embed_text(text), atol=1e-6)
    assert np.abs(got - first.embed_text(text)).max() > 1e-3
