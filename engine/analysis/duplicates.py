"""Duplicates, re-masters and versions, found from the stored window vectors and never by merging two songs.

1. **Candidates**: every track's pooled vector (mean of its windows) asks FAISS for its ``neighbours``
   nearest tracks; pairs above ``candidate_cosine`` go on. Never all pairs.
2. **Alignment** (alignment.py): the window × window cosine matrix of a candidate pair must hold a long
   diagonal (one time offset) or a long monotone chain (an edit). Most candidates stop here.
   **Duplicates of duplicates**: when A~B and B~C are confirmed (level 1 or 2), A~C is a candidate too,
   and it goes to the audio check whatever its vectors say (a -6 dB and a +6 dB copy are 12 dB apart, and
   the vectors of a loudness-sensitive encoder do not align; FAISS may not list them as neighbours).
3. **Audio** (fingerprint.py, only for pairs that passed 2 or came from duplicates of duplicates): both
   files are decoded at 8 kHz and
   fingerprinted. The fingerprint tells the same recording (level 1: found at one lag, same band balance
   and loudness envelope), another master or edit of it (level 2: found, but at several lags, or with EQ or
   compression changed) from a different recording that merely sounds alike (level 3, *possible version*,
   when the vectors align well: CLAP is not trained to be invariant to versions, so it is only a flag).
   Without the files (moved, or ``audio=False``) the levels come from the vectors alone and say so.
4. **Groups**: pairs are joined by complete linkage: two groups merge only when *every* pair across them
   is a duplicate at that level or better, so a chain A~B~C cannot pull two different songs together.
   Pairs the user marked as not duplicates are never in one group.

Groups are stored as the ``duplicates`` table (``--where`` sees dup_group, dup_level, dup_keep), the user's
marks as ``not_duplicates``; nothing is ever deleted.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from songseek.engine.analysis.alignment import Alignment, align_pairs
from songseek.engine.analysis.fingerprint import RATE as FP_RATE
from songseek.engine.analysis.fingerprint import Fingerprint, FingerprintMatch, compare, fingerprint
from songseek.engine.analysis.pooling import pooled_track_vectors
from songseek.engine.errors import DecodeError, UsageError
from songseek.engine.query.search import Library

DUPLICATES_TABLE = "duplicates"
NOT_DUPLICATES_TABLE = "not_duplicates"
LEVELS = {1: "same recording", 2: "another master or edit", 3: "possible version"}
# Names a user may give for a level (``parse_level``); level 1 is the strictest match.
LEVEL_NAMES = {"recording": 1, "same-recording": 1, "master": 2, "edit": 2, "version": 3}
LOSSLESS = ("flac", "alac", "wavpack", "ape", "tta", "pcm")
_META_KEY = b"songseek.duplicates"


@dataclass(frozen=True)
class DuplicateParams:
    """Thresholds (measured on the labelled set, docs/duplicates.md). Cosines are of unit window vectors."""

    neighbours: int = 20            # FAISS neighbours per track (a family of copies must not crowd out its own)
    candidate_cosine: float = 0.5   # pooled-vector cosine a candidate pair needs (gain alone moves it to 0.77)
    window_cosine: float = 0.75     # a window match (on a diagonal or chain): a permissive gate, the audio decides
    version_cosine: float = 0.9     # a window match for a possible version (vectors only)
    min_cover: float = 0.5          # share of the shorter track's windows the chain must cover
    version_ratio: float = 0.5      # a possible version is at least this share of the other's length (a 15 s
                                    # clip that matches half a minute of a song is not another performance)
    level1_cover: float = 0.85      # vectors only: diagonal cover for level 1
    level1_cosine: float = 0.97     # vectors only: mean diagonal cosine for level 1
    audio_cover: float = 0.5        # fingerprint: share of the shorter track found (levels 1-2) ...
    audio_agreement: float = 0.55   # ... at this mean bit agreement (other notes over one drum loop: 0.5) ...
    two_lags: float = 0.7           # ... at one or two lags (unrelated blocks match at scattered lags)
    # Level 1 from the fingerprint; each bound chosen on generator seed 3 between the worst true level-1 pair
    # and the nearest other pair that passes every other bound (docs/duplicates.md; reported on seed 5).
    audio_cover1: float = 0.8       # level 1 needs this much of the shorter file found ...
    one_lag: float = 0.9            # ... this much of it at one lag (2 s blocks) ...
    lag_cover: float = 0.9          # ... this share of the frames agreeing at that lag (a cut inside a block) ...
    band_db: float = 2.0            # ... band balance within this (dB; EQ remasters: 3.4 and more) ...
    dynamics_db: float = 1.0        # ... loudness envelope within this (dB over 256 ms; compressed: 2 and more) ...
    timbre_db: float = 0.7          # ... and band differences within this (other instruments: 1 dB and more)
    # A pair that is level 1 in everything but its loudness envelope is another master (level 2) only when
    # the envelope change follows the loudness, |level_corr| at least this (compressed masters on seed 9:
    # 0.87-1.0; two sections of one score with other note velocities, merged at level 2 before: -0.24);
    # otherwise it is another performance of the same notes: level 3 at most.
    level_corr: float = 0.6
    # ... and a change of at least master_db (under dynamics_db) that follows the loudness that closely is a
    # master too (level 2), not a copy (seed 13: a mild compressor, 0.87-0.90 dB at |level_corr| 0.99;
    # level-1 copies with |level_corr| >= 0.6 on seeds 3-13: 0.16 dB at most, the others 0.54 dB at most).
    master_db: float = 0.5
    max_partners: int = 50          # duplicates of duplicates are followed from tracks with at most this many
    audio: bool = True              # decode candidate pairs to confirm them
    min_level: int = 3              # the weakest match reported: 1 same recording only, 2 also masters/edits, 3 all

    def validated(self) -> DuplicateParams:
        if self.min_level not in LEVELS:
            raise UsageError(f"min_level must be 1, 2 or 3 (got {self.min_level})")
        if self.neighbours < 1:
            raise UsageError(f"neighbours must be at least 1 (got {self.neighbours})")
        return self


@dataclass(frozen=True)
class PairEvidence:
    """Why two tracks are (or are not) duplicates. Spans are seconds [start, end] on each side; ``offset_s``
    is added to a time in A to find the same music in B; ``window_agreement`` the mean cosine along the
    diagonal; ``chain_cover`` the share of the shorter track's windows on the monotone chain."""

    a: str
    b: str
    level: int                      # 1-3, or 0: not a duplicate
    pooled_cosine: float
    duration_ratio: float
    offset_s: float
    span_a: tuple[float, float]
    span_b: tuple[float, float]
    window_agreement: float
    diagonal_cover: float
    chain_cover: float
    version_cover: float
    audio: FingerprintMatch | None = None
    audio_checked: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["audio"] = asdict(self.audio) if self.audio is not None else None
        return out


