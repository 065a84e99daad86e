"""engine/query/search.py: an index file damaged between the bytes its identity hash covers (the first and
last 64 KiB; readers do not hash the whole file on open). A damaged id in an IVF list sent a frame row past the
library's frames back from FAISS, and the search died in a numpy IndexError traceback. It is one line naming
the index and `songseek repair`, which rebuilds it."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from songseek.engine.errors import LibraryError
from songseek.engine.query.search import Library
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.repair import repair_library
from songseek.indexers.ingest import ingest_table
from tests.library_helpers import vector_table


def _damage_one_id(path: Path) -> None:
    """Overwrite the first stored id of the fullest IVF list with a row far past the index's frames."""
    index = faiss.read_index(str(path))
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    assert lists is not None
    fullest = max(range(ivf.nlist), key=lists.list_size)
    n = lists.list_size(fullest)
    ids = faiss.rev_swig_ptr(lists.get_ids(fullest), n).copy()
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(ids.astype("<i8").tobytes())
    assert at > 1 << 16 and at + 8 < len(raw) - (1 << 16), "the ids must lie outside the identity hash"
    raw[at:at + 8] = np.int64(4_000_000_000).astype("<i8").tobytes()
    path.write_bytes(bytes(raw))


def test_a_damaged_id_in_the_index_is_one_line_and_repair_fixes_it(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    ingest_table(vector_table(400, 64, seed=9, min_frames=20, max_frames=40), root, index_factory="IVF4,Flat")
    _damage_one_id(root / read_manifest(root).index_file)
    lib = Library.open(root)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((8, 64)).astype(np.float32)
    with pytest.raises(LibraryError, match=r"damaged index .*songseek repair"):
        for q in queries:  # nprobe = every list: the damaged id is returned whatever the query
            lib.search(vector=q, k=5, nprobe=4, candidates=400, rerank="max")
    repair_library(root)
    lib = Library.open(root)
    for q in queries:
        hits = lib.search(vector=q, k=5, nprobe=4, rerank="max")
        exact = lib.search(vector=q, k=5, exact=True, rerank="max")
        assert [h.track_id for h in hits] == [h.track_id for h in exact]
