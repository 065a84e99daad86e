"""A bounded, thread-safe cache of text vectors, keyed by the encoder's identity and the normalised text.

A text query's vector depends only on the encoder (its weights and its text backend) and the text, so a
repeated query, or a benchmark's captions run a second time, need not touch the model. The key is
``TextEncoderWrapper.cache_key`` (checkpoint hash + backend) plus ``normalize_text(text)``: Unicode NFC
with runs of whitespace collapsed. Case is kept: RoBERTa's tokenizer is case-sensitive.

``TextVectorCache`` is an LRU of at most ``max_entries`` vectors (each stored read-only, so a caller
cannot change what the next one gets). One lock guards it; a lookup is a dict access, microseconds.
``save``/``load`` keep one encoder's entries in an ``.npz`` file (written to a temporary name, then
renamed), which is how a library persists its queries' vectors between processes; vectors added since
the last save go to an append-only journal beside it (``text_cache_journal``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UsageError
from . import text_cache_journal as journal
from .base import Encoder, EncoderInfo, TextBackendEncoder

DEFAULT_MAX_ENTRIES = 20_000  # 20k × 512 float32 = 40 MiB at most
# The journal is folded into the .npz once it holds more rows than this and than the .npz: a full write then
# happens after at least as many appended rows as it writes, so persisting costs O(1) per new vector.
JOURNAL_MIN_ROWS = 1024
# Part of every key: bumped when an encoder's text processing changes without its fingerprint (2: msclap reads
# texts past 77 tokens whole and tokenises '!' as msclap does), so persisted vectors of the old rules go unused.
TEXT_RULES_VERSION = 2
_REWRITE = 1 << 62  # journal rows that force the next persist to write the .npz


def _versioned(key: str) -> str:
    return f"v{TEXT_RULES_VERSION}:{key}"


def _journal_path(path: Path) -> Path:
    """The journal beside a key's ``.npz``."""
    return path.with_suffix(".log")


