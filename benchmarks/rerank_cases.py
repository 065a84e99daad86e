"""The query sets of the rerank report (benchmarks/rerank_report.py): similarity arrays with ground truth.

A :class:`Case` is one query kind on one dataset in one direction: for every query, the similarities of
its candidates' windows (the rerank's whole input) and which candidates are relevant. Three sources:

- **planted** (benchmarks/planted.py) at several geometries: ``base`` (the tuned defaults), ``aniso``
  (every frame and query vector v → unit(v + 2u) for one shared random u: cosines squeezed into a narrow
  band near 0.8, as CLAP's are), ``sharp`` (weak per-track style, little section noise: concepts decide),
  ``blurry`` (more window and query noise). Kinds: ``whole`` (whole-track queries) and ``section``.
- **demo**: the bundled demo model (docs/demo-model.md) on synthetic music of one generator seed. Kinds
  text→audio, each text as Library.search reads it: ``whole`` (the whole-track descriptions that fit in
  the text tower's 64 tokens: one vector), ``long`` (those past it: sentence chunks × windows,
  engine/query/longtext.py), ``section`` captions, ``tags``; audio→text (a track ranks the captions of a
  level): ``whole``, ``section``, ``tags``; query by example: EXAMPLES_PER_TRACK 10 s excerpts of each
  track at offsets that are not on the window grid, with noise at 10 dB SNR (relevant: its track). Several
  per track because one excerpt per track gave rows of 80 queries whose R@10 moved by ±5 points from seed
  to seed (docs/fusion.md, "Session 7").
- **captions** (benchmarks/longtext_planted.py): bag-of-words captions over synthetic scores, long
  whole-track descriptions through the chunk path (kind ``long``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypedDict

import numpy as np

from songseek.benchmarks.longtext_planted import BagOfWordsEncoder, make_planted_captions
from songseek.benchmarks.planted import make_planted
from songseek.benchmarks.synth import iter_tracks
from songseek.benchmarks.synth.dataset import synth_track
from songseek.engine.audio.windowing import frame_windows
from songseek.engine.encoders.base import Encoder, l2_normalize
from songseek.engine.errors import UsageError
from songseek.engine.query.kind import Kind, shared_kind, text_kind
from songseek.engine.query.longtext import embed_chunked


class Geometry(TypedDict, total=False):
    """make_planted keywords that set a planted geometry."""

    style_weight: float
    section_noise: float
    frame_noise: float
    query_noise: float


PLANTED_GEOMETRIES: dict[str, Geometry] = {
    "base": {},
    "aniso": {},  # base vectors, then the shared direction (``_anisotropic``)
    "sharp": {"style_weight": 0.3, "section_noise": 0.15},
    "blurry": {"frame_noise": 0.8, "query_noise": 2.6},
}
ANISO_SHIFT = 2.0


@dataclass(frozen=True)
class Case:
    """One query kind. ``sims[q]`` float32 (B, C, T) similarities of query q's C chunks (C = 1 unless the
    long-caption path) with the T windows of each of its B candidates; ``lengths[q]`` int64 (B,) valid
    windows; ``relevant[q]`` int64 candidate indices. ``spans`` float64 (Q, 2) true [start_s, end_s] in
    ``span_cand`` (Q,) (NaN: no span); ``bounds[q]`` float64 (T, 2) window seconds of that candidate."""

    dataset: str
    kind: str
    direction: str
    sims: list[np.ndarray]
    lengths: list[np.ndarray]
    relevant: list[np.ndarray]
    spans: np.ndarray
    span_cand: np.ndarray
    bounds: list[np.ndarray]
    forms: tuple[Kind, ...] = ()
    stated: bool = False
    # int64 (Q,) the track each query is about (its relevant track; the query track for audio→text):
    # intervals resample tracks, since the queries of one track are not independent. Empty: one each.
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def query_groups(self) -> np.ndarray:
        return self.groups if self.groups.size else np.arange(self.n_queries)

    def query_kind(self, q: int) -> Kind:
        """What query q describes as the engine learns it: read from its form (engine/query/kind.py: the
        text's for a text query, the kind its candidate captions share for audio→text), or stated by the
        caller (``stated``: a query file's ``kind`` column, ``--rerank part|whole``); None for bare vectors,
        audio excerpts and chunked captions (``forms`` empty: None for every query)."""
        return self.forms[q] if self.forms else None

    @property
    def kind_known(self) -> str:
        """How the engine knows the queries' kind: ``stated``, ``form`` (``form, partly`` when only some
        queries' forms say it), or ``—`` (not known: hedge)."""
        known = sum(f is not None for f in self.forms)
        if self.stated:
            return "stated"
        return "—" if known == 0 else "form" if known == len(self.forms) else "form, partly"

    @property
    def name(self) -> str:
        return f"{self.dataset} / {self.kind} / {self.direction}" + (" / kind stated" if self.stated else "")

    @property
    def n_queries(self) -> int:
        return len(self.sims)


def _t2a_case(dataset: str, kind: str, direction: str, q: np.ndarray, tracks: list[np.ndarray],
              bounds: list[np.ndarray], rel: np.ndarray, spans: np.ndarray | None = None,
              chunks: list[np.ndarray] | None = None) -> Case:
    """Queries (Q, dim) (or per query (C, dim) chunk vectors) against padded tracks; one relevant each."""
    lengths = np.array([len(t) for t in tracks], np.int64)
    tmax = int(lengths.max())
    padded = np.zeros((len(tracks), tmax, tracks[0].shape[1]), np.float32)
    for i, t in enumerate(tracks):
        padded[i, : len(t)] = t
    sims, lens = [], []
    for qi in range(len(rel)):
        qv = chunks[qi] if chunks is not None else q[qi : qi + 1]
        sims.append(np.einsum("ntd,cd->nct", padded, qv.astype(np.float32)))
        lens.append(lengths)
    sp = np.full((len(rel), 2), np.nan) if spans is None else np.asarray(spans, np.float64)
    return Case(dataset, kind, direction, sims, lens, [np.array([r]) for r in rel], sp,
                np.asarray(rel, np.int64), [bounds[r] for r in rel], groups=np.asarray(rel, np.int64))


def _a2t_case(dataset: str, kind: str, tracks: list[np.ndarray], caps: np.ndarray, owner: np.ndarray) -> Case:
    """Each track ranks every caption of a level by its windows (relevant: the track's own captions)."""
    sims, lens, rel = [], [], []
    for i, t in enumerate(tracks):
        sims.append(np.ascontiguousarray((t @ caps.T).T)[:, None, :].astype(np.float32))
        lens.append(np.full(len(caps), len(t), np.int64))
        rel.append(np.flatnonzero(owner == i))
    n = len(tracks)
    return Case(dataset, kind, "a2t", sims, lens, rel, np.full((n, 2), np.nan), np.zeros(n, np.int64),
                [np.zeros((0, 2))] * n, groups=np.arange(n))


def _anisotropic(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    return l2_normalize(v.astype(np.float64) + ANISO_SHIFT * u[None]).astype(np.float32)


def planted_cases(geometry: str, seed: int, n_tracks: int = 200, stated: bool = False) -> list[Case]:
    """``whole`` and ``section`` text→audio cases of one planted geometry (see the module docstring). The
    queries are bare vectors, so their kind is not known, unless ``stated``: then each query carries its
    kind as a caller states it (a query file's ``kind`` column: ``whole``, or ``part`` for a section)."""
    p = make_planted(n_tracks, seed=seed, **PLANTED_GEOMETRIES[geometry])
    frames, queries = p.frames, p.queries
    if geometry == "aniso":
        u = l2_normalize(np.random.default_rng(10_000 + seed).normal(size=(1, frames.shape[1])))[0]
        frames, queries = _anisotropic(frames, u), _anisotropic(queries, u)
    tracks = [frames[p.track_start[i] : p.track_start[i + 1]] for i in range(p.n_tracks)]
    bounds = [np.stack([np.arange(len(t)) * p.hop_s, (np.arange(len(t)) + 1) * p.hop_s], axis=1) for t in tracks]
    spans = np.stack([p.query_start_s, p.query_end_s], axis=1)
    out = []
    for kind, sel in (("whole", ~p.is_section), ("section", p.is_section)):
        case = _t2a_case(f"planted-{geometry}", kind, "t2a", queries[sel], tracks, bounds, p.query_track[sel],
                         spans[sel] if kind == "section" else None)
        if stated:
            form: Kind = "whole" if kind == "whole" else "part"
            case = replace(case, forms=(form,) * case.n_queries, stated=True)
        out.append(case)
    return out


def caption_cases(seed: int, n_tracks: int = 200) -> list[Case]:
    """Long bag-of-words captions through the chunk path (benchmarks/longtext_planted.py)."""
    p = make_planted_captions(n_tracks, seed=seed)
    enc = BagOfWordsEncoder(128, 77)
    chunked = embed_chunked(enc, list(p.captions))
    tracks = [p.frames[s : s + c] for s, c in zip(p.starts, p.counts)]
    bounds = [np.stack([np.arange(len(t)) * 10.0, (np.arange(len(t)) + 1) * 10.0], axis=1) for t in tracks]
    rel = np.arange(n_tracks)
    return [_t2a_case("captions", "long", "t2a", np.zeros((n_tracks, 1)), tracks, bounds, rel,
                      chunks=[c.vectors for c in chunked])]


@dataclass(frozen=True)
class DemoSet:
    """Embedded synthetic music (arrays only, cacheable with np.savez)."""

    frames: list[np.ndarray]
    bounds: list[np.ndarray]
    texts: dict[str, np.ndarray]
    owner: dict[str, np.ndarray]
    spans: np.ndarray
    long_chunks: list[np.ndarray]
    examples: np.ndarray
    example_spans: np.ndarray
    example_owner: np.ndarray


EXAMPLES_PER_TRACK = 4
CACHE_VERSION = 3  # bump when embed_demo_set's output changes (cache file names carry it); 3: no sub-tenth tails


def embed_demo_set(encoder: Encoder, seed: int, n_tracks: int) -> DemoSet:
    """Render and embed ``n_tracks`` tracks of generator ``seed`` (windows, captions, excerpts)."""
    sr = encoder.info.sample_rate
    frames, bounds, spans, examples, ex_spans, ex_owner = [], [], [], [], [], []
    caps: dict[str, list[str]] = {"whole": [], "tags": [], "section": []}
    owner: dict[str, list[int]] = {k: [] for k in caps}
    rng = np.random.default_rng(7919 + seed)
    for i, (track, audio) in enumerate(iter_tracks(seed, n_tracks)):
        windows, b = frame_windows(audio, sr, 10.0, 10.0)
        frames.append(encoder.embed_audio(windows))
        bounds.append(b)
        for level, level_caps in (("whole", [track.caption]), ("tags", [track.tags]),
                                  ("section", list(track.section_captions))):
            caps[level] += level_caps
            owner[level] += [i] * len(level_caps)
        spans += [(s.start_s, s.end_s) for s in track.score.sections]
        length = len(audio) / sr
        for _ in range(EXAMPLES_PER_TRACK):
            start = float(rng.uniform(0, max(0.0, length - 10.0)))
            start = start + 5.0 if start % 10.0 < 1.0 and start + 15.0 <= length else start  # off the grid
            clip = audio[int(start * sr) : int(start * sr) + 10 * sr].astype(np.float64)
            clip = clip + rng.normal(0, np.sqrt(np.mean(clip**2) / 10.0) + 1e-9, clip.shape)  # 10 dB SNR
            examples.append(encoder.embed_audio(clip[None].astype(np.float32))[0])
            ex_spans.append((start, start + len(clip) / sr))
            ex_owner.append(i)
    texts = {level: encoder.embed_text(c) for level, c in caps.items()}
    chunked = embed_chunked(encoder, caps["whole"])
    return DemoSet(frames, bounds, texts, {k: np.asarray(v, np.int64) for k, v in owner.items()},
                   np.asarray(spans, np.float64).reshape(-1, 2), [c.vectors for c in chunked],
                   l2_normalize(np.asarray(examples, np.float32)), np.asarray(ex_spans, np.float64),
                   np.asarray(ex_owner, np.int64))


def demo_texts(seed: int, n_tracks: int) -> dict[str, list[str]]:
    """The caption texts of ``embed_demo_set(encoder, seed, n_tracks)``, level by level, in its order."""
    texts: dict[str, list[str]] = {"whole": [], "tags": [], "section": []}
    for i in range(n_tracks):
        t = synth_track(seed, i)
        texts["whole"].append(t.caption)
        texts["tags"].append(t.tags)
        texts["section"] += list(t.section_captions)
    return texts


def demo_cases(d: DemoSet, dataset: str, texts: dict[str, list[str]] | None = None) -> list[Case]:
    """The demo model's query kinds (module docstring) on one embedded set. A whole-track description is a
    ``whole`` query when the text tower reads it in one piece and a ``long`` one (its sentence chunks) when
    it does not, as Library.search splits them. ``texts`` (``demo_texts``) gives each query its form
    (Case.forms) as Library.query_kind reads it; without them every form is None. A kind with no query
    on this set (no description fits, or none is long) has no case."""
    n = len(d.frames)
    own = d.owner
    n_chunks = np.array([len(c) for c in d.long_chunks])
    one, many = np.flatnonzero(n_chunks == 1), np.flatnonzero(n_chunks > 1)
    out = [
        _t2a_case(dataset, "whole", "t2a", d.texts["whole"][one], d.frames, d.bounds, own["whole"][one]),
        _t2a_case(dataset, "long", "t2a", d.texts["whole"][many], d.frames, d.bounds, own["whole"][many],
                  chunks=[d.long_chunks[i] for i in many]),
        _t2a_case(dataset, "section", "t2a", d.texts["section"], d.frames, d.bounds, own["section"], d.spans),
        _t2a_case(dataset, "tags", "t2a", d.texts["tags"], d.frames, d.bounds, own["tags"]),
        # no IoU for excerpts: a 10 s excerpt against 30 s segments cannot reach IoU 0.5
        _t2a_case(dataset, "example", "a2a", d.examples, d.frames, d.bounds, d.example_owner),
    ]
    out += [_a2t_case(dataset, level, d.frames, d.texts[level], own[level]) for level in ("whole", "section", "tags")]
    if texts is not None:
        forms: dict[str, tuple[Kind, ...]] = {level: tuple(text_kind(t) for t in texts[level]) for level in texts}
        forms["whole"] = tuple(text_kind(texts["whole"][i]) for i in one)
        forms["long"] = (None,) * len(many)  # past the token limit: scored chunk by chunk (text_kind(t, n > 1))
        forms["example"] = (None,) * len(d.example_owner)  # an audio query: not known (engine/query/kind.py)
        for level in ("whole", "section", "tags"):  # audio→text: the kind the level's captions share
            forms[f"a2t-{level}"] = (shared_kind([text_kind(t) for t in texts[level]]),) * n
        out = [replace(c, forms=forms[c.kind if c.direction != "a2t" else f"a2t-{c.kind}"]) for c in out]
    return [c for c in out if c.n_queries]


def save_demo_set(d: DemoSet, path: str) -> None:
    arrays: dict[str, np.ndarray] = {"spans": d.spans, "examples": d.examples, "example_spans": d.example_spans,
                                     "example_owner": d.example_owner, "n": np.array([len(d.frames)]),
                                     "version": np.array([CACHE_VERSION])}
    for i, (f, b, c) in enumerate(zip(d.frames, d.bounds, d.long_chunks)):
        arrays[f"frames_{i}"], arrays[f"bounds_{i}"], arrays[f"chunks_{i}"] = f, b, c
    for k in d.texts:
        arrays[f"texts_{k}"], arrays[f"owner_{k}"] = d.texts[k], d.owner[k]
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load_demo_set(path: str) -> DemoSet:
    """A set written by save_demo_set of this CACHE_VERSION; raises UsageError naming the file otherwise."""
    z = np.load(path)
    if "version" not in z or int(z["version"][0]) != CACHE_VERSION:
        raise UsageError(f"{path}: a demo set cache of another version (this code writes version "
                         f"{CACHE_VERSION}); delete it and run again to re-embed")
    n = int(z["n"][0])
    levels = ("whole", "tags", "section")
    return DemoSet([z[f"frames_{i}"] for i in range(n)], [z[f"bounds_{i}"] for i in range(n)],
                   {k: z[f"texts_{k}"] for k in levels}, {k: z[f"owner_{k}"] for k in levels}, z["spans"],
                   [z[f"chunks_{i}"] for i in range(n)], z["examples"], z["example_spans"], z["example_owner"])
