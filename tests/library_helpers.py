"""Seeded vector libraries in the ingest format, and a reader of a library's rows (shared by several tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from songseek.engine.query.search import Library


def vector_table(n_tracks: int, dim: int, seed: int, min_frames: int = 1, max_frames: int = 30,
                 hop: float = 10.0) -> pa.Table:
    """A seeded table in the ingest format: tracks of random unit frame vectors."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tracks):
        for f in range(int(rng.integers(min_frames, max_frames + 1))):
            rows.append({"track_id": f"t{t:04d}", "start_s": f * hop, "end_s": f * hop + hop,
                         "embedding": rng.standard_normal(dim).astype(np.float32).tolist(),
                         "path": f"/music/t{t:04d}.flac", "artist": f"artist{t % 3}", "year": 1950 + t % 40})
    return pa.Table.from_pylist(rows)


def library_rows(lib: Path) -> dict[str, dict]:
    """path → tracks-table row of a library, with its frame vectors copied in under "vectors"."""
    library = Library.open(lib)
    out = {}
    for row in library.tracks.to_pylist():
        row["vectors"] = np.array(library.store.vectors(row["frame_start"], row["frame_count"]))
        out[row["path"]] = row
    return out
