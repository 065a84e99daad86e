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
        last = mlp[-1]  # type: ignore[index]
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
        head.check_encoder(dataclasses.replace(FAKE_INFO, **{field: value}), "lib")  # type: ignore[arg-type]


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


@pytest.mark.parametrize("kwargs", [{"valid_fraction": 1.0}, {"lr": 0.0}, {"patience": 0}])
def test_configs_that_cannot_train_are_refused(kwargs: dict[str, float]) -> None:
    """No training rows (valid_fraction 1), a zero step, or no patience: refused before any work."""
    with pytest.raises(UsageError, match="valid_fraction|must be positive"):
        MosTrainConfig(**kwargs).validated()  # type: ignore[arg-type]
    MosTrainConfig(valid_fraction=0.0, lr=1e-9, patience=1).validated()  # the nearest legal values


def test_training_needs_two_rows_and_one_text_vector_per_row() -> None:
    a = unit(np.random.default_rng(4).standard_normal((3, 32)))
    cfg = MosTrainConfig(max_epochs=1)
    with pytest.raises(UsageError, match="at least 2 rated tracks, got 1"):
        train_head(FAKE_INFO, a[:1], np.full(1, 3.0, np.float32), config=cfg)
    with pytest.raises(UsageError, match="3 audio vectors but 2 text vectors"):
        train_head(FAKE_INFO, a, np.full(3, 3.0, np.float32), a[:2], np.full(3, 3.0, np.float32), cfg)
    head = train_head(FAKE_INFO, a[:2], np.full(2, 3.0, np.float32), config=cfg)  # two rows are enough
    assert head.report is not None and head.report.n_train == 2


@pytest.mark.parametrize("n", [9, 10, 30])
def test_a_validation_split_only_from_ten_rows(n: int) -> None:
    a = unit(np.random.default_rng(n).standard_normal((n, 32)))
    head = train_head(FAKE_INFO, a, np.full(n, 3.0, np.float32), config=MosTrainConfig(max_epochs=1))
    assert head.report is not None
    want_valid = int(round(n * 0.1)) if n >= 10 else 0
    assert (head.report.n_valid, head.report.n_train) == (want_valid, n - want_valid)


def test_the_best_epoch_s_weights_are_kept_and_its_loss_is_the_mean_of_both_heads() -> None:
    """After early stopping the head holds the best epoch's weights: its mean L1 over the two heads on the
    validation rows (computed here by hand) is the reported valid_l1; epochs counts every epoch run."""
    rng = np.random.default_rng(8)
    n = 40
    a = unit(rng.standard_normal((n, 32)))
    t = unit(rng.standard_normal((n, 32)))
    imp = rng.uniform(1, 5, n).astype(np.float32)
    ali = rng.uniform(1, 5, n).astype(np.float32)
    cfg = MosTrainConfig(optimizer="adam", lr=0.05, max_epochs=60, patience=4, valid_fraction=0.25, seed=2)
    calls: list[int] = []
    head = train_head(FAKE_INFO, a, imp, t, ali, cfg, on_epoch=lambda e, _: calls.append(e))
    rep = head.report
    assert rep is not None and head.alignment is not None
    # stopped early, a few epochs after the best one
    assert rep.epochs == len(calls) == rep.best_epoch + cfg.patience < cfg.max_epochs
    valid = np.random.default_rng(cfg.seed).permutation(n)[:rep.n_valid]
    assert rep.n_valid == 10
    with torch.no_grad():
        xa, xt = torch.from_numpy(a[valid]), torch.from_numpy(t[valid])
        out1 = head.impression(xa).squeeze(1).numpy().astype(np.float64)
        out2 = head.alignment(torch.cat([xa, xt], dim=1)).squeeze(1).numpy().astype(np.float64)
    l1_imp = sum(abs(o - y) for o, y in zip(out1, imp[valid].astype(np.float64))) / len(valid)
    l1_ali = sum(abs(o - y) for o, y in zip(out2, ali[valid].astype(np.float64))) / len(valid)
    assert rep.valid_l1 == pytest.approx((l1_imp + l1_ali) / 2, rel=1e-5)


def test_the_heads_are_not_linear_maps() -> None:
    """ReLU between the layers: a purely linear stack would give f(x) + f(-x) == 2 f(0) for every x."""
    head = MosHead(FAKE_INFO, (16, 8), with_alignment=True)
    x = torch.from_numpy(unit(np.random.default_rng(9).standard_normal((8, 32))))
    for mlp, inp in ((head.impression, x), (head.alignment, torch.cat([x, x.flip(0)], dim=1))):
        with torch.no_grad():
            gap = (mlp(inp) + mlp(-inp) - 2 * mlp(torch.zeros_like(inp))).abs().max().item()  # type: ignore[misc]
        assert gap > 1e-4


