"""Seeded synthetic libraries of clustered vectors, for speed benchmarks (no audio, no model).

The geometry imitates a CLAP library: every vector shares a common direction (CLAP spaces are
anisotropic), tracks belong to one of ``n_clusters`` "genres", each track has a few sections, and its
frames are noisy copies of the section they lie in. Queries are noisy copies of a random frame (cosine
about 0.5 with it, like a text query and a matching window). Same spec, same seed → same vectors, bit
for bit, so a library built once can be cached under a work folder and reused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.errors import SongseekError, UsageError
from songseek.engine.storage.index import auto_factory
from songseek.engine.storage.manifest import Manifest, read_manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

SPEC_FILE = "synthetic-spec.json"
_CHUNK = 4096  # tracks generated per step


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Cosines are targets in expectation (unit vectors, ``dim`` large).

    ``n_frames`` frames in tracks of ``min_frames``..``max_frames`` frames (uniform), ``hop_s`` seconds
    apart; ``shard_frames`` frames per committed shard (a real indexer commits in batches too).
    """

    n_frames: int
    dim: int = 512
    n_clusters: int = 256
    min_frames: int = 6
    max_frames: int = 42
    sections: int = 3
    common: float = 0.3          # cosine of every vector with the shared direction
    cluster: float = 0.55        # weight of the genre direction in a track
    section: float = 0.6         # weight of the section direction in a frame
    frame_noise: float = 0.5     # weight of per-frame noise
    query_cosine: float = 0.5    # cosine of a query with the frame it was made from
    hop_s: float = 10.0
    shard_frames: int = 131_072
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_frames <= 0 or self.dim <= 1:
            raise UsageError(f"synthetic library needs n_frames >= 1 and dim >= 2 (got {self.n_frames}, {self.dim})")
        if not 1 <= self.min_frames <= self.max_frames:
            raise UsageError(f"need 1 <= min_frames <= max_frames (got {self.min_frames}, {self.max_frames})")
        if not 0.0 < self.query_cosine <= 1.0:
            raise UsageError(f"query_cosine must be in (0, 1], got {self.query_cosine}")

    def key(self) -> str:
        """A folder name that changes whenever anything that shapes the vectors changes."""
        return (f"synth-n{self.n_frames}-d{self.dim}-c{self.n_clusters}-f{self.min_frames}_{self.max_frames}"
                f"-s{self.sections}-{self.common:g}_{self.cluster:g}_{self.section:g}_{self.frame_noise:g}"
                f"-h{self.hop_s:g}-sh{self.shard_frames}-seed{self.seed}")


# Named geometries for `bench query-speed --preset`: "clustered" (the default: tracks of similar frames in
# 256 genres, queries at cosine 0.5 with a frame) and "hard" (weaker clusters, looser tracks, queries at
# cosine 0.35, so the top ten beyond the source track sit at noise level and IVF recall drops).
PRESETS: dict[str, dict[str, float | int]] = {
    "clustered": {},
    "hard": {"n_clusters": 1024, "cluster": 0.35, "section": 0.8, "frame_noise": 0.9, "query_cosine": 0.35},
}


def preset_spec(name: str, n_frames: int, dim: int = 512, seed: int = 0) -> SyntheticSpec:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}: use {', '.join(PRESETS)}")
    return SyntheticSpec(n_frames=n_frames, dim=dim, seed=seed, **PRESETS[name])  # type: ignore[arg-type]


