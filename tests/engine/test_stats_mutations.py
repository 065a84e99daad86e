"""engine/query/stats.py (what `songseek info` shows): every number and status against a direct computation
from the library's own rows and files (found by a mutation sweep: most of these were pinned nowhere)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.errors import LibraryError
from songseek.engine.query.fusion import RerankSettings
from songseek.engine.query.search import Library
from songseek.engine.query.stats import library_stats
from songseek.engine.storage import index as faiss_index
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


def _stats_of(lib: Library, **manifest: object) -> dict:
    """library_stats as JSON, after replacing manifest fields of the open library (states hard to build)."""
    lib.manifest = dataclasses.replace(lib.manifest, **manifest)  # type: ignore[arg-type]
    return library_stats(lib).to_json()


@pytest.fixture
def lib(tmp_path: Path) -> Library:
    table = vector_table(30, 8, seed=2, max_frames=12)
    ingest_table(table, tmp_path / "lib")
    # re-ingest three tracks with other frames: their old frames stay in the shards, dead
    changed = [r for r in table.to_pylist() if r["track_id"] in ("t0001", "t0004", "t0007")]
    rng = np.random.default_rng(9)
    for r in changed:
        r["embedding"] = rng.standard_normal(8).astype(np.float32).tolist()
    ingest_table(pa.Table.from_pylist(changed[:-1]), tmp_path / "lib")
    return Library.open(tmp_path / "lib")


def test_counts_hours_and_size_equal_a_direct_count(lib: Library) -> None:
    rows = lib.tracks.to_pylist()
    live = sum(r["frame_count"] for r in rows)
    (lib.root / "stray-folder").mkdir()  # a folder (e.g. text-cache/) is not counted as bytes of the library
    (lib.root / "stray-folder" / "big.bin").write_bytes(b"x" * 100_000)
    s = library_stats(lib).to_json()
    assert s["tracks"] == len(rows) == 30
    assert s["frames"] == live
    assert s["dead_frames"] == lib.store.n_rows - live > 0
    assert s["audio_hours"] == pytest.approx(sum(r["duration_s"] for r in rows) / 3600)
    assert s["size_bytes"] == sum(p.stat().st_size for p in lib.root.iterdir() if p.is_file())
    assert s["failures"] == 0 and s["generation"] == lib.manifest.generation > 0
    assert s["index_frames"] == lib.store.n_rows and s["index"] == "Flat"


def test_flat_index_status_nprobe_and_rerank(lib: Library) -> None:
    s = library_stats(lib).to_json()
    assert s["index_status"] == ("up to date (exact Flat index: every search scans every frame, nprobe does not "
                                 f"apply; auto moves to IVF at {faiss_index.IVF_THRESHOLD:,} frames)")
    assert s["index_nprobe"] == 0  # not IVF: nothing to probe
    assert s["rerank"]["saved"] is False
    s = _stats_of(lib, index_factory="Flat")  # asked for Flat by name: it never moves to IVF
    assert s["index_status"] == ("up to date (exact Flat index: every search scans every frame, nprobe does not "
                                 "apply)")
    s = _stats_of(lib, rerank=RerankSettings(mode="fusion").to_json())
    assert s["rerank"]["saved"] is True and s["rerank"]["rerank"] == "fusion"


def test_index_behind_by_exactly_the_frames_it_lacks(lib: Library) -> None:
    n = lib.store.n_rows
    for behind in (1, 5):
        s = _stats_of(lib, index_frames=n - behind)
        assert s["index_status"] == (f"behind by {behind} frames (searched exactly); the next ingest or "
                                     f"`songseek repair --library {lib.root}` adds them")
    encoder = dataclasses.replace(lib.manifest.encoder, name="fake")  # an audio library: `index` catches it up
    s = _stats_of(lib, index_frames=n - 2, encoder=encoder)
    assert s["index_status"] == "behind by 2 frames (searched exactly); next index run adds them"
    assert _stats_of(lib, index_file="", index_frames=0)["index_status"] == "none yet (searches are exact)"


def test_ivf_status_retrains_past_four_times_its_training_frames(tmp_path: Path) -> None:
    ingest_table(vector_table(40, 8, seed=10), tmp_path / "lib", index_factory="IVF8,Flat")  # 596 frames
    lib = Library.open(tmp_path / "lib")
    n, trained = lib.store.n_rows, lib.manifest.index_trained_on
    assert trained == n and "IVF8" in lib.manifest.index_description
    s = library_stats(lib).to_json()
    assert s["index_status"] == f"up to date (IVF; retrained past {4 * trained:,} frames)"
    assert s["index_nprobe"] == lib.default_nprobe() > 0
    # n == 4 x trained is still up to date; one training frame fewer and a rebuild is due
    assert n == 596
    assert _stats_of(lib, index_trained_on=n // 4)["index_status"].startswith("up to date")
    assert _stats_of(lib, index_trained_on=(n - 1) // 4)["index_status"] == \
        f"rebuild due ({lib.manifest.index_description} at this size)"
    assert _stats_of(lib, index_trained_on=n // 5)["index_status"].startswith("rebuild due")
    # the factory asked for is not the one built: a rebuild is due whatever the size
    s = _stats_of(lib, index_trained_on=trained, index_factory="IVF16,Flat")
    assert s["index_status"] == "rebuild due (IVF16,Flat at this size)"


def test_a_swapped_index_file_is_reported_not_described(lib: Library) -> None:
    index = lib.root / lib.manifest.index_file
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(LibraryError, match="not the file this library committed"):
        library_stats(lib)


def test_info_json_keeps_every_field(lib: Library) -> None:
    s = library_stats(lib).to_json()
    assert set(s) == {f.name for f in dataclasses.fields(type(library_stats(lib)))}
    assert "generation" in s and "index_nprobe" in s and "rerank" in s