@dataclass(frozen=True)
class Member:
    """A track of a group, with the facts the keep choice uses (bit rate in kbit/s from size/length)."""

    track_id: str
    path: str
    level: int                      # to the kept file (0 for the kept file itself)
    keep: bool
    codec: str
    lossless: bool
    bit_rate_kbps: float
    sample_rate: int
    duration_s: float
    tags: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DuplicateGroup:
    """Tracks that are one recording (level 1), masters/edits of one (2) or possible versions (3): every
    pair inside is a duplicate at ``level`` or better. The first member is the one to keep."""

    group_id: str
    level: int
    members: tuple[Member, ...]
    pairs: tuple[PairEvidence, ...]

    def to_json(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "level": self.level, "level_name": LEVELS[self.level],
                "keep": self.members[0].track_id, "members": [m.to_json() for m in self.members],
                "pairs": [p.to_json() for p in self.pairs]}


@dataclass
class _Context:
    """One run's inputs, with the tracks table's columns as numpy arrays (looked up per pair)."""

    lib: Library
    params: DuplicateParams
    excluded: set[tuple[str, str]]
    pooled: np.ndarray
    fingerprints: dict[int, Fingerprint | None] = field(default_factory=dict)
    decoded: int = 0

    def __post_init__(self) -> None:
        t = self.lib.tracks
        self.ids = t.column("track_id").to_numpy(zero_copy_only=False)
        self.paths = t.column("path").to_numpy(zero_copy_only=False)
        self.starts = t.column("frame_start").to_numpy(zero_copy_only=False)
        self.counts = t.column("frame_count").to_numpy(zero_copy_only=False)
        self.durations = np.nan_to_num(t.column("duration_s").to_numpy(zero_copy_only=False).astype(np.float64))


