"""`find_outliers` with a --where that keeps no track says so, rather than blame -k for an empty reference set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.analysis.outliers import find_outliers
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library


def test_a_where_that_keeps_nothing_is_named_in_the_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    tracks = [rng.standard_normal((3, 32)).astype(np.float32) for _ in range(8)]
    lib = Library.open(build_library(tmp_path / "lib", tracks))
    with pytest.raises(UsageError, match=r"no track matches --where") as info:
        find_outliers(lib, k=4, top=3, where="track_id = 'nope'")
    assert "-k" not in str(info.value)
    # a filter that keeps tracks still scores them against one another (naive reference: brute-force kNN)
    found = find_outliers(lib, k=2, top=5, where="track_id < 't005'")
    windows = [t / np.linalg.norm(t, axis=1, keepdims=True) for t in tracks[:5]]  # ingest stores unit windows
    vecs = np.stack([w.mean(axis=0) / np.linalg.norm(w.mean(axis=0)) for w in windows])
    dist = np.linalg.norm(vecs[:, None] - vecs[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    want = {f"t{i:03d}": np.sort(dist[i])[:2].mean() for i in range(5)}
    assert {o.track_id: o.score for o in found} == pytest.approx(want, abs=1e-5)
