"""Bring your own vectors: Parquet or Arrow files of per-window vectors become a library.

Columns: ``track_id`` (string), ``start_s``, ``end_s`` (seconds), ``embedding`` (list of float, all the
same length); optional ``path`` and tag columns (title, artist, album, genre, year, duration_s).
Vectors are L2-normalised here. The manifest records encoder ``precomputed`` unless an encoder is named
(``songseek ingest --encoder NAME --checkpoint CKPT``; then text and audio queries are embedded with it,
and it must make vectors of the same dimension). A library keeps the encoder it was created with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from songseek.engine.encoders import EncoderInfo, l2_normalize
from songseek.engine.errors import UsageError
from songseek.engine.storage.manifest import Manifest, check_compatible, read_manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

REQUIRED = ("track_id", "start_s", "end_s", "embedding")
TAGS = ("title", "artist", "album", "genre")


def read_vectors_table(path: Path) -> pa.Table:
    """Read a Parquet / Arrow IPC / Feather file; one clear error naming the file otherwise."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist: give a Parquet or Arrow file of vectors")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.feather as feather

        return feather.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"{path}: not a readable Parquet/Arrow file ({exc})") from exc


def ingest_table(table: pa.Table, library: Path, source: str = "<table>", encoder: EncoderInfo | None = None,
                 window_s: float | None = None, hop_s: float | None = None, index_factory: str = "auto",
                 nprobe: int | None = None) -> int:
    """Add the table's tracks to ``library`` (created if absent); returns the number of tracks written.
    ``nprobe``: IVF lists a query probes by default, saved in the library (0: automatic; None: keep)."""
    if nprobe is not None and nprobe < 0:
        raise UsageError(f"--nprobe must be 0 (automatic) or more (got {nprobe})")
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise UsageError(f"{source}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
    if table.num_rows == 0:
        raise UsageError(f"{source}: no rows")
    emb = table.column("embedding").combine_chunks()
    if isinstance(emb.type, pa.FixedSizeListType):
        dim = emb.type.list_size
        flat = emb.values.to_numpy(zero_copy_only=False)
    else:
        lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
        if len(set(lengths.tolist())) != 1:
            raise UsageError(f"{source}: embeddings have different lengths ({sorted(set(lengths.tolist()))[:5]})")
        dim = int(lengths[0])
        flat = pc.list_flatten(emb).to_numpy(zero_copy_only=False)
    vectors = l2_normalize(np.asarray(flat, dtype=np.float32).reshape(-1, dim))
    if not np.isfinite(vectors).all():
        raise UsageError(f"{source}: embeddings contain NaN or inf")
    starts = table.column("start_s").to_numpy().astype(np.float64)
    ends = table.column("end_s").to_numpy().astype(np.float64)
    if (ends < starts).any():
        raise UsageError(f"{source}: some rows have end_s < start_s")
    ids = np.asarray(table.column("track_id").cast(pa.string()).to_pylist(), dtype=object)
    window = float(window_s or np.median(ends - starts))
    hop = float(hop_s or _median_hop(ids, starts) or window)
    info = encoder or EncoderInfo(name="precomputed", checkpoint="", dim=dim, sample_rate=0)
    _refuse_encoder_for_precomputed(library, info)
    if info.dim != dim:
        raise UsageError(f"{source}: vectors are {dim}-d but encoder {info.name} makes {info.dim}-d vectors")
    manifest = Manifest(encoder=info, window_s=window, hop_s=hop, index_factory=index_factory)
    cols = {c: table.column(c).to_pylist() for c in (*TAGS, "path", "year", "duration_s") if c in table.column_names}
    order = np.lexsort((starts, ids))
    bounds = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1], True])
    with LibraryWriter(library, manifest) as writer:
        check_compatible(writer.manifest, info, library)
        for a, b in zip(bounds[:-1], bounds[1:]):
            rows = order[a:b]
            first = int(rows[0])
            tid = str(ids[first])
            rec = TrackRecord(
                track_id=tid, path=str(cols["path"][first]) if "path" in cols else tid,
                duration_s=float(cols["duration_s"][first]) if "duration_s" in cols else float(ends[rows].max()),
                year=int(cols["year"][first]) if cols.get("year") and cols["year"][first] is not None else None,
                **{t: cols[t][first] for t in TAGS if t in cols},
            )
            writer.add_track(rec, vectors[rows], starts[rows], ends[rows])
        if nprobe is not None:
            writer.set_nprobe(nprobe)
        writer.commit()
        writer.update_index(index_factory)
    return len(bounds) - 1


def _refuse_encoder_for_precomputed(library: Path, info: EncoderInfo) -> None:
    """A library's manifest keeps its first encoder, so naming one for an existing precomputed library
    would be silently dropped; say so instead."""
    if info.name == "precomputed" or not (library / "manifest.json").exists():
        return
    if read_manifest(library).encoder.name == "precomputed":
        raise UsageError(f"{library} already holds precomputed vectors without an encoder: ingest with "
                         f"--encoder {info.name} into a new --library")


def _median_hop(ids: np.ndarray, starts: np.ndarray) -> float:
    order = np.lexsort((starts, ids))
    same = ids[order][1:] == ids[order][:-1]
    steps = np.diff(starts[order])[same]
    return float(np.median(steps)) if len(steps) else 0.0


def ingest_file(path: Path, library: Path, index_factory: str = "auto", nprobe: int | None = None,
                encoder: EncoderInfo | None = None) -> int:
    return ingest_table(read_vectors_table(path), library, source=str(path), encoder=encoder,
                        index_factory=index_factory, nprobe=nprobe)
