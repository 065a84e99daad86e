"""The persisted text cache's journal: the record format against a plain re-parse, damage, and the folding of
the journal into the .npz (the number of full writes stays logarithmic in the texts added one at a time)."""

from __future__ import annotations

import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders import text_cache
from songseek.engine.encoders import text_cache_journal as journal
from songseek.engine.encoders.text_cache import TextVectorCache, with_text_cache
from tests.engine.test_text_cache import CountingFake


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _parse(data: bytes) -> list[tuple[bytes, str, np.ndarray]]:
    """The records written straight from the format's description, without the module's reader."""
    out, at = [], 0
    while at < len(data):
        assert data[at:at + 4] == b"SSTJ"
        digest = data[at + 4:at + 12]
        n_text, dim, crc = struct.unpack("<III", data[at + 12:at + 24])
        text = data[at + 24:at + 24 + n_text]
        vec = data[at + 24 + n_text:at + 24 + n_text + 4 * dim]
        assert crc == zlib.crc32(digest + struct.pack("<II", n_text, dim) + text + vec)
        out.append((digest, text.decode(), np.frombuffer(vec, "<f4")))
        at += 24 + n_text + 4 * dim
    return out


def test_records_match_the_format_and_read_back(tmp_path: Path) -> None:
    texts, vecs = ["calm piano", "é à", ""], _vectors(3)
    log = tmp_path / "x.log"
    journal.append(log, "key-a", texts[:2], vecs[:2])
    journal.append(log, "key-a", texts[2:], vecs[2:])
    parsed = _parse(log.read_bytes())
    assert [t for _, t, _ in parsed] == texts
    assert {d for d, _, _ in parsed} == {journal.key_digest("key-a")}
    np.testing.assert_array_equal(np.stack([v for _, _, v in parsed]), vecs)
    got_texts, got, intact = journal.read(log, "key-a")
    assert got_texts == texts and intact
    np.testing.assert_array_equal(got, vecs)
    assert journal.read(log, "key-b")[0] == []  # another key's records are skipped
    assert journal.read(tmp_path / "missing.log", "key-a")[0] == []


def test_damage_costs_only_the_records_from_there_on(tmp_path: Path) -> None:
    texts, vecs = [f"text {i}" for i in range(4)], _vectors(4)
    good = journal.encode("k", texts, vecs)
    size = len(good) // 4
    log = tmp_path / "x.log"
    for damaged, kept in ((good[:-3], 3),  # a torn tail: a process killed mid-write
                          (good[:2 * size + 30] + bytes([good[2 * size + 30] ^ 1]) + good[2 * size + 31:], 2),
                          (good[:size] + b"garbage" + good[size:], 1),
                          (b"SSTJ" + b"\xff" * 40, 0), (b"", 0)):
        log.write_bytes(damaged)
        got_texts, got, intact = journal.read(log, "k")
        assert got_texts == texts[:kept] and intact == (damaged == b"")
        if kept:
            np.testing.assert_array_equal(got, vecs[:kept])
    # non-finite vectors are skipped, the records after them still read
    bad = vecs.copy()
    bad[1, 0] = np.nan
    log.write_bytes(journal.encode("k", texts, bad))
    assert journal.read(log, "k")[0] == ["text 0", "text 2", "text 3"]


def test_new_texts_are_appended_and_a_later_process_finds_them(tmp_path: Path) -> None:
    folder = tmp_path / "tc"
    first = with_text_cache(CountingFake(), TextVectorCache(), folder)
    vecs = np.concatenate([first.embed_text([t]) for t in ("a", "b", "c")])
    assert len(list(folder.glob("*.npz"))) == 1  # the first call writes the .npz ...
    (log,) = folder.glob("*.log")  # ... the next ones append to the journal beside it
    assert journal.read(log, first.key())[0] == ["b", "c"]
    inner = CountingFake()
    later = with_text_cache(inner, TextVectorCache(), folder)
    np.testing.assert_array_equal(later.embed_text(["c", "a", "b"]), vecs[[2, 0, 1]])
    assert inner.embedded == []
    # a torn journal costs only its damaged records: "c" is embedded again, "b" is not; and the .npz is
    # rewritten then (a record appended after the torn one would never be read)
    log.write_bytes(log.read_bytes()[:-2])
    inner = CountingFake()
    with_text_cache(inner, TextVectorCache(), folder).embed_text(["a", "b", "c"])
    assert inner.embedded == ["c"] and not log.exists()
    inner = CountingFake()
    with_text_cache(inner, TextVectorCache(), folder).embed_text(["a", "b", "c"])
    assert inner.embedded == []


def test_the_journal_is_folded_into_the_npz_so_full_writes_stay_few(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_cache, "JOURNAL_MIN_ROWS", 4)
    cache = TextVectorCache()
    saves: list[int] = []
    real_save = cache.save

    def counting_save(key: str, path: Path) -> int:
        saves.append(real_save(key, path))
        return saves[-1]

    monkeypatch.setattr(cache, "save", counting_save)
    folder = tmp_path / "tc"
    enc = with_text_cache(CountingFake(), cache, folder)
    texts = [f"query {i}" for i in range(200)]
    for t in texts:
        enc.embed_text([t])
    # the naive rule: a save whenever the journal would outgrow max(4, rows last saved)
    expected, saved, logged = [], 0, 0
    for i in range(len(texts)):
        if i == 0 or logged + 1 > max(4, saved):
            saved, logged = i + 1, 0
            expected.append(saved)
        else:
            logged += 1
    assert saves == expected
    assert len(saves) <= 10  # doubling: about log2(200 / 4) + 2, not one per query
    inner = CountingFake()
    later = with_text_cache(inner, TextVectorCache(), folder)
    np.testing.assert_array_equal(later.embed_text(texts), enc.embed_text(texts))
    assert inner.embedded == []


def test_two_writers_appending_at_once_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "tc"
    with_text_cache(CountingFake(), TextVectorCache(), folder).embed_text(["seed"])  # the .npz exists
    writers = [with_text_cache(CountingFake(), TextVectorCache(), folder) for _ in range(2)]
    barrier = threading.Barrier(2)

    def run(w: int) -> None:
        barrier.wait()
        for i in range(100):
            writers[w].embed_text([f"writer {w} text {i}"])

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    inner = CountingFake()
    later = with_text_cache(inner, TextVectorCache(), folder)
    later.embed_text(["seed"] + [f"writer {w} text {i}" for w in range(2) for i in range(100)])
    assert inner.embedded == []


def test_a_read_only_folder_leaves_searches_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "tc"
    enc = with_text_cache(CountingFake(), TextVectorCache(), folder)
    enc.embed_text(["a"])

    def refuse(*_: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(journal, "append", refuse)
    monkeypatch.setattr(TextVectorCache, "save", refuse)
    assert enc.embed_text(["b"]).shape == (1, enc.info.dim)


def test_a_damaged_npz_is_rewritten_by_the_next_new_vector(tmp_path: Path) -> None:
    folder = tmp_path / "tc"
    with_text_cache(CountingFake(), TextVectorCache(), folder).embed_text(["a", "b"])
    (npz,) = folder.glob("*.npz")
    npz.write_bytes(npz.read_bytes()[:-10])
    inner = CountingFake()
    with_text_cache(inner, TextVectorCache(), folder).embed_text(["a", "c"])  # "a" again: the .npz is unread
    assert inner.embedded == ["a", "c"] and not list(folder.glob("*.log"))
    inner = CountingFake()
    with_text_cache(inner, TextVectorCache(), folder).embed_text(["a", "c"])
    assert inner.embedded == []
