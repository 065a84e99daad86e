"""Fixtures shared by the benchmark tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from songseek.indexers.ingest import ingest_table
from tests.benchmarks.test_datasets import write_wav
from tests.library_helpers import vector_table


@pytest.fixture(scope="module")
def vec_lib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    table = vector_table(40, 16, seed=3, min_frames=1, max_frames=12)
    root = tmp_path_factory.mktemp("vec") / "lib"
    ingest_table(table, root)
    return root, table


@pytest.fixture()
def audio_root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    write_wav(root / "a.wav")
    write_wav(root / "sub" / "b.wav", freq=330.0)
    write_wav(root / "c.wav", freq=550.0)
    return root
