"""The query engine: query vector → FAISS candidate frames → candidate tracks → rerank → hits.

Reranking looks at every frame of each candidate track (memory-mapped views, no copy of the table) and
scores it with `fusion.rerank_scores` via `longtext.chunk_scores` (CoLLAP temporal attention fusion by
default; mean, max or none). A text past the encoder's token limit is scored as sentence chunks (longtext.py).
"""

from __future__ import annotations

import dataclasses
import numbers
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import pyarrow as pa

from songseek.engine.audio import decode, frame_windows, window_bounds
from songseek.engine.device import resolve_device
from songseek.engine.encoders import Encoder, load_encoder
from songseek.engine.encoders.base import TextBackendEncoder, l2_normalize, unit_rows
from songseek.engine.encoders.onnx_text import TextBackendState, validate_backend
from songseek.engine.encoders.text_cache import SHARED_CACHE, CachedTextEncoder, TextVectorCache, with_text_cache
from songseek.engine.errors import LibraryError, QueryError, UsageError
from songseek.engine.query import longtext
from songseek.engine.query.candidates import ExactPolicy, best_per_track, only_rows, rows_to_rescore, top_tracks
from songseek.engine.query.filters import DEFAULT_LIMITS, FilterLimits, filter_track_ids
from songseek.engine.query.fusion import RERANK_MODES, FusionParams, RerankSettings, params_for_hop
from songseek.engine.query.kind import KINDS, Kind, resolve_mode, text_kind
from songseek.engine.query.scan import Int8Scanner, build_scanner
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import Manifest, check_compatible, read_manifest, verify_quick_hash
from songseek.engine.storage.store import FrameStore, read_library_table

MAX_QUERY_CHARS = 20_000
# Query by example: the excerpt decoded when no end_s is given, and the longest excerpt accepted (seconds).
MAX_EXCERPT_S = 60.0
EXCERPT_SLACK_S = 1e-9  # rounding of start + length - start (a nanosecond: far below one sample)
# Query vector entries beyond this magnitude are refused (their float32 norm would overflow).
MAX_VECTOR_ABS = 1e18


def check_query_text(text: str) -> None:
    """Refuse a text query that is not a str, empty or absurdly long (QueryError), before any model is loaded."""
    if not isinstance(text, str):  # a list would be "searched" as one text, a number or bytes fail deep inside
        raise QueryError(f"a text query must be a str, got {type(text).__name__}"
                         + (": for several texts use search_texts" if isinstance(text, (list, tuple)) else ""))
    if not any(ch.isprintable() and not ch.isspace() for ch in text):  # "", spaces, or only NUL/controls
        raise QueryError("the text query is empty: describe the music you are looking for")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the text query is {len(text):,} characters long; at most {MAX_QUERY_CHARS:,} are "
                         "accepted: shorten it (long captions are split into sentence chunks up to that)")


def _mono_clip(audio: np.ndarray) -> np.ndarray:
    """``audio`` as the float32 1-D clip a query embeds, or QueryError for samples that are not floats
    (int16 PCM read as is would be 32768 times too loud), stereo-shaped, empty, NaN or inf."""
    raw = np.asarray(audio)
    if raw.dtype.kind != "f":
        raise QueryError(f"audio samples must be floats in [-1, 1], got {raw.dtype} values"
                         + (f": divide {raw.dtype} PCM by {2 ** (8 * raw.dtype.itemsize - 1)}"
                            if raw.dtype in (np.int16, np.int32) else ""))
    audio = raw.astype(np.float32, copy=False)
    if audio.ndim != 1:  # (channels, n) or (n, channels) would otherwise read as "empty"
        raise QueryError(f"audio samples must be mono, a 1-D array (n,), got shape {audio.shape}: "
                         "average the channels first, e.g. samples.mean(axis=0)")
    if len(audio) == 0:
        raise QueryError("the audio query is empty")
    if not np.isfinite(audio).all():
        raise QueryError("audio samples contain NaN or inf")
    return audio


def excerpt_bounds(start_s: float, end_s: float | None, max_excerpt_s: float = MAX_EXCERPT_S,
                   names: tuple[str, str, str] = ("start_s", "end_s", "max_excerpt_s")) -> tuple[float, float]:
    """(start, end) seconds of a query-by-example excerpt, or QueryError for non-finite, negative, empty or
    over-long ranges; ``end_s=None`` means ``start_s + max_excerpt_s``. ``names``: what the messages call
    the three (the CLI passes its options, --start, --end, --max-excerpt)."""
    start_name, end_name, max_name = names
    for name, value in ((start_name, start_s), (end_name, end_s), (max_name, max_excerpt_s)):
        if value is None and name == end_name:
            continue
        # numbers.Real: numpy scalars (np.float32(5.0)) too; a bool is not a number of seconds
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
            raise QueryError(f"{name} must be a finite number of seconds, 0 or more (got {value!r})")
    if max_excerpt_s <= 0:
        raise QueryError(f"{max_name} must be above 0 (got {max_excerpt_s!r})")
    end = float(start_s) + max_excerpt_s if end_s is None else float(end_s)
    if end <= start_s:
        raise QueryError(f"the excerpt end ({end_name}={end:g}) must be after its start ({start_name}={start_s:g})")
    # a nanosecond of slack: 61.4 + 60 - 61.4 is 60.00000000000001 s in floating point
    if end - start_s > max_excerpt_s + EXCERPT_SLACK_S:
        raise QueryError(f"the excerpt {start_s:g}-{end:g} s is {end - start_s:g} s long; at most "
                         f"{max_name}={max_excerpt_s:g} s are decoded: choose a shorter excerpt")
    return float(start_s), end


