"""The text-vector cache's details that the other tests left open (found by a mutation sweep): what the
model is given, LRU refresh on a re-put, the copies it keeps, what ``save``/``load`` accept, the parts of
the encoder key. Each checked against a plain computation, not the module's own helpers."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders import text_cache
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.encoders.text_cache import TextVectorCache, encoder_cache_key, normalize_text, with_text_cache
from songseek.engine.errors import UsageError
from tests.engine.test_text_cache import CountingFake


def _rows(n: int, dim: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_normalised_texts_are_nfc_and_that_is_what_the_model_embeds() -> None:
    decomposed = "  cafe\u0301   jazz\u00a0\ttrio "
    want = "caf\u00e9 jazz trio"  # composed é, whitespace runs (NBSP and tab too) one space
    assert unicodedata.is_normalized("NFC", want) and normalize_text(decomposed) == want
    inner = CountingFake()
    with_text_cache(inner, TextVectorCache()).embed_text([decomposed])
    assert inner.embedded == [want]


def test_putting_a_text_again_replaces_its_vector_and_makes_it_most_recent() -> None:
    cache = TextVectorCache(max_entries=2)
    v = _rows(4)
    cache.put("k", ["a", "b"], v[:2])
    cache.put("k", ["a"], v[2:3])  # "a" again: new vector, now the most recently used
    cache.put("k", ["c"], v[3:4])  # over the bound: the least recently used, "b", goes
    got = cache.get("k", ["a", "b", "c"])
    assert got[1] is None
    assert got[0] is not None and got[2] is not None
    np.testing.assert_array_equal(got[0], v[2])
    np.testing.assert_array_equal(got[2], v[3])


def test_the_cache_keeps_its_own_copy_of_what_was_put() -> None:
    cache = TextVectorCache()
    vecs = _rows(2)
    want = vecs.copy()
    cache.put("k", ["a", "b"], vecs)
    vecs[:] = 0.0  # the caller reuses its buffer
    got = cache.get("k", ["a", "b"])
    assert got[0] is not None and got[1] is not None
    np.testing.assert_array_equal(np.stack([got[0], got[1]]), want)


def test_put_refuses_vectors_that_do_not_match_the_texts() -> None:
    cache = TextVectorCache()
    with pytest.raises(UsageError):
        cache.put("k", ["a", "b", "c"], _rows(2))
    with pytest.raises(UsageError):
        cache.put("k", ["a"], _rows(2))
    assert len(cache) == 0


def test_save_writes_only_its_keys_entries_and_load_takes_only_its_keys_file(tmp_path: Path) -> None:
    cache = TextVectorCache()
    a, b = _rows(2, seed=1), _rows(3, seed=2)
    cache.put("key-a", ["x", "y"], a)
    cache.put("key-b", ["p", "q", "r"], b)
    path = tmp_path / "a.npz"
    assert cache.save("key-a", path) == 2
    with np.load(path, allow_pickle=False) as data:  # the file itself, read plainly
        assert str(data["key"]) == "key-a" and [str(t) for t in data["texts"]] == ["x", "y"]
        np.testing.assert_array_equal(data["vectors"], a)
    assert TextVectorCache().load("key-b", path) == 0  # another encoder's file adds nothing
    other = TextVectorCache()
    other.load("key-b", path)
    assert len(other) == 0
    fresh = TextVectorCache()
    assert fresh.load("key-a", path) == 2
    got = fresh.get("key-a", ["x", "y"])
    assert got[0] is not None and got[1] is not None
    np.testing.assert_array_equal(np.stack([got[0], got[1]]), a)


@pytest.mark.parametrize("bad", ["nan", "inf", "ndim", "count"])
def test_load_refuses_a_file_with_unusable_vectors(tmp_path: Path, bad: str) -> None:
    vecs = _rows(2)
    texts = ["a", "b"]
    if bad == "nan":
        vecs[1, 3] = np.nan
    elif bad == "inf":
        vecs[0, 0] = -np.inf
    elif bad == "ndim":
        vecs = vecs.reshape(-1)
    else:
        texts = ["a", "b", "c"]
    path = tmp_path / "x.npz"
    np.savez(path, key=np.asarray("k"), texts=np.asarray(texts, dtype=np.str_), vectors=vecs)
    cache = TextVectorCache()
    assert cache.load("k", path) == 0 and len(cache) == 0


def test_save_is_fsynced_before_the_rename_and_a_failed_write_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = TextVectorCache()
    cache.put("k", ["a"], _rows(1))
    path = tmp_path / "tc" / "k.npz"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(text_cache.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])  # type: ignore[func-returns-value]
    monkeypatch.setattr(text_cache.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])  # type: ignore[func-returns-value]
    assert cache.save("k", path) == 1
    assert events == ["fsync", "replace"]
    monkeypatch.undo()
    good = path.read_bytes()

    def broken(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(text_cache.np, "savez", broken)
    cache.put("k", ["b"], _rows(1, seed=3))
    with pytest.raises(OSError):
        cache.save("k", path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.npz"]  # no temporary left behind
    assert path.read_bytes() == good  # the last good file is untouched


class _StubEncoder(FakeEncoder):
    def __init__(self, info: EncoderInfo) -> None:
        super().__init__()
        self._info = info


def test_the_key_of_a_plain_encoder_tells_apart_every_recorded_field() -> None:
    base = EncoderInfo(name="x", checkpoint="c", dim=8, sample_rate=16000, checkpoint_sha256="aa",
                       random_weights=False)
    keys = {encoder_cache_key(_StubEncoder(i)) for i in (
        base, replace(base, name="y"), replace(base, checkpoint="d"), replace(base, checkpoint_sha256="bb"),
        replace(base, random_weights=True))}
    assert len(keys) == 5
    assert encoder_cache_key(_StubEncoder(base)) == encoder_cache_key(_StubEncoder(replace(base)))


def test_a_new_text_rules_version_leaves_persisted_vectors_unused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "tc"
    with_text_cache(CountingFake(), TextVectorCache(), folder).embed_text(["calm piano"])
    inner = CountingFake()
    with_text_cache(inner, TextVectorCache(), folder).embed_text(["calm piano"])
    assert inner.embedded == []  # same rules: reused
    monkeypatch.setattr(text_cache, "TEXT_RULES_VERSION", text_cache.TEXT_RULES_VERSION + 1)
    inner = CountingFake()
    with_text_cache(inner, TextVectorCache(), folder).embed_text(["calm piano"])
    assert inner.embedded == ["calm piano"]  # vectors of the old rules are not served