def parse_level(text: str) -> int:
    """A level from its number (1-3) or name (recording, master, edit, version) for ``min_level``."""
    t = text.strip().lower()
    level = int(t) if t.isdigit() else LEVEL_NAMES.get(t, 0)
    if level not in LEVELS:
        raise UsageError(f"min_level must be 1, 2, 3 or one of {', '.join(LEVEL_NAMES)} (got {text!r})")
    return level


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def candidate_pairs(pooled: np.ndarray, neighbours: int, min_cosine: float) -> list[tuple[int, int, float]]:
    """(row a < row b, cosine) pairs among each row's ``neighbours`` nearest pooled vectors (unit rows,
    float32 (N, dim)) with cosine >= ``min_cosine``. Exact inner product up to 20k tracks, IVF above
    (nlist 4√N, 16 lists probed): about N·√N work, never N²."""
    import faiss

    x = np.ascontiguousarray(pooled, dtype=np.float32)
    n, dim = x.shape
    if n < 2:
        return []
    k = min(neighbours + 1, n)
    index: Any
    if n <= 20_000:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(n, size=min(n, 64 * nlist), replace=False)])
        index.nprobe = 16
    index.add(x)
    sims, rows = index.search(x, k)
    out: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j, s in zip(rows[i].tolist(), sims[i].tolist()):
            if j >= 0 and j != i and s >= min_cosine:
                out[(min(i, j), max(i, j))] = float(s)
    return sorted((a, b, s) for (a, b), s in out.items())


def _vectors(ctx: _Context, row: int) -> np.ndarray:
    return ctx.lib.store.vectors(int(ctx.starts[row]), int(ctx.counts[row]))


def _fingerprint(ctx: _Context, row: int) -> Fingerprint | None:
    from songseek.engine.audio import decode

    if row not in ctx.fingerprints:
        path = Path(str(ctx.paths[row]))
        try:
            ctx.fingerprints[row] = fingerprint(decode(path, FP_RATE)) if path.is_file() else None
            ctx.decoded += 1
        except (DecodeError, UsageError):
            ctx.fingerprints[row] = None
    return ctx.fingerprints[row]


def pair_level(p: DuplicateParams, aligned: bool, version: bool, duration_ratio: float, diag_cover: float,
               diag_mean: float, audio: FingerprintMatch | None) -> int:
    """The level a pair's evidence supports (0: not a duplicate), before ``min_level``. A possible version
    (``version``: the vectors align but the audio does not) also needs comparable lengths
    (``duration_ratio`` >= ``p.version_ratio``)."""
    version = version and duration_ratio >= p.version_ratio
    if audio is not None:
        # no mean-agreement bound here: Opus 64k of a synth pad agrees at 0.54; the bounds below decide
        same_but_loudness = (audio.coverage >= p.audio_cover1 and audio.one_lag >= p.one_lag
                             and audio.lag_cover >= p.lag_cover and audio.band_db <= p.band_db
                             and audio.timbre_db <= p.timbre_db)
        follows_loudness = abs(audio.level_corr) >= p.level_corr  # a compressor's or limiter's level mapping
        if (same_but_loudness and audio.dynamics_db <= p.dynamics_db
                and not (audio.dynamics_db >= p.master_db and follows_loudness)):
            return 1
        if same_but_loudness and not follows_loudness:
            return 3 if version else 0  # the same notes at other loudness, note by note: another performance
        if audio.coverage >= p.audio_cover and audio.agreement >= p.audio_agreement and audio.two_lags >= p.two_lags:
            return 2
        return 3 if version else 0
    if aligned and diag_cover >= p.level1_cover and diag_mean >= p.level1_cosine:
        return 1
    # vectors only: another master or edit keeps the recording's windows in place and nearly as they were, a
    # diagonal at the version gate's cosine at least; the permissive window gate alone (its job is to hand
    # pairs to the audio) would call unrelated songs of one style "the same recording"
    if aligned and diag_cover >= p.min_cover and diag_mean >= p.version_cosine:
        return 2
    return 3 if version else 0