def _text_list(texts: Iterable[str], name: str, one: str) -> list[str]:
    """``texts`` as a list (a generator is read once), or QueryError for a bare string or a non-iterable."""
    if isinstance(texts, str):  # a bare string would be searched character by character
        raise QueryError(f"{name} takes a list of texts; for one text use {one}")
    try:
        return list(texts)
    except TypeError:
        raise QueryError(f"{name} takes a list of texts, got {type(texts).__name__}") from None


# Where a library keeps its queries' text vectors when opened with persist_text_cache=True.
TEXT_CACHE_DIR = "text-cache"


@dataclass(frozen=True)
class Segment:
    """The best-matching stretch of a track, in seconds from its start."""

    start_s: float
    end_s: float


@dataclass(frozen=True)
class Hit:
    """One ranked track. ``score`` is the rerank score; the parts explain it (`--explain`); ``rerank`` is
    the mode that ranked the query (``auto`` resolved to part, whole or hedge: engine/query/kind.py)."""

    rank: int
    track_id: str
    path: str
    score: float
    segment: Segment
    r_k: float
    r_t: float
    best_window: float
    candidate_score: float
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    duration_s: float = 0.0
    rerank: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "track_id": self.track_id, "path": self.path, "score": self.score,
            "start_s": self.segment.start_s, "end_s": self.segment.end_s, "r_k": self.r_k, "r_t": self.r_t,
            "best_window": self.best_window, "candidate_score": self.candidate_score, "title": self.title,
            "artist": self.artist, "album": self.album, "duration_s": self.duration_s, "rerank": self.rerank,
        }


class SearchKwargs(TypedDict, total=False):
    """The SearchOptions fields as keyword arguments of ``Library.search`` (typed; a test keeps them equal)."""

    k: int
    rerank: str | None
    candidates: int
    where: str | None
    fusion: FusionParams | None
    nprobe: int | None
    exact: bool
    filter_limits: FilterLimits | None
    collapse_duplicates: bool


@dataclass(frozen=True)
class SearchOptions:
    """How a query is answered. ``candidates`` tracks are reranked; ``nprobe`` overrides the IVF default.
    ``rerank`` and ``fusion`` None: the library's saved rerank settings (`songseek bench rerank --save`),
    else the default mode with the measured parameters scaled to the library's hop."""

    k: int = 10
    rerank: str | None = None
    candidates: int = 200
    where: str | None = None
    fusion: FusionParams | None = None
    nprobe: int | None = None
    exact: bool = False
    filter_limits: FilterLimits | None = None  # None: the Library's filter_limits
    collapse_duplicates: bool = False  # one hit per group of the `duplicates` table (`songseek duplicates`)

    @classmethod
    def from_kwargs(cls, options: SearchOptions | None, kwargs: SearchKwargs) -> SearchOptions:
        """``options``, or the options the keyword arguments name (not both: QueryError)."""
        if options is not None and kwargs:
            raise QueryError(f"give options= or keyword options ({', '.join(kwargs)}), not both")
        if options is not None and not isinstance(options, SearchOptions):
            raise QueryError(f"options= takes a SearchOptions, got {type(options).__name__}")
        return options if options is not None else cls(**kwargs)

    def validated(self) -> SearchOptions:
        for name in ("k", "candidates", "nprobe"):  # a float or str count would fail later, deep in numpy
            value = getattr(self, name)
            if not (value is None and name == "nprobe") and (
                    not isinstance(value, numbers.Integral) or isinstance(value, bool)):
                raise QueryError(f"{name} must be an integer (got {value!r})")
        if self.k <= 0:
            raise QueryError(f"k must be at least 1 (got {self.k})")
        if self.rerank is not None and self.rerank not in RERANK_MODES:
            raise QueryError(f"unknown rerank mode {self.rerank!r}: use {', '.join(RERANK_MODES)}")
        if self.nprobe is not None and self.nprobe <= 0:
            raise QueryError(f"nprobe must be at least 1 (got {self.nprobe})")
        if self.candidates <= 0:
            raise QueryError(f"candidates must be at least 1 (got {self.candidates})")
        for name, cls in (("where", str), ("fusion", FusionParams), ("filter_limits", FilterLimits)):
            value = getattr(self, name)  # a dict or a number would fail later with an AttributeError
            if value is not None and not isinstance(value, cls):
                raise QueryError(f"{name} must be a {cls.__name__} or None (got {type(value).__name__})")
        if self.filter_limits is not None:
            self.filter_limits.validated()
        return self