def track_lengths(spec: SyntheticSpec) -> np.ndarray:
    """int64 (n_tracks,) frames per track, summing to exactly ``spec.n_frames``."""
    rng = np.random.default_rng([spec.seed, 1])
    draw = rng.integers(spec.min_frames, spec.max_frames + 1, size=spec.n_frames // spec.min_frames + 1)
    ends = np.cumsum(draw)
    n = int(np.searchsorted(ends, spec.n_frames)) + 1
    lengths = draw[:n].astype(np.int64)
    lengths[-1] -= int(ends[n - 1]) - spec.n_frames
    if lengths[-1] <= 0:  # pragma: no cover - searchsorted guarantees a positive remainder
        raise AssertionError("track_lengths: bad remainder")
    return lengths


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return l2_normalize(rng.standard_normal((n, dim), dtype=np.float32))


def _centres(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([spec.seed, 2])
    common = _unit(rng, 1, spec.dim)[0]
    return common, _unit(rng, spec.n_clusters, spec.dim)


def iter_tracks(spec: SyntheticSpec, chunk_tracks: int = _CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """(first track number, float32 (frames, dim) unit vectors of ``chunk_tracks`` tracks, concatenated)."""
    lengths = track_lengths(spec)
    common, centres = _centres(spec)
    c = spec.common
    for first in range(0, len(lengths), chunk_tracks):
        rng = np.random.default_rng([spec.seed, 3, first])
        lens = lengths[first:first + chunk_tracks]
        nt, nf = len(lens), int(lens.sum())
        genre = rng.integers(0, spec.n_clusters, size=nt)
        track = l2_normalize(spec.cluster * centres[genre] + (1 - spec.cluster) * _unit(rng, nt, spec.dim))
        sec_dirs = _unit(rng, nt * spec.sections, spec.dim).reshape(nt, spec.sections, spec.dim)
        owner = np.repeat(np.arange(nt), lens)
        pos = np.arange(nf) - np.repeat(np.cumsum(lens) - lens, lens)
        sec = np.minimum(pos * spec.sections // np.repeat(lens, lens), spec.sections - 1)
        frames = (track[owner] + spec.section * sec_dirs[owner, sec]
                  + spec.frame_noise * _unit(rng, nf, spec.dim))
        frames = l2_normalize(frames)
        # Mix in the shared direction so that every frame has cosine ``common`` with it.
        frames = l2_normalize(c * common + np.sqrt(1 - c * c) * l2_normalize(frames - np.outer(frames @ common,
                                                                                                  common)))
        yield first, frames


def make_queries(spec: SyntheticSpec, n: int, seed: int = 7) -> np.ndarray:
    """float32 (n, dim) unit queries, each at cosine ``query_cosine`` with one random frame."""
    rng = np.random.default_rng([spec.seed, 4, seed])
    lengths = track_lengths(spec)
    want = np.sort(rng.choice(spec.n_frames, size=n, replace=n > spec.n_frames))
    chunk = _CHUNK
    chunk_start = np.cumsum(lengths)[chunk - 1::chunk] if len(lengths) > chunk else np.zeros(0, np.int64)
    picked = np.empty((n, spec.dim), np.float32)
    bounds = np.r_[0, chunk_start, spec.n_frames]
    for ci, (_first, frames) in enumerate(iter_tracks(spec, chunk)):
        lo, hi = int(bounds[ci]), int(bounds[ci + 1])
        sel = (want >= lo) & (want < hi)
        picked[sel] = frames[want[sel] - lo]
    noise = _unit(rng, n, spec.dim)
    noise = l2_normalize(noise - (noise * picked).sum(1, keepdims=True) * picked)
    a = spec.query_cosine
    queries = l2_normalize(a * picked + np.sqrt(1 - a * a) * noise)
    return queries[rng.permutation(n)]


def track_id(i: int) -> str:
    return f"t{i:08d}"


def build_library(spec: SyntheticSpec, root: Path, index_factory: str | None = "auto") -> None:
    """Write ``spec``'s frames as a library at ``root`` (must not exist); build its FAISS index unless
    ``index_factory`` is None (then searches are exact until an index is built)."""
    info = EncoderInfo(name="precomputed", checkpoint="", dim=spec.dim, sample_rate=0)
    manifest = Manifest(encoder=info, window_s=spec.hop_s, hop_s=spec.hop_s, index_factory=index_factory or "auto")
    lengths = track_lengths(spec)
    rng = np.random.default_rng([spec.seed, 5])
    genres = [f"g{g:03d}" for g in rng.integers(0, 16, size=len(lengths))]
    with LibraryWriter(root, manifest) as writer:
        pending = 0
        for first, frames in iter_tracks(spec, _CHUNK):
            offset = 0
            for i in range(first, min(first + _CHUNK, len(lengths))):
                n = int(lengths[i])
                starts = np.arange(n, dtype=np.float64) * spec.hop_s
                rec = TrackRecord(track_id=track_id(i), path=f"synthetic/{track_id(i)}.wav",
                                  duration_s=n * spec.hop_s, title=f"track {i}", artist=f"artist {i % 997}",
                                  genre=genres[i], added_at=1.0)
                writer.add_track(rec, frames[offset:offset + n], starts, starts + spec.hop_s)
                offset += n
                pending += n
                if pending >= spec.shard_frames:
                    writer.commit()
                    pending = 0
        writer.commit()
        if index_factory is not None:
            writer.update_index(index_factory)


def cached_library(spec: SyntheticSpec, work: Path, index_factory: str = "auto", rebuild: bool = False) -> Path:
    """The library for ``spec`` with a ``index_factory`` index, under ``work``; built once, then reused.

    The frames are written once per spec (``work/<key>/base``, no index); each index factory gets its own
    library folder whose immutable shard files are hard links to the base's, so a second factory costs
    only its index.
    """
    base = cached_frames(spec, work, rebuild)
    if index_factory == "auto":  # what auto means at this size: shares the folder with that factory
        index_factory = auto_factory(spec.n_frames, spec.dim)
    root = base.parent / _safe(index_factory)
    if _matches(root, spec, need_index=True):
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    for path in base.iterdir():
        if path.is_file() and not path.name.startswith("."):
            (root / path.name).hardlink_to(path) if path.suffix == ".arrow" else shutil.copy2(path, root / path.name)
    with LibraryWriter(root) as writer:
        writer.update_index(index_factory, force_rebuild=True)
    return root


def cached_frames(spec: SyntheticSpec, work: Path, rebuild: bool = False) -> Path:
    """The library of ``spec``'s frames with no index (``work/<key>/base``); built once, then reused."""
    base = Path(work).expanduser() / spec.key() / "base"
    if rebuild or not _matches(base, spec, need_index=False):
        if base.parent.exists():
            shutil.rmtree(base.parent)
        base.mkdir(parents=True)
        build_library(spec, base, None)
        (base / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=1))
    return base


def _matches(root: Path, spec: SyntheticSpec, need_index: bool) -> bool:
    try:
        same = json.loads((root / SPEC_FILE).read_text()) == asdict(spec)
        return same and (not need_index or bool(read_manifest(root).index_file))
    except (OSError, ValueError, SongseekError):
        return False


def _safe(factory: str) -> str:
    return "index-" + "".join(ch if ch.isalnum() else "_" for ch in factory)