def align_rows(ctx: _Context, pairs: list[tuple[int, int]], min_chain: float = 0.0) -> list[Alignment]:
    """The window alignments of table-row pairs, batched (alignment.align_pairs); the diagonal only where
    the chain covers ``min_chain`` of the shorter track."""
    cache: dict[int, np.ndarray] = {}

    def vec(r: int) -> np.ndarray:
        if r not in cache:
            cache[r] = _vectors(ctx, r)
        return cache[r]

    p = ctx.params
    return align_pairs([vec(a) for a, _ in pairs], [vec(b) for _, b in pairs], p.window_cosine, p.version_cosine,
                       min_chain=min_chain)


def evaluate_pair(ctx: _Context, ra: int, rb: int, suspected: bool = False,
                  alignment: Alignment | None = None) -> PairEvidence:
    """Align two tracks (table rows; or take their ``alignment``) and, when the vectors agree or the pair
    is ``suspected`` (both are duplicates of a third track), confirm from the audio."""
    p = ctx.params
    a, b = str(ctx.ids[ra]), str(ctx.ids[rb])
    al = alignment if alignment is not None else align_rows(ctx, [(ra, rb)])[0]
    diag, chain, version = al.diagonal, al.chain, al.version_chain
    short = max(1, min(int(ctx.counts[ra]), int(ctx.counts[rb])))
    da, db = float(ctx.durations[ra]), float(ctx.durations[rb])
    hop, win = ctx.lib.manifest.hop_s, ctx.lib.manifest.window_s
    start_a = diag.start_a * hop
    end_a = (diag.start_a + max(diag.run, 1) - 1) * hop + win
    offset = diag.offset * hop
    aligned = max(diag.run, chain) / short >= p.min_cover
    possible_version = version / short >= p.min_cover
    audio = None
    level = 0
    if _key(a, b) not in ctx.excluded and (aligned or possible_version or (suspected and p.audio)):
        fa = _fingerprint(ctx, ra) if p.audio else None
        fb = _fingerprint(ctx, rb) if fa is not None else None
        audio = compare(fa, fb) if fa is not None and fb is not None else None
        level = pair_level(p, aligned, possible_version, min(da, db) / max(da, db, 1e-9), diag.run / short,
                           diag.mean, audio)
        if audio is not None and fa is not None and fb is not None and audio.coverage >= p.audio_cover:
            # the fingerprint's lag is finer than a window hop; compare() measures from the shorter track
            offset = audio.lag_s if fa.seconds <= fb.seconds else -audio.lag_s
        if level > p.min_level:
            level = 0
    # the spans follow the (possibly refined) offset and stay inside both tracks
    span_start, span_end = max(start_a, -offset, 0.0), min(end_a, da, db - offset)
    # a copy's pooled vectors are equal: float32 rounding made their cosine 1.0000001 in the report
    return PairEvidence(
        a=a, b=b, level=level, pooled_cosine=min(1.0, float(ctx.pooled[ra] @ ctx.pooled[rb])),
        duration_ratio=min(da, db) / max(da, db, 1e-9), offset_s=offset,
        span_a=(span_start, span_end) if diag.run else (0.0, 0.0),
        span_b=(span_start + offset, span_end + offset) if diag.run else (0.0, 0.0),
        window_agreement=diag.mean, diagonal_cover=diag.run / short, chain_cover=chain / short,
        version_cover=version / short, audio=audio, audio_checked=audio is not None)