class Library:
    """A library opened for searching. Cheap to open: shards are memory-mapped, the index is loaded once."""

    def __init__(self, root: Path, manifest: Manifest, encoder: Encoder | None, device: str,
                 policy: ExactPolicy = ExactPolicy(), filter_limits: FilterLimits = DEFAULT_LIMITS,
                 text_backend: str = "auto", text_cache: TextVectorCache | None = SHARED_CACHE,
                 persist_text_cache: bool = False) -> None:
        self.root = root
        self.policy = policy
        # what one `where` predicate may cost (time, memory); SearchOptions.filter_limits overrides per query
        self.filter_limits = filter_limits.validated()
        self.manifest = manifest
        self._device = device
        self._text_backend = validate_backend(text_backend)
        self._text_cache = text_cache
        self._persist_text_cache = persist_text_cache
        self._encoder_lock, self._index_lock = threading.Lock(), threading.Lock()
        self._encoder = None if encoder is None else self._query_encoder(encoder)
        self.store = FrameStore(root, manifest)
        self.tracks = (read_library_table(root, manifest.tracks_file, manifest) if manifest.tracks_file
                       else pa.table({"track_id": pa.array([], pa.string())}))
        self._cols = {name: self.tracks.column(name).to_numpy(zero_copy_only=False)
                      for name in ("track_id", "path", "frame_start", "frame_count", "duration_s")
                      if name in self.tracks.column_names}
        self._meta = {name: self.tracks.column(name).to_pylist()
                      for name in ("title", "artist", "album") if name in self.tracks.column_names}
        self._row_of = {tid: i for i, tid in enumerate(self._cols["track_id"])}
        # Extra tables (tags, mos, ...) keyed by track_id; mapped now so a later commit cannot pull them away.
        self.extra_tables = {name: read_library_table(root, file, manifest)
                             for name, file in manifest.extra_tables.items()}
        if "duplicates" in self.extra_tables:
            self.extra_tables["duplicates"] = _live_duplicates(self.extra_tables["duplicates"], self._row_of)
        self.frame_owner = self._frame_owner()
        self._index: Any = None
        self._scanner: Int8Scanner | bool | None = None  # int8 copy for the exact path (False: cannot)
        self._scanner_lock = threading.Lock()
        self._where_cache: dict[str, np.ndarray] = {}
        self._where_lock = threading.Lock()
        self._slices: tuple[np.ndarray, np.ndarray] | None = None
        self._exact_queries = 0
        self.exact_counts = {"int8": 0, "float32": 0}  # how exact candidate searches were answered
        if manifest.encoder.random_weights:
            warnings.warn(f"{root} was built with RANDOM weights: scores mean nothing", stacklevel=2)

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, encoder: Encoder | None = None, device: str = "auto", *,
             policy: ExactPolicy = ExactPolicy(), filter_limits: FilterLimits = DEFAULT_LIMITS,
             text_backend: str = "auto", text_cache: TextVectorCache | None = SHARED_CACHE,
             persist_text_cache: bool = False) -> Library:
        """Open the last committed state of a library. ``encoder`` overrides the manifest's (must match).

        ``policy`` sets when the exact routes are taken (candidates.ExactPolicy); ``filter_limits`` bounds
        every ``where`` predicate (time, memory; filters.FilterLimits).
        Text queries: ``text_backend`` runs the text tower on ``auto`` (the fastest that passes its checks
        on this machine), ``torch``, ``onnx`` or ``onnx-int8`` (clap, laion, demo; others have torch only).
        ``text_cache`` (None: off) remembers text vectors in process; ``persist_text_cache`` also keeps
        them in the library's ``text-cache/`` folder for the next process."""
        root = Path(root).expanduser()
        for attempt in range(3):  # a writer may swap generations between reading the manifest and files
            manifest = read_manifest(root)
            try:
                lib = cls(root, manifest, encoder, device, policy, filter_limits, text_backend, text_cache,
                          persist_text_cache)
                break
            except LibraryError:
                if attempt == 2 or read_manifest(root).generation == manifest.generation:
                    raise
        if encoder is not None:
            check_compatible(manifest, encoder.info, root)
        return lib

    def _frame_owner(self) -> np.ndarray:
        """int64 (n_frame_rows,) row of the owning live track per frame; -1 for dead frames."""
        owner = np.full(self.store.n_rows, -1, dtype=np.int64)
        starts, counts = self._cols["frame_start"], self._cols["frame_count"]
        if len(starts):
            rows = np.repeat(np.arange(len(starts)), counts)
            pos = np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
            owner[pos] = rows
        return owner

    @property
    def n_tracks(self) -> int:
        return len(self._cols["track_id"])

    def track_column(self, name: str) -> np.ndarray:
        """One column of the tracks table as an array (track_id, path, frame_start, frame_count, duration_s)."""
        return self._cols[name]

    @property
    def encoder(self) -> Encoder:
        """The library's own encoder, loaded on first use (text and audio queries need it)."""
        if self._encoder is not None:
            return self._encoder
        with self._encoder_lock:  # threads sharing a Library load the model once, not once each
            if self._encoder is None:
                info = self.manifest.encoder
                if info.name == "precomputed":
                    raise QueryError(
                        f"{self.root} holds precomputed vectors with no encoder to embed queries: search it with "
                        "vectors (--query-vectors / vector=), or ingest them into a new library with `songseek "
                        "ingest FILE --library NEW --encoder NAME --checkpoint CKPT`")
                enc = load_encoder(info.name, info.checkpoint or None, resolve_device(self._device),
                                   info.random_weights)
                check_compatible(self.manifest, enc.info, self.root)
                self._encoder = self._query_encoder(enc)
            return self._encoder

    def _query_encoder(self, enc: Encoder) -> Encoder:
        """``enc`` as queries use it: on the requested text backend, behind the text-vector cache."""
        if isinstance(enc, TextBackendEncoder):
            enc.set_text_backend(self._text_backend)
        if self._text_cache is None:
            return enc
        return with_text_cache(enc, self._text_cache, self.root / TEXT_CACHE_DIR if self._persist_text_cache
                               else None)

    def text_backend(self) -> TextBackendState | None:
        """The backend text queries run on, resolved now (the first ONNX export of a checkpoint takes about
        a minute); its ``note`` says why it is not what was asked for. None: the encoder has one path."""
        enc = self.encoder
        inner = enc.inner if isinstance(enc, CachedTextEncoder) else enc
        return inner.text_backend_state() if isinstance(inner, TextBackendEncoder) else None

    @property
    def index(self) -> Any:
        if self._index is not None or not self.manifest.index_file:
            return self._index
        with self._index_lock:  # one load however many threads ask at once
            if self._index is None and self.manifest.index_file:
                self._load_index()
        return self._index

    def _load_index(self) -> None:
        """Load and check the committed FAISS index; one a writer has replaced since open: exact search."""
        try:
            verify_quick_hash(self.root, self.manifest.index_file, self.manifest)
            index = faiss_index.load_index(self.root / self.manifest.index_file)
            if int(index.ntotal) != self.manifest.index_frames or int(index.d) != self.manifest.dim:
                raise LibraryError(
                    f"{self.root / self.manifest.index_file}: the index holds {index.ntotal} {index.d}-d "
                    f"vectors, the manifest says {self.manifest.index_frames} {self.manifest.dim}-d ones; "
                    f"run `songseek repair --library {self.root}`")
            self._index = index
        except LibraryError:
            # A writer replaced the index since this library was opened: answer exactly, and correctly.
            if read_manifest(self.root).generation == self.manifest.generation:
                raise  # missing or damaged for real: the message says to run `songseek repair`
            self._index = None
            self.manifest = dataclasses.replace(self.manifest, index_file="", index_frames=0)

    # -- queries -------------------------------------------------------------------------------------
    def embed_text(self, texts: Iterable[str]) -> np.ndarray:
        """One unit vector per text; a text past the encoder's token limit is the mean of its sentence
        chunks' vectors, never silently truncated (engine/query/longtext.py)."""
        texts = _text_list(texts, "embed_text", "embed_text([text])")
        for t in texts:
            check_query_text(t)
        return longtext.embed_texts(self.encoder, [t.strip() for t in texts])

    def query_kind(self, text: str) -> Kind:
        """What ``search(text)`` takes the text to describe (engine/query/kind.py): its form when the text
        tower reads it in one piece, else None (a longer text is scored chunk by chunk)."""
        check_query_text(text)
        return text_kind(text.strip(), len(longtext.text_chunks(self.encoder, text.strip())))

    def _window_vectors(self, audio: np.ndarray, hop_s: float) -> np.ndarray:
        """The encoder's vectors of a mono clip's library-length windows, ``hop_s`` apart from its start."""
        windows, _ = frame_windows(_mono_clip(audio), self.encoder.info.sample_rate, self.manifest.window_s, hop_s)
        return self.encoder.embed_audio(windows)

    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        """Mean of the window vectors of a mono float32 clip at the encoder's rate → one unit vector (1, dim)."""
        return l2_normalize(self._window_vectors(audio, self.manifest.window_s).mean(axis=0, keepdims=True))

    def embed_excerpt(self, audio: np.ndarray) -> np.ndarray:
        """Unit vectors (n, dim) of a mono float32 clip's windows on the library's own grid (its window and
        hop, from the clip's start): what the ``align`` rerank matches against each track's windows."""
        return l2_normalize(self._window_vectors(audio, self.manifest.hop_s))

    def excerpt_aligns(self, excerpt_s: float, opts: SearchOptions) -> bool:
        """Whether an audio excerpt this long runs the ``align`` rerank: asked for, or ``auto`` (the library's
        saved mode unless the search passes one) with two windows or more on the library's grid."""
        mode = opts.rerank or self.rerank_settings().mode
        windows = len(window_bounds(excerpt_s, self.manifest.window_s, self.manifest.hop_s)) if excerpt_s > 0 else 0
        return mode == "align" or (mode == "auto" and windows > 1)

    def search(self, text: str | None = None, *, audio: str | Path | np.ndarray | None = None,
               vector: np.ndarray | None = None, start_s: float = 0.0, end_s: float | None = None,
               max_excerpt_s: float = MAX_EXCERPT_S, options: SearchOptions | None = None,
               **kwargs: Unpack[SearchKwargs]
               ) -> list[Hit]:
        """Best tracks for one query: text, audio (a file path or mono samples at the encoder's rate),
        or a vector of the library's dimension. Keyword arguments are SearchOptions fields (k=, where=...).

        An audio file is decoded from ``start_s`` to ``end_s`` only (seeking; ``end_s`` defaults to
        ``start_s + max_excerpt_s``, and a longer excerpt is refused); samples are cut to the same excerpt.
        The three apply to ``audio=`` only: given with a text or vector they raise QueryError."""
        given = [x is not None for x in (text, audio, vector)]
        if sum(given) != 1:
            raise QueryError("give exactly one of a text query, audio= or vector=")
        if audio is None and (start_s != 0.0 or end_s is not None or max_excerpt_s != MAX_EXCERPT_S):
            raise QueryError("start_s, end_s and max_excerpt_s cut an audio= query; a text or vector has no excerpt")
        opts = SearchOptions.from_kwargs(options, kwargs)
        if text is not None:
            return self.search_texts([text], opts)[0]
        if vector is not None:
            v = np.asarray(vector)
            if v.ndim > 1 and v.shape[0] != 1:  # flattened, its shape would be reported as (1, n x dim)
                raise QueryError(f"vector= takes one ({self.manifest.dim},) vector, got shape {v.shape}: "
                                 "search several with search_vectors")
            q = self._check_vectors(v.reshape(1, -1))
        else:
            start_s, end_s = excerpt_bounds(start_s, end_s, max_excerpt_s)
            sr = self.encoder.info.sample_rate
            if not isinstance(audio, (str, Path, np.ndarray, list, tuple)):  # an int or bytes: an IndexError below
                raise QueryError(f"audio= takes a file path (str or Path) or a 1-D float32 array of samples, "
                                 f"got {type(audio).__name__}")
            if isinstance(audio, (str, Path)):
                audio = decode(Path(audio), sr, start_s, end_s)
            else:
                audio = np.asarray(audio)[round(start_s * sr) : round(end_s * sr)]
            if self.excerpt_aligns(len(audio) / sr, opts):
                aligned = dataclasses.replace(opts, rerank="align").validated()
                return self._search_chunks(self.embed_excerpt(audio), aligned)
            q = self.embed_audio(audio)
            opts = self._excerpt_segment(opts, len(audio) / sr)
        return self.search_vectors(q, opts)[0]

    def _excerpt_segment(self, opts: SearchOptions, excerpt_s: float) -> SearchOptions:
        """``opts`` whose segment is at most as long as an audio excerpt: a 10 s clip matches about one
        window, and a longer run of merely similar windows must not be shown in place of the one it
        matches (scores and ranking do not change: only the segment search's longest run)."""
        base = opts.fusion or self.rerank_settings().params
        longest = base.segment_kernel if base.segment_kernel > 0 else base.kernel
        fit = params_for_hop(self.manifest.hop_s, segment_s=max(excerpt_s, 1e-3), window_s=self.manifest.window_s,
                             base=base).segment_kernel
        if fit >= longest:
            return opts
        return dataclasses.replace(opts, fusion=dataclasses.replace(base, segment_kernel=fit))

    def search_texts(self, texts: Iterable[str], options: SearchOptions | None = None,
                     **kwargs: Unpack[SearchKwargs]) -> list[list[Hit]]:
        """Hits for each text, in input order, exactly as ``search(text)`` would rank them, with every
        text (and every chunk of a long one) embedded in one batch. Keyword arguments as ``search``."""
        texts = _text_list(texts, "search_texts", "search(text)")
        opts = SearchOptions.from_kwargs(options, kwargs).validated()
        for t in texts:
            check_query_text(t)
        chunked = longtext.embed_chunked(self.encoder, [t.strip() for t in texts])
        short = [i for i, c in enumerate(chunked) if len(c.chunks) == 1]
        results: list[list[Hit]] = [[] for _ in texts]
        if short:
            vectors = np.concatenate([chunked[i].vectors for i in short])
            kinds = [chunked[i].kind for i in short]
            for i, hits in zip(short, self.search_vectors(vectors, opts, kinds=kinds)):
                results[i] = hits
        for i, c in enumerate(chunked):
            if len(c.chunks) > 1:  # a long text: rerank on the chunk-by-window matrix, as search() does
                results[i] = self._search_chunks(c.vectors, opts)
        return results

    def _check_vectors(self, q: np.ndarray) -> np.ndarray:
        """Unit float32 (n, dim) rows, or QueryError for a wrong shape or a degenerate vector: not real
        numbers, NaN/inf, entries beyond ±MAX_VECTOR_ABS, or a zero vector (no direction to search)."""
        q = np.asarray(q)
        if q.dtype.kind not in "fiu":
            raise QueryError(f"query vectors must hold real numbers, not {q.dtype} values")
        if q.ndim != 2 or q.shape[1] != self.manifest.dim:
            raise QueryError(f"query vectors must be (n, {self.manifest.dim}) for this library, got {q.shape}")
        q64 = q.astype(np.float64)
        if not np.isfinite(q64).all():
            raise QueryError("query vectors contain NaN or inf")
        peak = np.abs(q64).max(axis=1)
        if len(peak) and peak.max() > MAX_VECTOR_ABS:
            raise QueryError(f"query vectors hold values up to {peak.max():.3g}; at most ±{MAX_VECTOR_ABS:g} "
                             "are accepted (scale the vectors down)")
        if (peak == 0).any():
            raise QueryError(f"query vector {int(np.argmax(peak == 0))} is zero: it has no direction to search")
        return unit_rows(q64)  # as ingest stores them: a tiny vector keeps its direction

    def search_vectors(self, queries: np.ndarray, options: SearchOptions | None = None,
                       kinds: Sequence[Kind] | None = None, **kwargs: Unpack[SearchKwargs]) -> list[list[Hit]]:
        """Hits for each row of float32 (nq, dim) query vectors, in input order. ``kinds``: what each
        query describes (engine/query/kind.py), which the ``auto`` rerank uses; None: not known.
        Keyword arguments as ``search``."""
        opts = SearchOptions.from_kwargs(options, kwargs).validated()
        q = self._check_vectors(np.asarray(queries))
        if isinstance(kinds, str):
            raise QueryError(f"kinds takes one kind per query vector (a list), got the str {kinds!r}")
        if kinds is not None and len(kinds) != len(q):
            raise QueryError(f"kinds must give one kind per query vector ({len(q)}), got {len(kinds)}")
        bad = [kind for kind in kinds or () if kind is not None and kind not in KINDS]
        if bad:  # else "moment" fails deep in the rerank, or passes unchecked when rerank= is not auto
            raise QueryError(f"unknown query kind {bad[0]!r}: each of kinds is 'part', 'whole' or None")
        if self.n_tracks == 0:
            return [[] for _ in range(len(q))]
        allowed = self.allowed_rows(opts.where, opts.filter_limits)
        if opts.exact:
            self.exact_scanner(upcoming=len(q))  # a batch this size pays for the int8 copy up front
        results = []
        for qi in range(len(q)):
            cand_rows, cand_scores = self.candidates(q[qi], opts, allowed)
            results.append(self.rerank(q[qi], cand_rows, cand_scores, opts, None if kinds is None else kinds[qi]))
        return results

    def _search_chunks(self, chunks: np.ndarray, opts: SearchOptions) -> list[Hit]:
        """Hits for one long text given as float32 (C, dim) chunk vectors: candidates are the union of each
        chunk's candidates (candidate score: the best over chunks), reranked by longtext.chunk_scores."""
        q = self._check_vectors(chunks)
        if self.n_tracks == 0:
            return []
        return self.rerank(q, *self._chunk_candidates(q, opts), opts)

    def _chunk_candidates(self, q: np.ndarray, opts: SearchOptions) -> tuple[np.ndarray, np.ndarray]:
        """The candidates of unit (C, dim) chunk vectors: each chunk's, joined (score: the best over chunks)."""
        allowed = self.allowed_rows(opts.where, opts.filter_limits)
        best: dict[int, float] = {}
        for qc in q:
            rows, scores = self.candidates(qc, opts, allowed)
            for r, sc in zip(rows.tolist(), scores.tolist()):
                best[r] = max(best.get(r, -np.inf), sc)
        order = sorted(best, key=lambda r: (-best[r], r))
        return np.asarray(order, dtype=np.int64), np.asarray([best[r] for r in order], np.float32)

    def track_hit(self, q: np.ndarray, row: int, options: SearchOptions | None = None, kind: Kind = None) -> Hit:
        """Track ``row`` as a search for ``q`` scores it: float32 (dim,), or (C, dim) for the sentence chunks of
        a long text (kind None). Score and segment come from the same rerank over the same candidates, with
        the track added to them when the search does not reach it. What a track page shows for a query."""
        opts = (options or SearchOptions()).validated()
        q = self._check_vectors(np.atleast_2d(q))
        if len(q) == 1:
            rows, scores = self.candidates(q[0], opts, self.allowed_rows(opts.where, opts.filter_limits))
        else:
            rows, scores = self._chunk_candidates(q, opts)
        if row not in set(rows.tolist()):
            first, count = int(self._cols["frame_start"][row]), int(self._cols["frame_count"][row])
            own = float((np.asarray(self.store.vectors(first, count)) @ q.T).max())
            rows, scores = np.append(rows, row).astype(np.int64), np.append(scores, own).astype(np.float32)
        everyone = dataclasses.replace(opts, k=len(rows), collapse_duplicates=False)
        hits = self.rerank(q if len(q) > 1 else q[0], rows, scores, everyone, kind)
        track_id = str(self._cols["track_id"][row])
        return next(h for h in hits if h.track_id == track_id)

    # -- internals -----------------------------------------------------------------------------------
    def tables(self) -> dict[str, pa.Table]:
        """The tables `--where` and `songseek sql` see: tracks, then every extra table (tags, mos, ...)."""
        return {"tracks": self.tracks, **self.extra_tables}

    def allowed_rows(self, where: str | None, limits: FilterLimits | None = None) -> np.ndarray | None:
        """Sorted track rows that ``where`` keeps. Remembered per predicate (the tables of an open Library
        never change, and DuckDB costs about 25 ms a call); the last ``policy.where_cache`` predicates are kept."""
        if where is None:
            return None
        with self._where_lock:
            if where in self._where_cache:
                self._where_cache[where] = self._where_cache.pop(where)  # most recent last
                return self._where_cache[where]
        ids = filter_track_ids(self.tables(), where, limits or self.filter_limits)
        rows = np.asarray(sorted({self._row_of[t] for t in ids if t in self._row_of}), dtype=np.int64)
        rows.setflags(write=False)
        with self._where_lock:
            self._where_cache[where] = rows
            while len(self._where_cache) > self.policy.where_cache:
                self._where_cache.pop(next(iter(self._where_cache)))
        return rows

    def _collapsible(self) -> int:
        """Tracks that collapse_duplicates can drop (members of a duplicate group past its first): a pool of
        k more candidates than that still holds k groups when the library has them."""
        table = self.extra_tables.get("duplicates")
        if table is None or table.num_rows == 0:
            return 0
        return table.num_rows - len(set(table.column("dup_group").to_pylist()))

    def candidates(self, q: np.ndarray, opts: SearchOptions, allowed: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Top candidate track rows by their best frame score (int64 (c,), float32 (c,)), best first."""
        want = max(opts.candidates, (opts.k + self._collapsible()) if opts.collapse_duplicates else opts.k)
        if allowed is not None:
            subset = int(self._cols["frame_count"][allowed].sum())
            if subset <= self.policy.subset_frames:
                return self._subset_candidates(q, want, allowed)
            if opts.exact:  # a broad filter: mask the full exact scan instead of gathering most of it
                return self.exact_candidates(q, want, allowed)
        n = self.store.n_rows
        index = None if opts.exact else self.index
        covered = self.manifest.index_frames if index is not None else 0
        if index is None or not covered:
            return self.exact_candidates(q, want, allowed)
        # per call, so concurrent queries keep their own; an index without IVF lists takes none
        is_ivf = faiss_index.ivf_nlist(self.manifest.index_description) > 0
        nprobe = (opts.nprobe or self.default_nprobe()) if is_ivf else None
        # The tail not yet in the index is searched by brute force.
        tail_scores, tail_rows = faiss_index.exact_search(self.store.rows(covered, n), q[None], n - covered)
        tail_rows = tail_rows[0] + covered
        tail_scores = tail_scores[0]
        kf = self.first_frames(want)
        while True:
            scores, rows = faiss_index.search(index, q[None], kf, nprobe)
            if ((rows < -1) | (rows >= covered)).any():  # ids damaged where the identity hash does not look
                raise LibraryError(f"{self.root / self.manifest.index_file}: missing or damaged index (a search "
                                   f"returned frame rows past the {covered} it holds); "
                                   f"run `songseek repair --library {self.root}`")
            exhausted = bool((rows[0] < 0).any())  # the probed lists hold fewer than kf frames
            rows, scores = np.r_[rows[0], tail_rows], np.r_[scores[0], tail_scores]
            keep = rows >= 0
            owners = np.where(keep, self.frame_owner[np.where(keep, rows, 0)], -1)
            if allowed is not None:
                owners = only_rows(owners, allowed, self.n_tracks)
            cand, cand_scores = best_per_track(owners, scores, want)
            if len(cand) >= want or (kf >= covered and not exhausted):  # not exhausted: every frame came back
                return cand, cand_scores
            if exhausted:
                # The probed lists hold too few (matching) tracks. k hits must still come back whenever k
                # tracks match (a filter can exclude most of the probed lists): fill in by the exact scan.
                counts = self._cols["frame_count"]
                reachable = int(np.count_nonzero(counts if allowed is None else counts[allowed]))
                if len(cand) >= min(opts.k, reachable):
                    return cand, cand_scores
                return self.exact_candidates(q, want, allowed)
            kf *= 4

    def _subset_candidates(self, q: np.ndarray, want: int, allowed: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        """Exact best-frame ranking of the ``allowed`` track rows (sorted) by scoring only their frames: one
        product per run of tracks whose frames lie next to each other in one shard."""
        starts, counts = self._cols["frame_start"], self._cols["frame_count"]
        allowed = allowed[counts[allowed] > 0]
        if len(allowed) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        shard, local = self._frame_slices()
        s, c, sh, lo = starts[allowed], counts[allowed], shard[allowed], local[allowed]
        # A run starts at a track whose frames do not follow the previous kept track's in the same shard.
        first = np.flatnonzero(np.r_[True, (s[1:] != s[:-1] + c[:-1]) | (sh[1:] != sh[:-1])])
        ends = np.cumsum(c)  # where each kept track's scores end in ``sims``
        run_frames = np.diff(np.r_[0, ends[np.r_[first[1:], len(c)] - 1]])
        vecs = self.store.shards()
        sims = np.concatenate([vecs[sh[i]][lo[i]:lo[i] + f] @ q for i, f in zip(first, run_frames)])
        best = np.maximum.reduceat(sims, ends - c)
        order = np.lexsort((allowed, -best))[:want]  # best first; ties: lower track row, as _best_per_track
        return allowed[order], best[order].astype(np.float32)

    def rerank_settings(self) -> RerankSettings:
        """The rerank a search uses unless it passes its own: the library's saved settings (`songseek
        bench rerank --save`), else the default mode with the measured parameters at the library's hop."""
        saved = self.manifest.rerank
        if not saved:
            return RerankSettings(params=params_for_hop(self.manifest.hop_s, window_s=self.manifest.window_s))
        try:
            return RerankSettings.from_json(saved)
        except UsageError as exc:
            raise LibraryError(f"{self.root}: damaged rerank settings in the manifest ({exc}); save them again "
                               f"with `songseek bench rerank --save` or run `songseek repair`") from exc

    def default_nprobe(self) -> int:
        """IVF lists a query probes without ``nprobe=``: the library's saved value (`songseek index
        --nprobe`), else the automatic rule for its index and size."""
        m = self.manifest
        return m.index_nprobe or faiss_index.default_nprobe(m.index_description, m.index_frames)

    def first_frames(self, want: int) -> int:
        """Frames to ask FAISS for first: the best frames cluster in few tracks, so about ``want`` tracks'
        worth of frames (mean frames per track), which saves a second search in most queries."""
        per_track = self.store.n_rows / max(self.n_tracks, 1)
        return int(max(4 * want, 256, want * per_track))

    def exact_candidates(self, q: np.ndarray, want: int, allowed: np.ndarray | None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` best tracks by best frame over every frame, exactly as float32 brute force would.

        A flat float32 index is exact already. Otherwise, once the int8 copy is worth building
        (``policy.build_after``), the int8 scanner scores every frame within a proven ``margin``; every frame
        that could still be its track's best and beat the ``want``-th track is re-scored in float32
        (engine/query/scan.py, docs/performance.md). Else float32 brute force.
        """
        n = self.store.n_rows
        owner = self.frame_owner
        if allowed is not None:
            owner = only_rows(owner, allowed, self.n_tracks)
        flat = self.index if self.manifest.index_description == "Flat" else None
        if flat is not None and self.manifest.index_frames == n:
            kf = self.first_frames(want)
            while True:
                scores, rows = faiss_index.search(flat, q[None], kf)
                keep = rows[0] >= 0
                cand, cand_scores = best_per_track(owner[rows[0][keep]], scores[0][keep], want)
                if len(cand) >= want or kf >= n:
                    return cand, cand_scores
                kf *= 4
        scanner = self.exact_scanner(upcoming=1)
        with self._scanner_lock:
            self._exact_queries += 1
        if scanner is not None:
            approx, margin = scanner.scores(q)
            proof = rows_to_rescore(approx, margin, owner, want, self.first_frames(want))
            if proof is not None:
                self.exact_counts["int8"] += 1
                return best_per_track(owner[proof], self.row_scores(proof, q), want)
        self.exact_counts["float32"] += 1
        sims = np.concatenate([vecs @ q for vecs in self.store.shards()]) if n else np.zeros(0, np.float32)
        return top_tracks(sims, owner, want, self.first_frames(want))

    def exact_scanner(self, upcoming: int) -> Int8Scanner | None:
        """The int8 copy, if it is built or worth building now: past ``policy.fp32_frames`` frames, not needed
        by a flat index, and once the exact queries answered plus ``upcoming`` reach ``policy.build_after``."""
        flat = self.manifest.index_description == "Flat" and self.manifest.index_frames == self.store.n_rows
        if self.store.n_rows <= self.policy.fp32_frames or flat:
            return None
        if self._scanner is None and self._exact_queries + upcoming < self.policy.build_after:
            return None
        return self.int8_scanner()

    @property
    def int8_copy(self) -> Int8Scanner | None:
        """The exact path's int8 copy if it has been built (None: not yet, or it cannot be on this machine)."""
        return self._scanner if isinstance(self._scanner, Int8Scanner) else None

    def int8_scanner(self) -> Int8Scanner | None:
        """The int8 copy, built now if it was not (once per Library; None when it cannot be built)."""
        with self._scanner_lock:  # threads sharing this Library build the copy once
            if self._scanner is None:
                self._scanner = build_scanner(self.store.shards()) or False
        return self._scanner if isinstance(self._scanner, Int8Scanner) else None

    def _frame_slices(self) -> tuple[np.ndarray, np.ndarray]:
        """Per track row: its shard number and first row inside that shard (int64 (n_tracks,) each)."""
        if self._slices is None:
            starts = self._cols["frame_start"].astype(np.int64)
            shard = np.searchsorted(self.store.offsets, starts, side="right") - 1
            self._slices = (shard, starts - self.store.offsets[shard])
        return self._slices

    def row_scores(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        """float32 (len(rows),) dot products of global frame rows with q (one gather per shard).

        einsum, not ``@``: numpy's own single-threaded loop. OpenBLAS would thread a product this size and
        leave its threads spinning on the cores the next query's torch int8 scan needs (measured: 100k
        frames, whole exact query 14.8 ms p50 with ``@``)."""
        out = np.empty(len(rows), np.float32)
        offsets = self.store.offsets
        shard = np.searchsorted(offsets, rows, side="right") - 1
        for s, vecs in enumerate(self.store.shards()):
            mask = shard == s
            if mask.any():
                out[mask] = np.einsum("ij,j->i", vecs[rows[mask] - offsets[s]], q)
        return out

    def _tag(self, name: str, row: int) -> str | None:
        values = self._meta.get(name)
        return None if values is None else values[row]

    def rerank(self, q: np.ndarray, rows: np.ndarray, cand_scores: np.ndarray, opts: SearchOptions,
               kind: Kind = None) -> list[Hit]:
        if len(rows) == 0:
            return []
        starts, counts = self._cols["frame_start"][rows], self._cols["frame_count"][rows]
        tmax = int(counts.max())
        qs = np.atleast_2d(q)  # (C, dim): C > 1 for the sentence chunks of a long text
        sims = np.zeros((len(rows), len(qs), tmax), dtype=np.float32)
        shard, local = self._frame_slices()
        shards = self.store.shards()
        slices = zip(shard[rows].tolist(), local[rows].tolist(), counts.tolist())
        if len(qs) == 1:  # one matrix-vector product per track: no per-call GEMM set-up
            q0 = qs[0]
            for i, (h, a, c) in enumerate(slices):
                sims[i, 0, :c] = shards[h][a:a + c] @ q0
        else:
            for i, (h, a, c) in enumerate(slices):
                sims[i, :, :c] = qs @ shards[h][a:a + c].T
        settings = self.rerank_settings()
        mode, fusion = resolve_mode(opts.rerank or settings.mode, kind), opts.fusion or settings.params
        res = longtext.chunk_scores(sims, counts.astype(np.int64), fusion, mode=mode)
        score = cand_scores if mode == "none" else res.score
        # Deterministic order: score, then track id.
        ids = self._cols["track_id"][rows]
        order = np.lexsort((ids, -np.asarray(score, dtype=np.float64)))
        if opts.collapse_duplicates:  # the best-ranked member of each duplicate group stands for it
            table = self.extra_tables.get("duplicates")
            groups = dict(zip(table.column("track_id").to_pylist(), table.column("dup_group").to_pylist())
                          ) if table is not None else {}
            _, first_of = np.unique(np.asarray([groups.get(t, t) for t in ids[order]], dtype=object),
                                    return_index=True)
            order = order[np.sort(first_of)]
        order = order[: opts.k]
        hits = []
        for rank, i in enumerate(order, start=1):
            r = int(rows[i])
            first, last = int(starts[i] + res.seg_first[i]), int(starts[i] + res.seg_last[i])
            hits.append(Hit(
                rank=rank, track_id=str(ids[i]), path=str(self._cols["path"][r]), score=float(score[i]),
                segment=Segment(float(self.store.start_s[first]), float(self.store.end_s[last])),
                r_k=float(res.r_k[i]), r_t=float(res.r_t[i]), best_window=float(res.best_window[i]),
                candidate_score=float(cand_scores[i]), title=self._tag("title", r),
                artist=self._tag("artist", r), album=self._tag("album", r),
                duration_s=float(self._cols["duration_s"][r]) if "duration_s" in self._cols else 0.0,
                rerank=mode,
            ))
        return hits


def _live_duplicates(table: pa.Table, live: Mapping[str, int]) -> pa.Table:
    """The duplicates table as it holds for the tracks the library has now: rows of removed tracks left out,
    and where a group's kept file was removed, dup_keep null for the members left (none of them is known to
    be the one to keep, so ``dup_keep IS NOT FALSE`` must not hide them all) until `songseek duplicates`
    runs again."""
    needed = {"track_id", "dup_group", "dup_keep"}
    if not needed <= set(table.column_names):
        return table
    ids = table.column("track_id").to_pylist()
    present = [t in live for t in ids]
    if all(present):
        return table
    table = table.filter(pa.array(present, pa.bool_()))
    keep = table.column("dup_keep").to_pylist()
    groups = table.column("dup_group").to_pylist()
    kept = {g for g, k in zip(groups, keep) if k}
    column = pa.array([k if g in kept else None for g, k in zip(groups, keep)], pa.bool_())
    return table.set_column(table.column_names.index("dup_keep"), "dup_keep", column)