def test_a_safetensors_file_of_another_format_is_refused(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from songseek.engine.analysis.mos import load_head
    from songseek.engine.errors import LibraryError

    path = _head(3.0).save(tmp_path / "h.safetensors")
    load_head(path, FAKE_INFO)  # the head as saved loads
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    other = tmp_path / "other.safetensors"
    save_file(load_file(str(path)), str(other), metadata={**meta, "format": "someone-elses-head"})
    with pytest.raises(LibraryError, match="not a songseek MOS head"):
        load_head(other)


def test_a_failed_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    from songseek.engine.errors import LibraryError

    target = tmp_path / "heads" / "h.safetensors"
    target.mkdir(parents=True)  # a directory where the file should go: the final rename fails
    with pytest.raises(LibraryError, match="could not write the MOS head"):
        _head(3.0).save(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["h.safetensors"]


def test_ratings_count_the_rows_folded_by_averaging_and_subsets_keep_the_unmatched(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = build_library(tmp_path / "lib", [unit(rng.standard_normal((2, 32))) for _ in range(3)])
    tracks = Library.open(root).tracks
    csv = tmp_path / "r.csv"
    lines = [("t000", 2), ("t001", 4), ("t000", 4), ("x9", 3), ("t000", 3), ("t002", 1), ("t001", 5)]
    csv.write_text("track_id,impression\n" + "".join(f"{t},{s}\n" for t, s in lines))
    r = read_ratings(csv, tracks)
    matched = [(t, s) for t, s in lines if t != "x9"]
    assert r.averaged == len(matched) - len({t for t, _ in matched}) == 3
    assert r.rows == len(lines) and r.unmatched == ("x9",)
    want = {t: np.mean([s for u, s in matched if u == t]) for t in r.track_ids}
    np.testing.assert_allclose(r.impression, [want[t] for t in r.track_ids])
    sub = r.subset(np.array([2, 0]))
    assert sub.track_ids == (r.track_ids[2], r.track_ids[0]) and sub.unmatched == ("x9",)


def test_a_system_column_is_found_whatever_its_case(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = build_library(tmp_path / "lib", [unit(rng.standard_normal((2, 32))) for _ in range(2)])
    csv = tmp_path / "r.csv"
    csv.write_text("track_id,impression,Generator\nt000,3,A\nt001,4,B\n")
    tracks = Library.open(root).tracks
    for name in ("generator", "GENERATOR", " Generator "):
        assert read_ratings(csv, tracks, system_column=name).systems == ("A", "B")


def test_prompts_that_match_only_some_rows_are_read_and_none_is_refused(tmp_path: Path) -> None:
    from songseek.engine.analysis.mos import read_prompts

    rng = np.random.default_rng(3)
    root = build_library(tmp_path / "lib", [unit(rng.standard_normal((2, 32))) for _ in range(2)])
    tracks = Library.open(root).tracks
    csv = tmp_path / "p.csv"
    csv.write_text("track_id,prompt\nx1,jazz\nt001,rock\n")
    got = read_prompts(csv, tracks)
    assert got.by_track == {"t001": "rock"} and got.unmatched == ("x1",) and got.rows == 2
    csv.write_text("track_id,prompt\nx1,jazz\n")
    with pytest.raises(UsageError, match="matches a track"):
        read_prompts(csv, tracks)


def test_each_rated_row_gets_its_own_prompt_s_text_vector(tmp_path: Path) -> None:
    """Prompts in no sorted order, one repeated: row i's text vector is the embedding of prompt i."""
    from songseek.engine.analysis.mos import Ratings, rated_vectors

    rng = np.random.default_rng(3)
    root = build_library(tmp_path / "lib", [unit(rng.standard_normal((2, 32))) for _ in range(4)])
    lib = Library.open(root)
    prompts = ("zither solo", "a choir", "loud drums", "a choir")
    r = Ratings(("t003", "t000", "t002", "t001"), np.full(4, 3.0, np.float32), np.full(4, 3.0, np.float32),
                prompts)
    _, text = rated_vectors(lib, r)
    assert text is not None
    for row, prompt in zip(text, prompts):
        np.testing.assert_allclose(row, lib.embed_text([prompt])[0], atol=1e-6)


def test_the_saved_weights_keep_the_linear_relu_layout() -> None:
    """Linear, ReLU, Linear, ReLU, Linear: the Linear layers sit at positions 0, 2 and 4, which is what the
    tensor names in a saved head say; a layer dropped or added would leave old head files unloadable."""
    head = MosHead(FAKE_INFO, (16, 8), with_alignment=True)
    for name, mlp in (("impression", head.impression), ("alignment", head.alignment)):
        assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]  # type: ignore[union-attr]
        assert sorted(k for k in head.state() if k.startswith(name + ".")) == sorted(
            f"{name}.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias"))
