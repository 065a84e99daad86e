"""`songseek bench rerank --save` on a library another process is writing: it fails at once with one line
(before the measurement, not after it), and `--wait` (which that line names) waits for the writer and
saves."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.query.search import Library
from songseek.engine.storage.writer import acquire_lock
from tests.library_helpers import vector_table

runner = CliRunner()


@pytest.fixture
def library_and_queries(tmp_path: Path) -> tuple[Path, Path]:
    table = vector_table(12, 16, seed=4, min_frames=3, max_frames=8)
    pq.write_table(table, tmp_path / "v.parquet")
    lib = tmp_path / "lib"
    res = runner.invoke(app, ["ingest", str(tmp_path / "v.parquet"), "--library", str(lib)])
    assert res.exit_code == 0, res.output
    ids = np.asarray(table.column("track_id").to_pylist())
    emb = np.asarray(table.column("embedding").to_pylist())
    rng = np.random.default_rng(1)
    lines = [json.dumps({"vector": (emb[np.flatnonzero(ids == t)[0]] + rng.normal(0, 0.5, 16)).tolist(),
                         "relevant": t}) for t in sorted(set(ids.tolist()))]
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    return lib, tmp_path / "q.jsonl"


def test_save_on_a_library_being_written_fails_before_measuring(library_and_queries: tuple[Path, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    lib, queries = library_and_queries
    measured: list[str] = []

    def counting(*args: object, **kwargs: object) -> object:
        measured.append("run")
        raise AssertionError("measured a library it cannot save to")

    monkeypatch.setattr("songseek.benchmarks.rerank_tune.tune_rerank", counting)
    fd = acquire_lock(lib)  # another writer (an indexer) holds the library
    try:
        res = runner.invoke(app, ["bench", "rerank", "--library", str(lib), "--queries", str(queries), "--save"])
    finally:
        os.close(fd)
    assert res.exit_code == 2, res.output
    assert measured == []
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "is being written by" in lines[0] and "--wait" in lines[0]


def test_wait_named_by_the_error_exists_and_saves_once_the_writer_is_done(
        library_and_queries: tuple[Path, Path]) -> None:
    lib, queries = library_and_queries
    fd = acquire_lock(lib)
    release = threading.Timer(1.0, os.close, args=(fd,))
    release.start()
    try:
        res = runner.invoke(app, ["bench", "rerank", "--library", str(lib), "--queries", str(queries), "--save",
                                  "--wait", "--json"])
    finally:
        release.join()
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    best = report["settings"][report["best"]]
    assert report["saved"] is True
    assert Library.open(lib).rerank_settings().to_json() == {"rerank": best["rerank"], "params": best["params"]}