def group_pairs(n: int, edges: Iterable[tuple[int, int, int]], level_of: Callable[[int, int], int]
                ) -> list[tuple[int, list[int]]]:
    """Complete-linkage groups of rows 0..n-1. ``edges`` are (level, a, b) found duplicates (level 1-3);
    ``level_of(a, b)`` gives any other pair's level (0: not a duplicate). Two groups merge at level L only
    when every pair across them is at L or better; an edge refused at L is tried again at the worst level
    across (if that is a duplicate level). Returns (group level, sorted rows) for groups of 2 or more."""
    parent = list(range(n))
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    level: dict[int, int] = {i: 0 for i in range(n)}
    heap = [(lv, a, b) for lv, a, b in edges]
    heapq.heapify(heap)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    while heap:
        lv, a, b = heapq.heappop(heap)
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        worst = lv
        for x in members[ra]:
            for y in members[rb]:
                pl = level_of(x, y)
                worst = 99 if pl == 0 else max(worst, pl)
                if worst == 99:
                    break
            if worst == 99:
                break
        if worst > lv:
            if worst <= 3:
                heapq.heappush(heap, (worst, a, b))
            continue
        parent[rb] = ra
        members[ra] += members.pop(rb)
        level[ra] = max(level[ra], level[rb], lv)
    return sorted(((level[r], sorted(ms)) for r, ms in members.items() if len(ms) > 1), key=lambda g: g[1])


def duplicates_of_duplicates(edges: list[tuple[int, int, int]], level_of: Callable[[int, int], int],
                              max_partners: int) -> list[tuple[int, int, int]]:
    """The confirmed (level 1-2) pairs found by following confirmed pairs: A~B and B~C make A~C a
    candidate, until nothing new is confirmed. Work grows with the duplicates, not with the library; a
    track with more than ``max_partners`` confirmed partners is not followed further."""
    partners: dict[int, set[int]] = {}
    queue = [(a, b) for lv, a, b in edges if lv <= 2]
    for a, b in queue:
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    found = []
    while queue:
        a, b = queue.pop()
        for x, y in ((a, b), (b, a)):
            if len(partners[y]) > max_partners:
                continue
            for z in sorted(partners[y] - partners[x] - {x}):
                lv = level_of(x, z)
                if 1 <= lv <= 2:
                    found.append((lv, min(x, z), max(x, z)))
                    partners[x].add(z)
                    partners.setdefault(z, set()).add(x)
                    queue.append((x, z))
    return found


def _member_facts(lib: Library, row: int) -> tuple[str, bool, float, int, float, int]:
    from songseek.engine.audio import probe

    t = lib.tracks
    path = Path(str(t.column("path")[row].as_py()))
    dur = float(t.column("duration_s")[row].as_py() or 0.0)
    size = int(t.column("size")[row].as_py() or 0)
    tags = sum(t.column(c)[row].as_py() not in (None, "") for c in ("title", "artist", "album", "genre", "year")
               if c in t.column_names)
    codec, rate = path.suffix.lstrip(".").lower() or "?", 0
    try:
        info = probe(path) if path.is_file() else None
    except (DecodeError, UsageError):
        info = None
    if info is not None:
        codec, rate = info.codec, info.sample_rate
    lossless = codec.startswith(LOSSLESS) or codec in ("wav", "aiff")
    return codec, lossless, size * 8 / 1000 / dur if dur > 0 else 0.0, rate, dur, int(tags)


KBPS_STEP = 16.0  # bit rates closer than this are equal when choosing the file to keep
# A member shorter than this share of the group's longest is a part of it (a cut-off download, an excerpt):
# never kept over a whole one, whatever its format (a 5.6 s cut of a 61.5 s Ogg out-rated the whole file).
COMPLETE_SHARE = 0.8


