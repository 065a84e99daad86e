"""Shared fixtures: seeded vector libraries and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-data tests skipped")
    return SHARED_DATA


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
    from songseek.engine.query.search import Library

    library = Library.open(lib)
    out = {}
    for row in library.tracks.to_pylist():
        row["vectors"] = np.array(library.store.vectors(row["frame_start"], row["frame_count"]))
        out[row["path"]] = row
    return out


@pytest.fixture(autouse=True, scope="session")
def _onnx_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Exported ONNX text towers go to a temporary folder, never the user's ~/.cache."""
    import os

    old = os.environ.get("SONGSEEK_CACHE_DIR")
    os.environ["SONGSEEK_CACHE_DIR"] = str(tmp_path_factory.mktemp("songseek-cache"))
    yield
    if old is None:
        os.environ.pop("SONGSEEK_CACHE_DIR", None)
    else:
        os.environ["SONGSEEK_CACHE_DIR"] = old
