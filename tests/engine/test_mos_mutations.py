"""MOS head edge cases pinned by a mutation sweep: predictions clipped to the 1-5 scale, non-finite and
mismatched inputs refused, scores at the scale's ends accepted and NaN refused, the encoder check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.analysis.mos import MosHead, MosTrainConfig, read_ratings, train_head
from songseek.engine.errors import IncompatibleLibraryError, UsageError
from songseek.engine.query.search import Library
from tests.analysis_helpers import FAKE_INFO, build_library, unit

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def _head(bias: float) -> MosHead:
    """A head whose output is ``bias`` for every input (last layer's weights zeroed)."""
    head = MosHead(FAKE_INFO, (4, 4), with_alignment=True)
    for mlp in (head.impression, head.alignment):
        last = mlp[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(bias)
    return head


@pytest.mark.parametrize("bias, want", [(100.0, 5.0), (-100.0, 1.0), (3.25, 3.25)])
def test_predictions_are_clipped_to_the_score_range(bias: float, want: float) -> None:
    a = unit(np.random.default_rng(0).standard_normal((3, 32)))
    pred = _head(bias).predict(a, a)
    assert pred.alignment is not None
    assert pred.impression.tolist() == [want] * 3 and pred.alignment.tolist() == [want] * 3


def test_predict_refuses_mismatched_or_non_finite_vectors() -> None:
    a = unit(np.random.default_rng(1).standard_normal((3, 32)))
    head = _head(3.0)
    with pytest.raises(UsageError, match="3 audio vectors but 2 text vectors"):
        head.predict(a, a[:2])
    bad = a.copy()
    bad[1, 4] = np.nan
    with pytest.raises(UsageError, match="NaN or inf"):
        head.predict(bad)
    bad[1, 4] = np.inf
    with pytest.raises(UsageError, match="NaN or inf"):
        head.predict(a, bad)


def test_training_refuses_non_finite_scores_and_vectors() -> None:
    a = unit(np.random.default_rng(2).standard_normal((4, 32)))
    cfg = MosTrainConfig(max_epochs=1)
    with pytest.raises(UsageError, match="impression scores contain NaN"):
        train_head(FAKE_INFO, a, np.array([3, np.nan, 2, 4], np.float32), config=cfg)
    with pytest.raises(UsageError, match="alignment scores contain NaN"):
        train_head(FAKE_INFO, a, np.full(4, 3.0, np.float32), a, np.array([3, 3, np.inf, 3], np.float32), cfg)
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UsageError, match="audio vectors contain NaN"):
        train_head(FAKE_INFO, bad, np.full(4, 3.0, np.float32), config=cfg)


@pytest.mark.parametrize("field, value", [("checkpoint_sha256", "abc"), ("dim", 64)])
def test_a_head_is_refused_for_an_encoder_that_differs_in_one_field(field: str, value: object) -> None:
    head = _head(3.0)
    head.check_encoder(FAKE_INFO, "same")  # the encoder it was made for
    with pytest.raises(IncompatibleLibraryError, match=field.replace("_", " ") if field == "dim" else "sha256"):
        head.check_encoder(dataclasses.replace(FAKE_INFO, **{field: value}), "lib")


def test_ratings_at_the_ends_of_the_scale_are_kept_and_nan_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = build_library(tmp_path / "lib", [unit(rng.standard_normal((2, 32))) for _ in range(3)])
    tracks = Library.open(root).tracks
    csv = tmp_path / "r.csv"
    csv.write_text("track_id,impression\nt000,1\nt001,5\nt002,3\n")
    assert read_ratings(csv, tracks).impression.tolist() == [1.0, 5.0, 3.0]
    csv.write_text("track_id,impression\nt000,nan\n")
    with pytest.raises(UsageError, match="line 2: impression nan is outside 1-5"):
        read_ratings(csv, tracks)
    csv.write_text("track_id,impression,alignment,prompt\nt000,3,4,\n")
    with pytest.raises(UsageError, match="line 2: empty prompt"):
        read_ratings(csv, tracks)