def keep_order(rows: list[int], facts: dict[int, tuple[str, bool, float, int, float, int]],
               track_ids: list[str]) -> list[int]:
    """``rows`` best file first, from each row's (codec, lossless, kbit/s, sample rate, seconds, tags):
    whole files (at least COMPLETE_SHARE of the longest) first, then lossless, then bit rate in steps of
    KBPS_STEP (size / length: a trimmed copy's container header alone would otherwise out-rate the whole
    file), sample rate, length, tags; ties by track id."""
    tid = dict(zip(rows, track_ids, strict=True))
    whole = COMPLETE_SHARE * max(facts[r][4] for r in rows)
    return sorted(rows, key=lambda r: (facts[r][4] < whole, not facts[r][1], -round(facts[r][2] / KBPS_STEP),
                                       -facts[r][3], -facts[r][4], -facts[r][5], tid[r]))


def _make_group(lib: Library, level: int, rows: list[int], pairs: dict[tuple[int, int], PairEvidence]
                ) -> DuplicateGroup:
    ids = lib.tracks.column("track_id")
    facts = {r: _member_facts(lib, r) for r in rows}
    order = keep_order(rows, facts, [str(ids[r].as_py()) for r in rows])
    keep = order[0]
    members = []
    for r in order:
        codec, lossless, kbps, rate, dur, tags = facts[r]
        lv = 0 if r == keep else pairs[(min(r, keep), max(r, keep))].level
        members.append(Member(track_id=str(ids[r].as_py()), path=str(lib.tracks.column("path")[r].as_py()),
                              level=lv, keep=r == keep, codec=codec, lossless=lossless,
                              bit_rate_kbps=round(kbps, 1), sample_rate=rate, duration_s=dur, tags=tags))
    ev = tuple(pairs[(a, b)] for i, a in enumerate(sorted(rows)) for b in sorted(rows)[i + 1:])
    return DuplicateGroup(group_id=members[0].track_id, level=level, members=tuple(members), pairs=ev)


def excluded_pairs(table: pa.Table | None) -> set[tuple[str, str]]:
    """The user's not-duplicate marks from a ``not_duplicates`` table (each pair once, sorted)."""
    if table is None or table.num_rows == 0:
        return set()
    out = set()
    for tid, others in zip(table.column("track_id").to_pylist(), table.column("not_duplicate_of").to_pylist()):
        out |= {_key(tid, o) for o in others or []}
    return out


def not_duplicates_table(pairs: set[tuple[str, str]]) -> pa.Table:
    """One row per track: ``track_id``, ``not_duplicate_of`` (list of track ids), each pair in both rows."""
    by: dict[str, set[str]] = {}
    for a, b in pairs:
        by.setdefault(a, set()).add(b)
        by.setdefault(b, set()).add(a)
    ids = sorted(by)
    return pa.table({"track_id": pa.array(ids, pa.string()),
                     "not_duplicate_of": pa.array([sorted(by[t]) for t in ids], pa.list_(pa.string()))})


def duplicates_table(groups: list[DuplicateGroup], params: DuplicateParams) -> pa.Table:
    """One row per grouped track: dup_group (the kept track's id), dup_level (the group's), dup_keep,
    dup_member_level (to the kept file). The parameters and group count ride in the schema metadata."""
    rows = [(m.track_id, g.group_id, g.level, m.keep, m.level) for g in groups for m in g.members]
    table = pa.table({
        "track_id": pa.array([r[0] for r in rows], pa.string()),
        "dup_group": pa.array([r[1] for r in rows], pa.string()),
        "dup_level": pa.array([r[2] for r in rows], pa.int8()),
        "dup_keep": pa.array([r[3] for r in rows], pa.bool_()),
        "dup_member_level": pa.array([r[4] for r in rows], pa.int8()),
    })
    meta = {"params": asdict(params), "groups": len(groups),
            "by_level": {str(lv): sum(g.level == lv for g in groups) for lv in LEVELS}}
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})


def stored_summary(table: pa.Table | None) -> dict[str, Any]:
    """What a stored ``duplicates`` table says: groups, grouped tracks and groups per level (for `info`)."""
    if table is None:
        return {"groups": 0, "tracks": 0, "by_level": {}, "found": False}
    raw = (table.schema.metadata or {}).get(_META_KEY)
    meta = json.loads(raw) if raw else {}
    return {"groups": int(meta.get("groups", 0)), "tracks": table.num_rows, "by_level": meta.get("by_level", {}),
            "found": True}


