"""Zero-shot tagging benchmark: ground-truth reading, metrics against naive references, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.benchmarks.score_metrics import average_precision, roc_auc
from songseek.benchmarks.tagging import LabelledTracks, evaluate, read_labelled, run_tagging_bench
from songseek.engine.analysis.tagging import LabelSet
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library
from tests.analysis_helpers import build_library, noisy_copies

ENC = FakeEncoder()
GENRES = ("blues", "jazz", "rock")


def test_evaluate_single_label_matches_naive() -> None:
    rng = np.random.default_rng(0)
    truth_idx = rng.integers(0, 3, 40)
    targets = np.eye(3, dtype=bool)[truth_idx]
    scores = rng.standard_normal((40, 3)) + 0.8 * targets
    rep = evaluate(scores, LabelledTracks(tuple(map(str, range(40))), GENRES, targets, True))
    pred = scores.argmax(1)
    assert rep.accuracy == pytest.approx(np.mean(pred == truth_idx))
    per = [np.mean(pred[truth_idx == j] == j) for j in range(3)]
    assert [r.accuracy for r in rep.per_label] == pytest.approx(per)
    assert rep.macro_accuracy == pytest.approx(np.mean(per))
    assert rep.per_label[1].roc_auc == pytest.approx(roc_auc(targets[:, 1], scores[:, 1]))


def test_evaluate_multi_label_macro_skips_one_class_labels() -> None:
    rng = np.random.default_rng(1)
    targets = rng.random((50, 4)) < 0.3
    targets[:, 3] = False
    scores = rng.standard_normal((50, 4)) + targets
    rep = evaluate(scores, LabelledTracks(tuple(map(str, range(50))), ("a", "b", "c", "d"), targets, False))
    assert rep.kind == "multi-label" and rep.accuracy is None and rep.skipped == ("d",)
    assert rep.macro_roc_auc == pytest.approx(np.mean([roc_auc(targets[:, j], scores[:, j]) for j in range(3)]))
    assert rep.macro_pr_auc == pytest.approx(
        np.mean([average_precision(targets[:, j], scores[:, j]) for j in range(3)]))


def _library(tmp_path: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(2)
    centers = ENC.embed_text([f"A {g} track" for g in GENRES])
    truth = [GENRES[i % 3] for i in range(18)]
    tracks = [noisy_copies(centers[i % 3], 3, 1.2, rng) for i in range(18)]
    return build_library(tmp_path / "lib", tracks), truth


def test_read_labelled_single_and_multi(tmp_path: Path) -> None:
    root, truth = _library(tmp_path)
    tracks = Library.open(root).tracks
    single = tmp_path / "gtzan.csv"
    single.write_text("path,label\n" + "".join(f"/music/t{i:03d}.wav,{g}\n" for i, g in enumerate(truth))
                      + "/nowhere.wav,jazz\n")
    lt = read_labelled(single, tracks)
    assert lt.single_label and lt.labels == ("blues", "jazz", "rock") and lt.unmatched == ("/nowhere.wav",)
    assert [lt.labels[j] for j in lt.targets.argmax(1)] == truth
    multi = tmp_path / "mtat.csv"
    multi.write_text("track_id,labels\nt000,jazz|rock\nt001,\nt002,blues\n")
    lm = read_labelled(multi, tracks, vocabulary=("rock", "jazz", "blues", "pop"))
    assert not lm.single_label
    np.testing.assert_array_equal(lm.targets, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
    bad = tmp_path / "bad.csv"
    bad.write_text("track_id,label\nt000,polka\n")
    with pytest.raises(UsageError, match="not in the label set"):
        read_labelled(bad, tracks, vocabulary=GENRES)


def test_run_tagging_bench_on_planted_library(tmp_path: Path) -> None:
    root, truth = _library(tmp_path)
    ds = tmp_path / "gtzan.csv"
    ds.write_text("track_id,label\n" + "".join(f"t{i:03d},{g}\n" for i, g in enumerate(truth)))
    rep = run_tagging_bench(root, ds)
    assert rep.accuracy == 1.0 and rep.macro_roc_auc is not None and rep.macro_roc_auc > 0.9 and rep.tracks == 18
    # with a vocabulary that has an extra label, predictions may only get worse, never crash
    rep2 = run_tagging_bench(root, ds, LabelSet("g", (*GENRES, "polka")), aggregate="max")
    assert rep2.accuracy is not None and rep2.skipped == ("polka",)
    assert rep2.to_json()["settings"]["aggregate"] == "max"


def test_a_track_named_by_two_rows_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    """Two rows for one track were two examples: a single-label track 'blues' and 'jazz' at once (one of them
    necessarily a miss), or two files matched to one track through the file-name fallback, counted twice."""
    root, _ = _library(tmp_path)
    tracks = Library.open(root).tracks
    ds = tmp_path / "dup.csv"
    ds.write_text("track_id,label\nt000,blues\nt001,jazz\nt000,jazz\n")
    with pytest.raises(UsageError, match=r"t000 .*lines 2 and 4") as err:
        read_labelled(ds, tracks)
    assert "\n" not in str(err.value)
    ds.write_text("track_id,labels\nt000,blues|jazz\nt000,rock\n")
    with pytest.raises(UsageError, match=r"t000 .*lines 2 and 3"):
        read_labelled(ds, tracks)
    ds.write_text("path,label\n/music/t000.wav,blues\n/elsewhere/t000.wav,blues\n")  # one track by file name
    with pytest.raises(UsageError, match=r"/elsewhere/t000.wav .*t000.*lines 2 and 3"):
        read_labelled(ds, tracks)


def test_several_labels_in_a_single_label_column_are_refused(tmp_path: Path) -> None:
    """'blues|jazz' under 'label' became a class of its own named 'blues|jazz'."""
    root, _ = _library(tmp_path)
    ds = tmp_path / "mixed.csv"
    ds.write_text("track_id,label\nt000,blues|jazz\nt001,jazz\n")
    with pytest.raises(UsageError, match=r"line 2: .*'labels' column"):
        read_labelled(ds, Library.open(root).tracks)


def test_scores_are_matched_to_the_dataset_by_track_not_by_position(tmp_path: Path) -> None:
    """Dataset rows in another order than the library (and by path): each row's scores are its own track's."""
    root, truth = _library(tmp_path)
    order = list(range(18))[::-1]
    ds = tmp_path / "reversed.csv"
    ds.write_text("path,label\n" + "".join(f"t{i:03d}.wav,{truth[i]}\n" for i in order))  # a file name only
    rep = run_tagging_bench(root, ds, aggregate="max")
    lib = Library.open(root)
    vecs = ENC.embed_text([f"A {g} track" for g in GENRES])
    starts = lib.tracks.column("frame_start").to_numpy()
    counts = lib.tracks.column("frame_count").to_numpy()
    cos = np.array([[max(float(w @ v) for w in lib.store.vectors(int(starts[i]), int(counts[i]))) for v in vecs]
                    for i in order])  # naive: max over windows, per dataset row
    targets = np.array([[truth[i] == g for g in GENRES] for i in order])
    assert rep.accuracy == pytest.approx(np.mean(cos.argmax(1) == targets.argmax(1)))
    for j, r in enumerate(rep.per_label):
        assert r.roc_auc == pytest.approx(roc_auc(targets[:, j], cos[:, j]), abs=1e-6)
        assert r.pr_auc == pytest.approx(average_precision(targets[:, j], cos[:, j]), abs=1e-6)