def normalize_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped: what the model sees of a query text
    (engine/query/longtext.py embeds chunks normalised), so texts that differ only there share a key."""
    return " ".join(unicodedata.normalize("NFC", text).split())


class TextVectorCache:
    """LRU of unit text vectors float32 (dim,), keyed by (encoder key, normalised text). Thread-safe."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise UsageError(f"max_entries must be >= 0 (got {max_entries})")
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, texts: list[str]) -> list[np.ndarray | None]:
        """The cached vector of each text (None where absent), marking found ones most recently used."""
        out: list[np.ndarray | None] = []
        with self._lock:
            for t in texts:
                k = (key, normalize_text(t))
                vec = self._items.get(k)
                if vec is not None:
                    self._items.move_to_end(k)
                    self.hits += 1
                else:
                    self.misses += 1
                out.append(vec)
        return out

    def put(self, key: str, texts: list[str], vectors: np.ndarray) -> None:
        """Store float32 (len(texts), dim) vectors, evicting the least recently used past the bound."""
        if self.max_entries == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise UsageError(f"put: {len(texts)} texts but vectors of shape {vectors.shape}")
        with self._lock:
            for t, v in zip(texts, vectors):
                row = v.copy()
                row.flags.writeable = False
                k = (key, normalize_text(t))
                self._items[k] = row
                self._items.move_to_end(k)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def entries(self, key: str) -> tuple[list[str], np.ndarray]:
        """(normalised texts, float32 (n, dim)) of one encoder key, least recently used first."""
        with self._lock:
            pairs = [(t, v) for (k, t), v in self._items.items() if k == key]
        if not pairs:
            return [], np.zeros((0, 0), np.float32)
        return [t for t, _ in pairs], np.stack([v for _, v in pairs])

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def save(self, key: str, path: Path) -> int:
        """Write ``key``'s entries to ``path`` (.npz) atomically; returns how many. Nothing to write: 0."""
        texts, vecs = self.entries(key)
        if not texts:
            return 0
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, key=np.asarray(key), texts=np.asarray(texts, dtype=np.str_), vectors=vecs)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(texts)

    def load(self, key: str, path: Path) -> int:
        """Add the entries of a file ``save`` wrote for the same ``key``; returns how many. A missing,
        damaged or other-encoder file adds nothing (the cache only saves work, it never decides results)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != key:
                    return 0
                texts = [str(t) for t in data["texts"]]
                vecs = np.asarray(data["vectors"], dtype=np.float32)
        except Exception:  # a truncated or damaged zip raises BadZipFile (bad CRC too), odd arrays TypeError
            return 0
        if vecs.ndim != 2 or len(vecs) != len(texts) or not np.isfinite(vecs).all():
            return 0
        self.put(key, texts, vecs)
        return len(texts)


# One cache per process, shared by every Library and encoder (keys keep encoders apart).
SHARED_CACHE = TextVectorCache()


def encoder_cache_key(encoder: Encoder) -> str:
    """The key an encoder's text vectors are cached under: ``TEXT_RULES_VERSION``, then its own
    ``text_cache_key`` (weights fingerprint + backend) where it has one, else its name, checkpoint,
    checkpoint hash and random-weights flag."""
    if isinstance(encoder, TextBackendEncoder):
        return _versioned(encoder.text_cache_key())
    i = encoder.info
    return _versioned(f"{i.name}:{i.checkpoint}:{i.checkpoint_sha256}:{int(i.random_weights)}")


class CachedTextEncoder:
    """An Encoder whose ``embed_text`` asks ``cache`` first and embeds only the texts it lacks (each
    distinct one once). With ``persist_dir``, the key's entries are loaded from there on first use and
    the vectors a call adds are kept there: appended to the key's journal (``.log``), which is folded into
    the key's ``.npz`` once it outgrows it (``JOURNAL_MIN_ROWS``)."""

    def __init__(self, inner: Encoder, cache: TextVectorCache, persist_dir: Path | None = None) -> None:
        self.inner = inner
        self.cache = cache
        self._persist_dir = persist_dir
        self._loaded: set[str] = set()
        self._lock = threading.Lock()
        self._persist_lock = threading.Lock()  # apart from _lock: a full save must not hold up lookups
        self._rows: dict[str, tuple[int, int]] = {}  # key -> (rows in the .npz, rows in the journal)
        # An isinstance check against a runtime Protocol inspects every member (~0.05 ms): once, not per query.
        self._backend_inner = inner if isinstance(inner, TextBackendEncoder) else None
        self._static_key = "" if self._backend_inner is not None else encoder_cache_key(inner)

    @property
    def info(self) -> EncoderInfo:
        return self.inner.info

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        return self.inner.embed_audio(windows)

    def key(self) -> str:
        """The inner encoder's cache key (it changes with its text backend); a persisted file of a key is
        read the first time the key is seen."""
        key = _versioned(self._backend_inner.text_cache_key()) if self._backend_inner is not None else self._static_key
        with self._lock:
            if key not in self._loaded:
                self._loaded.add(key)
                path = self.persist_path_for(key)
                if path is not None:
                    saved = self.cache.load(key, path)
                    texts, vecs, intact = journal.read(_journal_path(path), key)
                    if texts:
                        self.cache.put(key, texts, vecs)
                    # a damaged .npz, or a damaged journal (it hides what is appended after it): the
                    # next new vector rewrites the .npz
                    damaged = not intact or (saved == 0 and path.exists())
                    self._rows[key] = (saved, _REWRITE if damaged else len(texts))
        return key

    def persist_path_for(self, key: str) -> Path | None:
        if self._persist_dir is None:
            return None
        return self._persist_dir / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".npz")

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), dim), unit rows: cached rows as stored, the others from the encoder."""
        texts = list(texts)
        if not texts:
            return self.inner.embed_text(texts)
        key = self.key()
        found = self.cache.get(key, texts)
        missing = list(dict.fromkeys(normalize_text(t) for t, v in zip(texts, found) if v is None))
        if missing:
            new = np.asarray(self.inner.embed_text(missing), dtype=np.float32)
            self.cache.put(key, missing, new)
            fresh = dict(zip(missing, new))
            found = [v if v is not None else fresh[normalize_text(t)] for t, v in zip(texts, found)]
            path = self.persist_path_for(key)
            if path is not None:
                self._persist(key, path, missing, new)
        return np.stack([np.asarray(v) for v in found]).astype(np.float32)

    def _persist(self, key: str, path: Path, texts: list[str], vectors: np.ndarray) -> None:
        """Append the new vectors to the key's journal, or write the whole .npz (and drop the journal) when
        there is none yet or the journal has outgrown it. Rows another process appends to the journal
        between this save and the unlink are lost: the cache only saves work."""
        log = _journal_path(path)
        with self._persist_lock:
            saved, logged = self._rows.get(key, (0, 0))
            try:
                if not path.exists() or logged + len(texts) > max(JOURNAL_MIN_ROWS, saved):
                    self._rows[key] = (self.cache.save(key, path), 0)
                    log.unlink(missing_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    journal.append(log, key, texts, vectors)
                    self._rows[key] = (saved, logged + len(texts))
            except OSError:  # a read-only library: the cache only saves work, searches go on
                pass


class CachedCountingEncoder(CachedTextEncoder):
    """CachedTextEncoder for an encoder that counts its own tokens (engine/longtext.py asks for it, once per
    query to decide whether the text needs chunks). The counts are remembered too (an LRU as large as the
    vector cache, keyed by the exact text): counting runs the tokenizer (~0.3 ms for RoBERTa's), which
    would otherwise be most of what a repeated query costs."""

    def __init__(self, inner: Encoder, count: Callable[[str], int], cache: TextVectorCache,
                 persist_dir: Path | None = None) -> None:
        super().__init__(inner, cache, persist_dir)
        self._count = count
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._counts_lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        with self._counts_lock:
            n = self._counts.get(text)
            if n is not None:
                self._counts.move_to_end(text)
                return n
        n = int(self._count(text))
        with self._counts_lock:
            self._counts[text] = n
            while len(self._counts) > max(self.cache.max_entries, 1):
                self._counts.popitem(last=False)
        return n


def with_text_cache(encoder: Encoder, cache: TextVectorCache, persist_dir: Path | None = None
                    ) -> CachedTextEncoder:
    """``encoder`` behind ``cache``, keeping its ``count_tokens`` where it has one."""
    count = getattr(encoder, "count_tokens", None)
    if callable(count):
        return CachedCountingEncoder(encoder, count, cache, persist_dir)
    return CachedTextEncoder(encoder, cache, persist_dir)