@dataclass(frozen=True)
class DuplicateReport:
    groups: tuple[DuplicateGroup, ...]
    candidates: int                 # pairs FAISS proposed
    aligned: int                    # pairs whose alignment was computed (candidates + complete-linkage checks)
    decoded: int                    # files decoded for the audio check
    seconds: float


def find_duplicates(lib: Library, params: DuplicateParams | None = None,
                    excluded: set[tuple[str, str]] | None = None) -> DuplicateReport:
    """Groups of duplicates in an open library (nothing stored; see ``update_library``)."""
    import time

    t0 = time.perf_counter()
    p = (params or DuplicateParams()).validated()
    t = lib.tracks
    pooled = pooled_track_vectors(lib.store, t.column("frame_start").to_numpy(zero_copy_only=False),
                                  t.column("frame_count").to_numpy(zero_copy_only=False)) if lib.n_tracks else \
        np.zeros((0, lib.manifest.dim), np.float32)
    ctx = _Context(lib=lib, params=p, excluded=excluded or set(), pooled=pooled)
    cands = candidate_pairs(pooled, p.neighbours, p.candidate_cosine)
    pairs: dict[tuple[int, int], PairEvidence] = {}
    suspects: set[tuple[int, int]] = set()

    def level_of(x: int, y: int) -> int:
        """A pair's level, aligned once; pairs asked for by the grouping are duplicates of duplicates, so
        one that the vector gate stopped before the audio check is checked now."""
        k = (min(x, y), max(x, y))
        if k not in pairs or (k not in suspects and p.audio and not pairs[k].audio_checked):
            suspects.add(k)
            pairs[k] = evaluate_pair(ctx, *k, suspected=True)
        return pairs[k].level

    for lo in range(0, len(cands), 2048):  # a chunk's window vectors in memory at a time
        chunk = [(a, b) for a, b, _ in cands[lo:lo + 2048]]
        for (a, b), al in zip(chunk, align_rows(ctx, chunk, p.min_cover)):
            pairs[(a, b)] = evaluate_pair(ctx, a, b, alignment=al)
    edges = [(lv, a, b) for a, b, _ in cands if (lv := pairs[(a, b)].level)]
    edges += duplicates_of_duplicates(edges, level_of, p.max_partners)
    grouped = group_pairs(lib.n_tracks, edges, level_of)
    groups = sorted((_make_group(lib, lv, rows, pairs) for lv, rows in grouped),
                    key=lambda g: (g.level, g.group_id))
    return DuplicateReport(groups=tuple(groups), candidates=len(cands), aligned=len(pairs), decoded=ctx.decoded,
                           seconds=time.perf_counter() - t0)


def update_library(root: str | Path, params: DuplicateParams | None = None,
                   not_duplicate: Iterable[tuple[str, str]] = ()) -> DuplicateReport:
    """Record the user's ``not_duplicate`` pairs (kept for every later run), find the groups and store
    them as the ``duplicates`` table, in one commit under the writer lock. Unknown track ids are refused."""
    from songseek.engine.storage.writer import LibraryWriter

    with LibraryWriter(Path(root)) as writer:
        lib = Library.open(root)
        known = set(lib.tracks.column("track_id").to_pylist())
        marks = {_key(a, b) for a, b in not_duplicate}
        for a, b in marks:
            for tid in (a, b):
                if tid not in known:
                    raise UsageError(f"not_duplicate: no track {tid!r} in {root} (track ids: `songseek duplicates "
                                     "--json` or the tracks table)")
            if a == b:
                raise UsageError(f"not_duplicate: a track cannot be paired with itself ({a!r})")
        excluded = excluded_pairs(writer.get_table(NOT_DUPLICATES_TABLE)) | marks
        report = find_duplicates(lib, params, excluded)
        if marks:
            writer.put_table(NOT_DUPLICATES_TABLE, not_duplicates_table(excluded))
        writer.put_table(DUPLICATES_TABLE, duplicates_table(list(report.groups), params or DuplicateParams()))
        writer.commit()
    return report
