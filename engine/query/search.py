"""The query engine: query vector → FAISS candidate frames → candidate tracks → rerank → hits.

Reranking looks at every frame of each candidate track (memory-mapped views, no copy of the table) and
scores it with `fusion.rerank_scores` via `longtext.chunk_scores` (CoLLAP temporal attention fusion by
default; mean, max or none). A text past the encoder's token limit is scored as sentence chunks (longtext.py).
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.encoders import Encoder, load_encoder
from songseek.engine.encoders.base import l2_normalize
from songseek.engine.errors import LibraryError, QueryError, UsageError
from songseek.engine.query import longtext
from songseek.engine.query.filters import filter_track_ids
from songseek.engine.query.fusion import RERANK_MODES, FusionParams, RerankSettings, params_for_hop
from songseek.engine.query.scan import Int8Scanner, build_scanner
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import Manifest, check_compatible, read_manifest
from songseek.engine.storage.store import FrameStore, read_table_mmap

__all__ = ["RERANK_MODES", "Hit", "Library", "LibraryStats", "SearchOptions", "Segment", "library_stats"]
MAX_QUERY_CHARS = 20_000


def check_query_text(text: str) -> None:
    """Refuse an empty or absurdly long text query (QueryError), before any model is loaded."""
    if not text or not text.strip():
        raise QueryError("the text query is empty: describe the music you are looking for")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the text query is {len(text):,} characters long; at most {MAX_QUERY_CHARS:,} are "
                         "accepted: shorten it (long captions are split into sentence chunks up to that)")


# When a filter keeps at most this many frames, they are searched exactly instead of over-fetching.
EXACT_SUBSET_FRAMES = 200_000
# --where predicates whose track rows an open Library remembers.
WHERE_CACHE = 32
# Up to this many frames the exact path is a plain float32 scan (an int8 copy would not pay for itself).
EXACT_FP32_FRAMES = 50_000
# The exact path builds its int8 copy once this many exact queries are answered or asked for in one call.
# The copy costs about 25 float32 scans (1M x 512: 3.1 s vs 124 ms), so waiting for 16 keeps any run of
# exact queries within about twice the cost of the best choice made in hindsight (the ski-rental rule),
# and a one-off CLI query never pays for it.
EXACT_BUILD_AFTER = 16


@dataclass(frozen=True)
class Segment:
    """The best-matching stretch of a track, in seconds from its start."""

    start_s: float
    end_s: float


@dataclass(frozen=True)
class Hit:
    """One ranked track. ``score`` is the rerank score; the parts explain it (`--explain`)."""

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

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "track_id": self.track_id, "path": self.path, "score": self.score,
            "start_s": self.segment.start_s, "end_s": self.segment.end_s, "r_k": self.r_k, "r_t": self.r_t,
            "best_window": self.best_window, "candidate_score": self.candidate_score, "title": self.title,
            "artist": self.artist, "album": self.album, "duration_s": self.duration_s,
        }


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

    def validated(self) -> SearchOptions:
        if self.k <= 0:
            raise QueryError(f"k must be at least 1 (got {self.k})")
        if self.rerank is not None and self.rerank not in RERANK_MODES:
            raise QueryError(f"unknown rerank mode {self.rerank!r}: use {', '.join(RERANK_MODES)}")
        if self.nprobe is not None and self.nprobe <= 0:
            raise QueryError(f"--nprobe must be at least 1 (got {self.nprobe})")
        if self.candidates <= 0:
            raise QueryError(f"--candidates must be at least 1 (got {self.candidates})")
        return self


class Library:
    """A library opened for searching. Cheap to open: shards are memory-mapped, the index is loaded once."""

    def __init__(self, root: Path, manifest: Manifest, encoder: Encoder | None, device: str) -> None:
        self.root = root
        self.manifest = manifest
        self._encoder = encoder
        self._device = device
        self.store = FrameStore(root, manifest)
        self.tracks = (read_table_mmap(root / manifest.tracks_file) if manifest.tracks_file
                       else pa.table({"track_id": pa.array([], pa.string())}))
        self._cols = {name: self.tracks.column(name).to_numpy(zero_copy_only=False)
                      for name in ("track_id", "path", "frame_start", "frame_count", "duration_s")
                      if name in self.tracks.column_names}
        self._meta = {name: self.tracks.column(name).to_pylist()
                      for name in ("title", "artist", "album") if name in self.tracks.column_names}
        self._row_of = {tid: i for i, tid in enumerate(self._cols["track_id"])}
        # Extra tables (tags, mos, ...) keyed by track_id; mapped now so a later commit cannot pull them away.
        self.extra_tables = {name: read_table_mmap(root / file) for name, file in manifest.extra_tables.items()}
        self.frame_owner = self._frame_owner()
        self._index: Any = None
        self._scanner: Int8Scanner | bool | None = None  # int8 copy for the exact path (False: cannot)
        self._scanner_lock = threading.Lock()
        self._where_cache: dict[str, np.ndarray] = {}
        self._where_lock = threading.Lock()
        self._slices: tuple[np.ndarray, np.ndarray] | None = None
        self._exact_queries = 0
        if manifest.encoder.random_weights:
            warnings.warn(f"{root} was built with RANDOM weights: scores mean nothing", stacklevel=2)

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, encoder: Encoder | None = None, device: str = "auto") -> Library:
        """Open the last committed state of a library. ``encoder`` overrides the manifest's (must match)."""
        root = Path(root).expanduser()
        for attempt in range(3):  # a writer may swap generations between reading the manifest and files
            manifest = read_manifest(root)
            try:
                lib = cls(root, manifest, encoder, device)
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

    @property
    def encoder(self) -> Encoder:
        """The library's own encoder, loaded on first use (text and audio queries need it)."""
        if self._encoder is None:
            info = self.manifest.encoder
            if info.name == "precomputed":
                raise QueryError(
                    f"{self.root} holds precomputed vectors with no encoder to embed queries: search it with "
                    "vectors (--query-vectors / vector=), or re-ingest with --encoder NAME --checkpoint CKPT")
            from songseek.engine.device import resolve_device

            self._encoder = load_encoder(info.name, info.checkpoint or None, resolve_device(self._device),
                                         info.random_weights)
            check_compatible(self.manifest, self._encoder.info, self.root)
        return self._encoder

    @property
    def index(self) -> Any:
        if self._index is None and self.manifest.index_file:
            try:
                self._index = faiss_index.load_index(self.root / self.manifest.index_file)
            except LibraryError:
                # A writer replaced the index since this library was opened: answer exactly, and correctly.
                if read_manifest(self.root).generation == self.manifest.generation:
                    raise  # missing or damaged for real: the message says to run `songseek repair`
                self._index = None
                self.manifest = dataclasses.replace(self.manifest, index_file="", index_frames=0)
        return self._index

    # -- queries -------------------------------------------------------------------------------------
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text; a text past the encoder's token limit is the mean of its sentence
        chunks' vectors, never silently truncated (engine/query/longtext.py)."""
        for t in texts:
            check_query_text(t)
        return longtext.embed_texts(self.encoder, [t.strip() for t in texts])

    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        """Mean of the window vectors of a mono float32 clip at the encoder's rate → one unit vector (1, dim)."""
        from songseek.engine.audio import frame_windows

        enc = self.encoder
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or len(audio) == 0:
            raise QueryError("the audio query is empty")
        windows, _ = frame_windows(audio, enc.info.sample_rate, self.manifest.window_s, self.manifest.window_s)
        return l2_normalize(enc.embed_audio(windows).mean(axis=0, keepdims=True))

    def search(self, text: str | None = None, *, audio: str | Path | np.ndarray | None = None,
               vector: np.ndarray | None = None, start_s: float = 0.0, end_s: float | None = None,
               options: SearchOptions | None = None, **kwargs: Any) -> list[Hit]:
        """Best tracks for one query: text, audio (a file path or mono samples at the encoder's rate),
        or a vector of the library's dimension. Keyword arguments are SearchOptions fields (k=, where=...)."""
        given = [x is not None for x in (text, audio, vector)]
        if sum(given) != 1:
            raise QueryError("give exactly one of a text query, audio= or vector=")
        opts = options or SearchOptions(**kwargs)
        if text is not None:
            return self.search_texts([text], opts)[0]
        if vector is not None:
            q = self._check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        else:
            if isinstance(audio, (str, Path)):
                from songseek.engine.audio import decode

                audio = decode(Path(audio), self.encoder.info.sample_rate, start_s, end_s)
            q = self.embed_audio(np.asarray(audio))
        return self.search_vectors(q, opts)[0]

    def search_texts(self, texts: list[str], options: SearchOptions | None = None, **kwargs: Any
                     ) -> list[list[Hit]]:
        """Hits for each text, in input order, exactly as ``search(text)`` would rank them, with every
        text (and every chunk of a long one) embedded in one batch. Keyword arguments as ``search``."""
        opts = (options or SearchOptions(**kwargs)).validated()
        for t in texts:
            check_query_text(t)
        chunked = longtext.embed_chunked(self.encoder, [t.strip() for t in texts])
        short = [i for i, c in enumerate(chunked) if len(c.chunks) == 1]
        results: list[list[Hit]] = [[] for _ in texts]
        if short:
            for i, hits in zip(short, self.search_vectors(np.concatenate([chunked[i].vectors for i in short]),
                                                          opts)):
                results[i] = hits
        for i, c in enumerate(chunked):
            if len(c.chunks) > 1:  # a long text: rerank on the chunk-by-window matrix, as search() does
                results[i] = self._search_chunks(c.vectors, opts)
        return results

    def _check_vectors(self, q: np.ndarray) -> np.ndarray:
        if q.ndim != 2 or q.shape[1] != self.manifest.dim:
            raise QueryError(f"query vectors must be (n, {self.manifest.dim}) for this library, got {q.shape}")
        if not np.isfinite(q).all():
            raise QueryError("query vectors contain NaN or inf")
        return l2_normalize(q)

    def search_vectors(self, queries: np.ndarray, options: SearchOptions | None = None) -> list[list[Hit]]:
        """Hits for each row of float32 (nq, dim) query vectors, in input order."""
        opts = (options or SearchOptions()).validated()
        q = self._check_vectors(np.asarray(queries, dtype=np.float32))
        if self.n_tracks == 0:
            return [[] for _ in range(len(q))]
        allowed = self._allowed_rows(opts.where)
        if opts.exact:
            self._exact_scanner(upcoming=len(q))  # a batch this size pays for the int8 copy up front
        results = []
        for qi in range(len(q)):
            cand_rows, cand_scores = self._candidates(q[qi], opts, allowed)
            results.append(self._rerank(q[qi], cand_rows, cand_scores, opts))
        return results

    def _search_chunks(self, chunks: np.ndarray, opts: SearchOptions) -> list[Hit]:
        """Hits for one long text given as float32 (C, dim) chunk vectors: candidates are the union of each
        chunk's candidates (candidate score: the best over chunks), reranked by longtext.chunk_scores."""
        q = self._check_vectors(chunks)
        if self.n_tracks == 0:
            return []
        allowed = self._allowed_rows(opts.where)
        best: dict[int, float] = {}
        for qc in q:
            rows, scores = self._candidates(qc, opts, allowed)
            for r, sc in zip(rows.tolist(), scores.tolist()):
                best[r] = max(best.get(r, -np.inf), sc)
        order = sorted(best, key=lambda r: (-best[r], r))
        rows_arr = np.asarray(order, dtype=np.int64)
        return self._rerank(q, rows_arr, np.asarray([best[r] for r in order], np.float32), opts)

    # -- internals -----------------------------------------------------------------------------------
    def tables(self) -> dict[str, pa.Table]:
        """The tables `--where` and `songseek sql` see: tracks, then every extra table (tags, mos, ...)."""
        return {"tracks": self.tracks, **self.extra_tables}

    def _allowed_rows(self, where: str | None) -> np.ndarray | None:
        """Sorted track rows that ``where`` keeps. Remembered per predicate (the tables of an open Library
        never change, and DuckDB costs about 25 ms a call); the last WHERE_CACHE predicates are kept."""
        if where is None:
            return None
        with self._where_lock:
            if where in self._where_cache:
                self._where_cache[where] = self._where_cache.pop(where)  # most recent last
                return self._where_cache[where]
        ids = filter_track_ids(self.tables(), where)
        rows = np.asarray(sorted(self._row_of[t] for t in ids if t in self._row_of), dtype=np.int64)
        rows.setflags(write=False)
        with self._where_lock:
            self._where_cache[where] = rows
            while len(self._where_cache) > WHERE_CACHE:
                self._where_cache.pop(next(iter(self._where_cache)))
        return rows

    def _candidates(self, q: np.ndarray, opts: SearchOptions, allowed: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Top candidate track rows by their best frame score (int64 (c,), float32 (c,)), best first."""
        want = max(opts.candidates, opts.k)
        if allowed is not None:
            subset = int(self._cols["frame_count"][allowed].sum())
            if subset <= EXACT_SUBSET_FRAMES:
                return self._subset_candidates(q, want, allowed)
            if opts.exact:  # a broad filter: mask the full exact scan instead of gathering most of it
                return self._exact_candidates(q, want, allowed)
        n = self.store.n_rows
        index = None if opts.exact else self.index
        covered = self.manifest.index_frames if index is not None else 0
        if index is None or not covered:
            return self._exact_candidates(q, want, allowed)
        # Per query, so that one query's --nprobe does not stick to the next.
        faiss_index.set_nprobe(index, opts.nprobe or self.default_nprobe())
        # The tail not yet in the index is searched by brute force.
        tail_scores, tail_rows = faiss_index.exact_search(self.store.rows(covered, n), q[None], n - covered)
        tail_rows = tail_rows[0] + covered
        tail_scores = tail_scores[0]
        kf = self._first_kf(want)
        while True:
            scores, rows = faiss_index.search(index, q[None], kf)
            exhausted = bool((rows[0] < 0).any())  # the probed lists hold fewer than kf frames
            rows, scores = np.r_[rows[0], tail_rows], np.r_[scores[0], tail_scores]
            keep = rows >= 0
            owners = np.where(keep, self.frame_owner[np.where(keep, rows, 0)], -1)
            if allowed is not None:
                owners = _only(owners, allowed, self.n_tracks)
            cand, cand_scores = _best_per_track(owners, scores, want)
            if len(cand) >= want or kf >= covered or exhausted:
                return cand, cand_scores
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
            return RerankSettings(params=params_for_hop(self.manifest.hop_s))
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

    def _first_kf(self, want: int) -> int:
        """Frames to ask FAISS for first: the best frames cluster in few tracks, so about ``want`` tracks'
        worth of frames (mean frames per track), which saves a second search in most queries."""
        per_track = self.store.n_rows / max(self.n_tracks, 1)
        return int(max(4 * want, 256, want * per_track))

    def _exact_candidates(self, q: np.ndarray, want: int, allowed: np.ndarray | None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` best tracks by best frame over every frame, exactly as float32 brute force would.

        A flat float32 index is exact already. Otherwise, once the int8 copy is worth building
        (EXACT_BUILD_AFTER), the int8 scanner scores every frame within a proven ``margin``; every frame
        that could still be its track's best and beat the ``want``-th track is re-scored in float32
        (engine/query/scan.py, docs/performance.md). Else float32 brute force.
        """
        n = self.store.n_rows
        owner = self.frame_owner
        if allowed is not None:
            owner = _only(owner, allowed, self.n_tracks)
        flat = self.index if self.manifest.index_description == "Flat" else None
        if flat is not None and self.manifest.index_frames == n:
            kf = self._first_kf(want)
            while True:
                scores, rows = faiss_index.search(flat, q[None], kf)
                keep = rows[0] >= 0
                cand, cand_scores = _best_per_track(owner[rows[0][keep]], scores[0][keep], want)
                if len(cand) >= want or kf >= n:
                    return cand, cand_scores
                kf *= 4
        scanner = self._exact_scanner(upcoming=1)
        self._exact_queries += 1
        if scanner is not None:
            found = self._certified_candidates(scanner, q, want, owner)
            if found is not None:
                return found
        sims = np.concatenate([vecs @ q for vecs in self.store.shards()]) if n else np.zeros(0, np.float32)
        return _top_tracks(sims, owner, want, self._first_kf(want))

    def _certified_candidates(self, scanner: Int8Scanner, q: np.ndarray, want: int, owner: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray] | None:
        """The exact path's int8 pass (see ``_exact_candidates``); None when too many frames are too close
        to call and float32 brute force is cheaper."""
        approx, m = scanner.scores(q)
        approx[owner < 0] = -np.inf  # dead frames and tracks the filter leaves out
        # b: the want-th track's int8 score (its best frame's); found among the frames above a threshold
        # guessed from a 1/64 sample, lowered until those frames cover want tracks.
        sample = approx[::64]
        j = max(1, self._first_kf(want) // 64)
        while True:
            t = np.partition(sample, len(sample) - j)[len(sample) - j] if j < len(sample) else -np.inf
            rows = np.flatnonzero(approx >= t)
            _, best = _best_per_track(owner[rows], approx[rows], want)
            if len(best) >= want or t == -np.inf:
                break
            j *= 4
        if len(best) < want:
            return None  # fewer live tracks than asked for: brute force is as cheap
        # The want-th track's float32 score is at least b - m, so a frame can only matter if its int8 score
        # is at least b - 2m, and, to be its own track's best, within 2m of that track's best int8 score.
        rows = np.flatnonzero(approx >= best[-1] - 2 * m)
        if len(rows) > len(approx) // 8:
            return None
        owners, a = owner[rows], approx[rows]
        uniq, inv = np.unique(owners, return_inverse=True)
        track_best = np.full(len(uniq), -np.inf, np.float32)
        np.maximum.at(track_best, inv, a)
        near = a >= track_best[inv] - 2 * m
        return _best_per_track(owners[near], self._row_scores(rows[near], q), want)

    def _exact_scanner(self, upcoming: int) -> Int8Scanner | None:
        """The int8 copy, if it is built or worth building now: past EXACT_FP32_FRAMES frames, not needed
        by a flat index, and once the exact queries answered plus ``upcoming`` reach EXACT_BUILD_AFTER."""
        flat = self.manifest.index_description == "Flat" and self.manifest.index_frames == self.store.n_rows
        if self.store.n_rows <= EXACT_FP32_FRAMES or flat:
            return None
        if self._scanner is None and self._exact_queries + upcoming < EXACT_BUILD_AFTER:
            return None
        return self._int8_scanner()

    def _int8_scanner(self) -> Int8Scanner | None:
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

    def _row_scores(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
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

    def _rerank(self, q: np.ndarray, rows: np.ndarray, cand_scores: np.ndarray, opts: SearchOptions) -> list[Hit]:
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
        mode, fusion = opts.rerank or settings.mode, opts.fusion or settings.params
        res = longtext.chunk_scores(sims, counts.astype(np.int64), fusion, mode=mode)
        score = cand_scores if mode == "none" else res.score
        # Deterministic order: score, then track id.
        ids = self._cols["track_id"][rows]
        order = np.lexsort((ids, -np.asarray(score, dtype=np.float64)))[: opts.k]
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
            ))
        return hits


def _only(owners: np.ndarray, allowed: np.ndarray, n_tracks: int) -> np.ndarray:
    """``owners`` (track rows, -1 = none) with every track not in ``allowed`` set to -1: a table lookup,
    where np.isin sorted both (1M frames, 25k allowed tracks: about 20 ms)."""
    keep = np.zeros(n_tracks + 1, bool)  # the extra last entry is what -1 looks up: never kept
    keep[allowed] = True
    return np.where(keep[owners], owners, -1)


def _top_tracks(sims: np.ndarray, owner: np.ndarray, want: int, kf: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``want`` best tracks by best frame from every frame's score: grouping only the top ``kf`` frames,
    ×4 until they cover ``want`` tracks or every frame."""
    n = len(sims)
    while True:
        top = np.argpartition(-sims, kf - 1)[:kf] if kf < n else np.arange(n)
        cand, cand_scores = _best_per_track(owner[top], sims[top], want)
        if len(cand) >= want or kf >= n:
            return cand, cand_scores
        kf *= 4


def _best_per_track(owners: np.ndarray, scores: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Group frame hits by owning track (skipping -1) → the ``want`` best tracks by their best frame."""
    keep = owners >= 0
    owners, scores = owners[keep], scores[keep]
    if len(owners) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    order = np.lexsort((owners, -scores))
    owners, scores = owners[order], scores[order]
    _, first = np.unique(owners, return_index=True)
    first = np.sort(first)[:want]
    return owners[first], scores[first].astype(np.float32)


@dataclass(frozen=True)
class LibraryStats:
    """What `songseek info` shows (its JSON keys are a contract scripts rely on)."""

    path: str
    tracks: int
    frames: int
    dead_frames: int
    encoder: str
    checkpoint: str
    checkpoint_sha256: str
    dim: int
    sample_rate: int
    window_s: float
    hop_s: float
    index: str
    index_factory: str
    index_frames: int
    index_status: str
    index_nprobe: int          # the lists a query probes by default (0 when the index is not IVF)
    rerank: dict[str, Any]     # the rerank searches use by default: {"rerank": mode, "params": {...}, "saved": bool}
    random_weights: bool
    failures: int
    audio_hours: float
    size_bytes: int
    schema_version: int
    songseek_version: str
    generation: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def library_stats(lib: Library) -> LibraryStats:
    m = lib.manifest
    live = int(lib._cols["frame_count"].sum()) if lib.n_tracks else 0
    n = lib.store.n_rows
    failures = read_table_mmap(lib.root / m.failures_file).num_rows if m.failures_file else 0
    want = faiss_index.auto_factory(n, m.dim) if m.index_factory == "auto" else m.index_factory
    if not m.index_file:
        status = "none yet (searches are exact)"
    elif m.index_frames < n:
        status = f"behind by {n - m.index_frames} frames (searched exactly); next index run adds them"
    elif want != m.index_description or (want.startswith("IVF") and n > 4 * max(m.index_trained_on, 1)):
        status = f"rebuild due ({want} at this size)"
    else:
        status = "up to date (updated incrementally; IVF retrained past 4x its training size)"
    size = sum(p.stat().st_size for p in lib.root.iterdir() if p.is_file())
    return LibraryStats(
        path=str(lib.root), tracks=lib.n_tracks, frames=live, dead_frames=n - live, encoder=m.encoder.name,
        checkpoint=m.encoder.checkpoint, checkpoint_sha256=m.encoder.checkpoint_sha256, dim=m.dim,
        sample_rate=m.encoder.sample_rate, window_s=m.window_s, hop_s=m.hop_s,
        index=m.index_description or "none", index_factory=m.index_factory, index_frames=m.index_frames,
        index_status=status, index_nprobe=lib.default_nprobe() if m.index_description.startswith("IVF") else 0,
        rerank={**lib.rerank_settings().to_json(), "saved": bool(m.rerank)},
        random_weights=m.encoder.random_weights, failures=failures,
        audio_hours=float(lib._cols["duration_s"].sum()) / 3600 if lib.n_tracks else 0.0, size_bytes=size,
        schema_version=m.schema_version, songseek_version=m.songseek_version, generation=m.generation,
    )
