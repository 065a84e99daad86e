"""benchmarks/runner.py passes each text query's kind (engine/query/kind.py) as Library.search does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from songseek.benchmarks.datasets import load_queries
from songseek.benchmarks.runner import audio_to_text, evaluate_queries
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.kind import Kind
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


def test_a_query_files_kind_column_states_the_kind(tmp_path: Path) -> None:
    """Vector queries have no form; a ``kind`` column says what each describes, and ``auto`` follows it."""
    lib = Library.open(build_library(tmp_path / "lib", text_tracks()))
    vecs = lib.embed_text(["soft piano and a flute", "loud drums", "a choir", "strings and bass", "a flute"])
    kinds = ["part", "whole", None, "whole", "part"]
    ids = [h.track_id for h in lib.search(vector=vecs[0], k=12, candidates=12)]
    relevant = [[ids[(5 * i + 1) % 12]] for i in range(len(vecs))]
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"vector": vecs.tolist(), "relevant": relevant, "kind": kinds}), path)
    qs = load_queries(path)
    assert [q.kind for q in qs.queries] == kinds
    ranks = evaluate_queries(lib, qs, ["auto"]).results["text_to_audio"]["auto"].ranks
    want = [1 + [h.track_id for h in lib.search(vector=v, k=12, candidates=12, rerank=k or "hedge")].index(r[0])
            for v, k, r in zip(vecs, kinds, relevant, strict=True)]
    assert ranks is not None and list(ranks) == want


def test_a_bad_kind_is_refused_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("query,relevant,kind\nsoft piano,t001,part\nloud drums,t002,chorus\n")
    with pytest.raises(UsageError, match=r"line 3: column 'kind' must be part or whole"):
        load_queries(path)


def test_audio_to_text_auto_runs_the_kind_its_captions_share(tmp_path: Path) -> None:
    lib = Library.open(build_library(tmp_path / "lib", text_tracks()))
    caps = lib.embed_text(["soft piano", "loud drums", "a flute", "strings", "bass line", "a choir"])
    ids = lib.tracks.column("track_id").to_pylist()
    queries = [(t, None) for t in ids]
    relevant = [[i % len(caps)] for i in range(len(ids))]
    cases: list[tuple[Kind, str]] = [("part", "part"), ("whole", "whole"), (None, "hedge")]
    for kind, same in cases:
        res = audio_to_text(lib, caps, queries, relevant, ["auto", same], FusionParams(), caption_kind=kind)
        auto_ranks, same_ranks = res["auto"].ranks, res[same].ranks
        assert auto_ranks is not None and same_ranks is not None
        assert list(auto_ranks) == list(same_ranks), kind
        assert res["auto"].metrics == res[same].metrics


class ShortTextFake(FakeEncoder):
    """The fake encoder with a text tower that reads 8 tokens: longer texts are scored by their chunks."""

    @property
    def info(self) -> EncoderInfo:
        return replace(super().info, text_max_tokens=8)


def test_a_stated_kind_reaches_texts_past_the_token_limit(tmp_path: Path) -> None:
    lib = Library.open(build_library(tmp_path / "lib", text_tracks()), encoder=ShortTextFake())
    texts = ["Soft piano and a flute open it. Loud drums come in. A choir ends it over strings.",
             "A choir over a bass line. Then strings alone. A flute at the very end of it all.",
             "Loud drums first. Then a quiet piano. The strings and the bass line close it out."]
    assert all(len(lib.search_texts([t], k=1)[0]) == 1 and lib.query_kind(t) is None for t in texts)  # chunked
    kinds = ["part", "whole", "part"]
    ids = [h.track_id for h in lib.search(texts[0], k=12, candidates=12)]
    relevant = [[ids[(4 * i + 5) % 12]] for i in range(len(texts))]
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"query": texts, "relevant": relevant, "kind": kinds}), path)
    ranks = evaluate_queries(lib, load_queries(path), ["auto"]).results["text_to_audio"]["auto"].ranks

    def rank(text: str, mode: str, rel: str) -> int:
        return 1 + [h.track_id for h in lib.search(text, k=12, candidates=12, rerank=mode)].index(rel)

    want = [rank(t, k, r[0]) for t, k, r in zip(texts, kinds, relevant, strict=True)]
    assert ranks is not None and list(ranks) == want
    assert want != [rank(t, "hedge", r[0]) for t, r in zip(texts, relevant, strict=True)]  # the kind mattered
