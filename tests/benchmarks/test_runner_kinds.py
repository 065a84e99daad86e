"""benchmarks/runner.py passes each text query's kind (engine/query/kind.py) as Library.search does."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from songseek.benchmarks.datasets import load_queries
from songseek.benchmarks.runner import evaluate_queries
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, text_tracks


def test_bench_retrieval_ranks_text_queries_as_search_does(tmp_path: Path) -> None:
    """`songseek bench retrieval` passes each text's kind, so ``auto`` there is what search runs."""
    lib = Library.open(build_library(tmp_path / "lib", text_tracks()))
    texts = ["soft piano and a flute", "Soft piano first. Then loud drums.", "piano, drums, flute, strings",
             "a choir over a bass line", "Strings alone. A choir joins them later."]
    ids = [h.track_id for h in lib.search(texts[0], k=12, candidates=12)]
    relevant = [[ids[(3 * i + 2) % 12]] for i in range(len(texts))]
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"query": texts, "relevant": relevant}), path)
    run = evaluate_queries(lib, load_queries(path), ["auto", "hedge"])
    for mode in ("auto", "hedge"):
        want = [1 + [h.track_id for h in lib.search(t, k=12, candidates=12, rerank=mode)].index(r[0])
                for t, r in zip(texts, relevant, strict=True)]
        ranks = run.results["text_to_audio"][mode].ranks
        assert ranks is not None and list(ranks) == want, mode
