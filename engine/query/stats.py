"""What `songseek info` shows about an open library: sizes, encoder, index state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from songseek.engine.query.search import Library
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import verify_quick_hash
from songseek.engine.storage.store import read_failures


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
    live = int(lib.track_column("frame_count").sum()) if lib.n_tracks else 0
    n = lib.store.n_rows
    failures = read_failures(lib.root, m).num_rows
    if m.index_file:  # the index loads lazily; info still says when it is not the committed one
        verify_quick_hash(lib.root, m.index_file, m)
    want = faiss_index.auto_factory(n, m.dim) if m.index_factory == "auto" else m.index_factory
    if not m.index_file:
        status = "none yet (searches are exact)"
    elif m.index_frames < n:
        # `index` refuses a library of precomputed vectors: name what catches its index up instead
        catch_up = (f"the next ingest or `songseek repair --library {lib.root}`" if m.encoder.name == "precomputed"
                    else "next index run")
        status = f"behind by {n - m.index_frames} frames (searched exactly); {catch_up} adds them"
    elif want != m.index_description or (faiss_index.ivf_nlist(want) > 0 and n > 4 * max(m.index_trained_on, 1)):
        status = f"rebuild due ({want} at this size)"
    else:
        status = f"up to date ({_index_kind(m.index_description, m.index_factory, m.index_trained_on)})"
    size = sum(p.stat().st_size for p in lib.root.iterdir() if p.is_file())
    return LibraryStats(
        path=str(lib.root), tracks=lib.n_tracks, frames=live, dead_frames=n - live, encoder=m.encoder.name,
        checkpoint=m.encoder.checkpoint, checkpoint_sha256=m.encoder.checkpoint_sha256, dim=m.dim,
        sample_rate=m.encoder.sample_rate, window_s=m.window_s, hop_s=m.hop_s,
        index=m.index_description or "none", index_factory=m.index_factory, index_frames=m.index_frames,
        index_status=status, index_nprobe=lib.default_nprobe() if faiss_index.ivf_nlist(m.index_description) else 0,
        rerank={**lib.rerank_settings().to_json(), "saved": bool(m.rerank)},
        random_weights=m.encoder.random_weights, failures=failures,
        audio_hours=float(lib.track_column("duration_s").sum()) / 3600 if lib.n_tracks else 0.0, size_bytes=size,
        schema_version=m.schema_version, songseek_version=m.songseek_version, generation=m.generation,
    )


def _index_kind(description: str, factory: str, trained_on: int) -> str:
    """How the committed index answers and grows, for its kind only: a Flat index is exact and has no lists
    to probe or retrain, so IVF advice (nprobe, retraining) would mislead there. Said as the rule it follows
    (a library built in one run has never been updated)."""
    if description == "Flat":
        grows = (f"; auto moves to IVF at {faiss_index.IVF_THRESHOLD:,} frames" if factory == "auto" else "")
        return f"exact Flat index: every search scans every frame, nprobe does not apply{grows}"
    if faiss_index.ivf_nlist(description) > 0:
        return f"IVF; retrained past {4 * trained_on:,} frames"  # 4x what it was trained on: update_index
    return "updated incrementally"
