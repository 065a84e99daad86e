"""Zero-shot tagging edge cases pinned by a mutation sweep: argument guards, numerically safe softmax, an
empty library, the tags table's alignment by track id and its metadata (checked against direct computation)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.analysis.tagging import (
    LabelSet,
    TagScores,
    aggregate_windows,
    load_label_set,
    normalise,
    tag_library,
    tag_sets,
    tags_table,
)
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, noisy_copies

ENC = FakeEncoder()


def test_a_label_file_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\u00e9\nrock\n".encode("latin-1"))
    with pytest.raises(UsageError, match="cannot read the labels"):
        load_label_set(str(f))


def test_unknown_aggregation_and_normalisation_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="aggregate must be one of mean, max, fusion"):
        aggregate_windows(np.zeros((1, 2, 1)), np.array([2]), "median")
    with pytest.raises(UsageError, match="normalisation must be one of softmax, sigmoid"):
        normalise(np.zeros((2, 2)), "softmaxx")


@pytest.mark.parametrize("tau", [math.inf, math.nan, -0.1])
def test_temperature_must_be_finite_and_positive(tau: float) -> None:
    with pytest.raises(UsageError, match="temperature"):
        normalise(np.zeros((2, 2)), "softmax", tau)


def test_softmax_does_not_overflow_at_a_small_temperature() -> None:
    c = np.array([[1.0, 0.9, -1.0], [0.2, 0.2, 0.2]])
    tau = 0.001  # c / tau reaches 1000: exp() of it overflows a float64
    got = normalise(c, "softmax", tau)
    for i in range(2):
        e = [math.exp((x - max(c[i])) / tau) for x in c[i]]  # naive, shifted by hand
        np.testing.assert_allclose(got[i], [x / sum(e) for x in e], rtol=1e-6, atol=1e-30)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("how", ["softmax", "sigmoid"])
def test_normalising_no_tracks_or_no_labels_is_empty_and_quiet(how: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert normalise(np.zeros((0, 3)), how).shape == (0, 3)
        assert normalise(np.zeros((3, 0)), how).shape == (3, 0)


def _scores(name: str, labels: tuple[str, ...], ids: list[str], seed: int) -> TagScores:
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-1, 1, (len(ids), len(labels))).astype(np.float32)
    score = rng.uniform(0, 1, (len(ids), len(labels))).astype(np.float32)
    return TagScores(LabelSet(name, labels), np.asarray(ids, dtype=object), cos, score, ("A {label} track",),
                     "mean", "softmax", 0.01)


def test_other_sets_columns_follow_their_track_ids_not_row_positions() -> None:
    first = _scores("genres", ("jazz", "rock"), ["a", "b", "c", "d"], 0)
    table = tags_table(first)
    shuffled = table.take(pa.array([2, 0, 3, 1]))  # same tracks, another row order
    second = _scores("moods", ("happy",), ["d", "e", "a", "c", "b"], 1)  # a new track "e" too
    merged = tags_table(second, shuffled)
    assert merged.column("track_id").to_pylist() == ["d", "e", "a", "c", "b"]
    old = {tid: (j, r) for tid, j, r in zip(["a", "b", "c", "d"], first.score[:, 0].tolist(),
                                            first.score[:, 1].tolist())}
    for row, tid in enumerate(merged.column("track_id").to_pylist()):
        jazz, rock = merged.column("tag_jazz")[row].as_py(), merged.column("tag_rock")[row].as_py()
        top = merged.column("top_genres")[row].as_py()
        if tid == "e":
            assert (jazz, rock, top) == (None, None, None)
        else:
            assert (jazz, rock) == pytest.approx(old[tid])
            k = ["a", "b", "c", "d"].index(tid)
            assert top == ("jazz", "rock")[int(first.cosine[k, 1] > first.cosine[k, 0])]


def test_labels_taken_one_after_another_are_all_remembered() -> None:
    ids = ["a", "b"]
    table = tags_table(_scores("genres", ("jazz", "rock", "folk"), ids, 0))
    table = tags_table(_scores("mine", ("jazz",), ids, 1), table)
    table = tags_table(_scores("yours", ("rock",), ids, 2), table)
    sets = tag_sets(table)
    assert sets["genres"]["labels"] == ["folk"]
    assert sets["genres"]["taken_by"] == {"jazz": "mine", "rock": "yours"}


def test_tag_library_needs_a_set_and_checks_the_temperature_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = build_library(tmp_path / "lib", [noisy_copies(ENC.embed_text(["jazz"])[0], 2, 0.5, rng)])
    with pytest.raises(UsageError, match="at least one label set"):
        tag_library(root, [])
    # a bad temperature is reported before the library is even opened
    with pytest.raises(UsageError, match="temperature"):
        tag_library(tmp_path / "no library here", [LabelSet("g", ("jazz",))], temperature=0.0)


def test_tag_sets_records_the_encoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = build_library(tmp_path / "lib", [noisy_copies(ENC.embed_text(["jazz"])[0], 2, 0.5, rng)
                                            for _ in range(3)])
    tag_library(root, [LabelSet("g", ("jazz", "rock"))])
    info = ENC.info
    assert tag_sets(Library.open(root).tables()["tags"])["g"]["encoder"] == f"{info.name}:{info.checkpoint}"
