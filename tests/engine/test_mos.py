"""MusicEval MLP head: learns a planted score, saves/loads bit-exactly, refuses another encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.engine.analysis.mos import (
    MosTrainConfig,
    load_head,
    predict_library,
    read_prompts,
    read_ratings,
    train_head,
    train_on_library,
)
from songseek.engine.encoders.base import EncoderInfo
from songseek.engine.errors import IncompatibleLibraryError, UsageError
from songseek.engine.query.filters import filter_track_ids
from songseek.engine.query.search import Library
from tests.analysis_helpers import FAKE_INFO, build_library, unit

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
FAST = MosTrainConfig(optimizer="adam", lr=3e-3, max_epochs=300, patience=30)


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Audio and text unit vectors (n, 32); impression depends on the audio, alignment on the text."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).standard_normal(32)
    a = unit(rng.standard_normal((n, 32)))
    t = unit(a + 1.2 * rng.standard_normal((n, 32)) / np.sqrt(32) * rng.uniform(0.2, 3, (n, 1)))
    imp = np.clip(3 + 1.4 * np.tanh(a @ w / 2) + 0.1 * rng.standard_normal(n), 1, 5)
    w2 = np.random.default_rng(98).standard_normal(32)
    ali = np.clip(3 + 1.4 * np.tanh(t @ w2 / 2) + 0.1 * rng.standard_normal(n), 1, 5)  # needs the text
    return a, t, imp.astype(np.float32), ali.astype(np.float32)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_head_learns_both_planted_scores() -> None:
    a, t, imp, ali = planted(500, 0)
    head = train_head(FAKE_INFO, a[:400], imp[:400], t[:400], ali[:400], FAST)
    pred = head.predict(a[400:], t[400:])
    assert pred.alignment is not None
    assert spearman(pred.impression, imp[400:]) > 0.8
    assert spearman(pred.alignment, ali[400:]) > 0.6
    assert pred.impression.min() >= 1 and pred.impression.max() <= 5
    assert head.report is not None and head.report.n_valid == 40 and head.report.best_epoch >= 1
    # audio-only predictions leave alignment out
    assert head.predict(a[:3]).alignment is None


def test_training_is_deterministic_for_a_seed() -> None:
    a, _, imp, _ = planted(60, 1)
    cfg = MosTrainConfig(max_epochs=5)
    p1 = train_head(FAKE_INFO, a, imp, config=cfg).predict(a).impression
    p2 = train_head(FAKE_INFO, a, imp, config=cfg).predict(a).impression
    np.testing.assert_array_equal(p1, p2)


def test_save_load_round_trip_and_encoder_check(tmp_path: Path) -> None:
    a, t, imp, ali = planted(80, 2)
    head = train_head(FAKE_INFO, a, imp, t, ali, MosTrainConfig(max_epochs=3))
    path = head.save(tmp_path / "h.safetensors")
    back = load_head(path, FAKE_INFO)
    p1, p2 = head.predict(a, t), back.predict(a, t)
    np.testing.assert_array_equal(p1.impression, p2.impression)
    assert p1.alignment is not None and p2.alignment is not None
    np.testing.assert_array_equal(p1.alignment, p2.alignment)
    assert back.report == head.report and back.encoder == FAKE_INFO
    other = EncoderInfo("laion", "music.pt", 32, 48000)
    with pytest.raises(IncompatibleLibraryError, match="another encoder"):
        load_head(path, other)
    with pytest.raises(UsageError, match="no MOS head"):
        load_head(tmp_path / "missing.safetensors")


def test_bad_inputs_are_refused() -> None:
    a, _, imp, _ = planted(10, 3)
    with pytest.raises(UsageError):
        train_head(FAKE_INFO, a[:, :5], imp)
    with pytest.raises(UsageError):
        train_head(FAKE_INFO, a, imp[:5])
    with pytest.raises(UsageError):
        train_head(FAKE_INFO, a, imp, config=MosTrainConfig(optimizer="lbfgs"))


def _rated_library(tmp_path: Path, n: int = 120) -> tuple[Path, Path, np.ndarray]:
    a, _, imp, _ = planted(n, 4)
    rng = np.random.default_rng(5)
    tracks = [unit(v[None] + 0.05 * rng.standard_normal((2, 32))) for v in a]  # two windows near v
    root = build_library(tmp_path / "lib", tracks)
    csv = tmp_path / "ratings.csv"
    lines = ["path,impression,system"] + [f"/music/t{i:03d}.wav,{imp[i]:.3f},S{i % 4}" for i in range(n)]
    lines.append("/music/unknown.wav,3,S0")
    csv.write_text("\n".join(lines) + "\n")
    return root, csv, imp


def test_read_ratings_matches_paths_and_reports_unmatched(tmp_path: Path) -> None:
    root, csv, imp = _rated_library(tmp_path, 12)
    r = read_ratings(csv, Library.open(root).tracks)
    assert r.track_ids == tuple(f"t{i:03d}" for i in range(12)) and r.unmatched == ("/music/unknown.wav",)
    assert r.rows == 13
    np.testing.assert_allclose(r.impression, imp, atol=1e-3)
    assert r.systems is not None and r.systems[:4] == ("S0", "S1", "S2", "S3") and r.alignment is None
    bad = tmp_path / "bad.csv"
    bad.write_text("track_id,impression\nt000,7\n")
    with pytest.raises(UsageError, match="outside 1-5"):
        read_ratings(bad, Library.open(root).tracks)
    bad.write_text("track_id,alignment,impression\nt000,3,3\n")
    with pytest.raises(UsageError, match="prompt"):
        read_ratings(bad, Library.open(root).tracks)


def test_crlf_and_stray_carriage_returns_are_read_and_errors_name_the_real_line(tmp_path: Path) -> None:
    """A CRLF path list extended with sed (`path\\r,3.0`) was split at the \\r: 'line 2: impression ''
    is not a number' on a line that held 3.0."""
    root, _, _ = _rated_library(tmp_path, 12)
    tracks = Library.open(root).tracks
    csv = tmp_path / "ratings.csv"
    csv.write_bytes(b"path\r,impression\r\n/music/t000.wav\r,3.0\r\n/music/t001.wav,4.0\r\n")
    r = read_ratings(csv, tracks)
    assert r.track_ids == ("t000", "t001") and r.unmatched == ()
    np.testing.assert_allclose(r.impression, [3.0, 4.0])
    # a quoted cell spans lines 2-3, so the bad row is on line 4 (counting records would say line 3)
    csv.write_bytes(b'track_id,impression,note\r\nt000,3.0,"two\r\nlines"\r\nt001,x9,\r\n')
    with pytest.raises(UsageError, match=r"line 4: impression 'x9' is not a number"):
        read_ratings(csv, tracks)
    csv.write_text('track_id,prompt\nt000,"calm\npiano"\nt001,loud drums\n', newline="")
    assert read_prompts(csv, tracks).by_track == {"t000": "calm\npiano", "t001": "loud drums"}


def test_repeated_ratings_of_a_track_are_averaged_into_one_example(tmp_path: Path) -> None:
    """One row per rater is common; left as rows, a clip could sit on both sides of a train/test split."""
    root, _, _ = _rated_library(tmp_path, 12)
    tracks = Library.open(root).tracks
    csv = tmp_path / "raters.csv"
    csv.write_text("track_id,impression,system\nt001,2,A\nt002,5,B\nt001,4,A\nt001,3,A\n")
    r = read_ratings(csv, tracks)
    assert r.track_ids == ("t001", "t002") and r.averaged == 2 and r.systems == ("A", "B")
    np.testing.assert_allclose(r.impression, [3.0, 5.0])
    csv.write_text("track_id,impression,alignment,prompt\nt001,2,1,calm piano\nt001,4,5,loud drums\n"
                   "t001,4,3,calm piano\n")
    r = read_ratings(csv, tracks)  # with prompts: one example per (track, prompt)
    assert r.track_ids == ("t001", "t001") and r.prompts == ("calm piano", "loud drums") and r.averaged == 1
    assert r.impression.tolist() == [3.0, 4.0] and r.alignment is not None and r.alignment.tolist() == [2.0, 5.0]


def test_train_on_library_then_predict_into_the_mos_table(tmp_path: Path) -> None:
    root, csv, imp = _rated_library(tmp_path)
    lib = Library.open(root)
    head = train_on_library(lib, read_ratings(csv, lib.tracks), FAST)
    path = head.save(root / "mos-head.safetensors")
    ids, pred = predict_library(root, path)
    assert spearman(pred.impression, imp) > 0.8  # seen tracks: a sanity check of the plumbing
    lib = Library.open(root)
    table = lib.tables()["mos"]
    assert table.column("track_id").to_pylist() == ids
    np.testing.assert_array_equal(table.column("mos_impression").to_numpy(), pred.impression)
    assert table.column("mos_alignment").null_count == len(ids)
    want = sorted(t for t, p in zip(ids, pred.impression) if p > 3.5)
    assert sorted(filter_track_ids(lib.tables(), "mos_impression > 3.5")) == want


def test_a_ratings_file_matching_no_track_is_one_line_naming_the_match_rule_and_the_fix(tmp_path: Path) -> None:
    root, _, _ = _rated_library(tmp_path, 12)
    csv = tmp_path / "other.csv"
    csv.write_text("track_id,impression\nx1,3\nx2,4\n")
    with pytest.raises(UsageError, match="none of its 2 rows matches a track") as err:
        read_ratings(csv, Library.open(root).tracks)
    msg = str(err.value)
    assert "\n" not in msg and "first unmatched: x1, x2" in msg
    assert "matched by track_id, else by path" in msg and "SELECT track_id, path FROM tracks" in msg


def test_read_prompts_matches_ids_and_paths_and_refuses_a_file_that_matches_none(tmp_path: Path) -> None:
    root, _, _ = _rated_library(tmp_path, 12)
    tracks = Library.open(root).tracks
    csv = tmp_path / "prompts.csv"
    csv.write_text("track_id,path,prompt\nt001,,calm piano\n,/music/t002.wav,loud drums\n,t003.wav,\n"
                   "x9,,jazz\n,/elsewhere/none.wav,rock\n")
    got = read_prompts(csv, tracks)
    # t003 matched by its file name but has no prompt: no alignment for it, and it is not "unmatched"
    assert got.by_track == {"t001": "calm piano", "t002": "loud drums"}
    assert got.unmatched == ("x9", "/elsewhere/none.wav") and got.rows == 5
    csv.write_text("track_id,prompt\nx1,jazz\nx2,rock\n")
    with pytest.raises(UsageError, match="none of its 2 rows matches a track") as err:
        read_prompts(csv, tracks)
    assert "\n" not in str(err.value) and "SELECT track_id, path FROM tracks" in str(err.value)
    csv.write_text("track_id,caption_text\nt001,jazz\n")
    with pytest.raises(UsageError, match="needs a prompt column"):
        read_prompts(csv, tracks)


def test_predict_library_refuses_prompts_keyed_by_no_track_of_the_library(tmp_path: Path) -> None:
    a, t, imp, ali = planted(12, 6)
    root = build_library(tmp_path / "lib", [v[None] for v in a])
    path = train_head(FAKE_INFO, a, imp, t, ali, MosTrainConfig(max_epochs=2)).save(tmp_path / "h.safetensors")
    with pytest.raises(UsageError, match="none of the 2 prompts is keyed by a track id"):
        predict_library(root, path, {"x1": "jazz", "x2": "rock"})
    assert "mos" not in Library.open(root).tables()  # nothing written
    ids, pred = predict_library(root, path, {"t003": "jazz", "x2": "rock"})
    assert pred.alignment is not None
    assert [i for i, v in enumerate(pred.alignment) if not np.isnan(v)] == [ids.index("t003")]


def test_on_epoch_reports_every_epoch_with_the_best_loss_so_far() -> None:
    """What `mos train` draws its progress bar from: one call per epoch run, early stopping included."""
    a, _, imp, _ = planted(200, 0)
    seen: list[tuple[int, float]] = []
    head = train_head(FAKE_INFO, a, imp, config=MosTrainConfig(max_epochs=40, patience=3),
                      on_epoch=lambda epoch, best: seen.append((epoch, best)))
    assert head.report is not None
    assert [e for e, _ in seen] == list(range(1, head.report.epochs + 1))
    bests = [b for _, b in seen]
    assert bests == sorted(bests, reverse=True) and bests[-1] == pytest.approx(head.report.valid_l1)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}       "])
def test_a_damaged_head_file_is_one_library_error(tmp_path: Path, content: bytes) -> None:
    """A truncated or foreign file raised safetensors' own SafetensorError (a traceback in the CLI)."""
    from songseek.engine.errors import LibraryError

    path = tmp_path / "h.safetensors"
    path.write_bytes(content)
    with pytest.raises(LibraryError, match="h.safetensors") as err:
        load_head(path)
    assert "\n" not in str(err.value)


def test_a_head_with_a_damaged_training_report_is_one_library_error(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from songseek.engine.errors import LibraryError

    a, _, imp, _ = planted(20, 2)
    path = train_head(FAKE_INFO, a, imp, config=MosTrainConfig(max_epochs=2)).save(tmp_path / "h.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    save_file(load_file(str(path)), str(path), metadata={**meta, "report": '{"n_train": 3, "surprise": 1}'})
    with pytest.raises(LibraryError, match="unreadable MOS head"):
        load_head(path)


def test_system_cells_are_checked(tmp_path: Path) -> None:
    """An empty system cell made a system named '' in the system-level metrics; two rows of one clip with
    different systems kept the first silently; a --system-column the file lacks gave no system level."""
    root, _, _ = _rated_library(tmp_path, 12)
    tracks = Library.open(root).tracks
    csv = tmp_path / "r.csv"
    csv.write_text("track_id,impression,system\nt000,3,A\nt001,4,\n")
    with pytest.raises(UsageError, match=r"line 3: empty system"):
        read_ratings(csv, tracks)
    csv.write_text("track_id,impression,system\nt000,3,A\nt001,4,B\nt000,5,B\n")
    with pytest.raises(UsageError, match=r"t000.*systems 'A' \(line 2\) and 'B' \(line 4\)"):
        read_ratings(csv, tracks)
    csv.write_text("track_id,impression,model\nt000,3,A\nt001,4,B\n")
    with pytest.raises(UsageError, match=r"no column 'generator'"):
        read_ratings(csv, tracks, system_column="generator")
    assert read_ratings(csv, tracks, system_column="Model").systems == ("A", "B")
    assert read_ratings(csv, tracks).systems is None  # the default column is optional


def test_rated_vectors_follow_the_ratings_not_the_library_order(tmp_path: Path) -> None:
    from songseek.engine.analysis.mos import rated_vectors

    root, _, _ = _rated_library(tmp_path, 12)
    lib = Library.open(root)
    order = [7, 2, 11, 0, 5]
    csv = tmp_path / "r.csv"
    csv.write_text("path,impression\n" + "".join(f"/music/t{i:03d}.wav,{1 + i / 3:.3f}\n" for i in order))
    r = read_ratings(csv, lib.tracks)
    audio, text = rated_vectors(lib, r)
    assert r.track_ids == tuple(f"t{i:03d}" for i in order) and text is None
    np.testing.assert_allclose(r.impression, [1 + i / 3 for i in order], atol=1e-3)
    starts, counts = lib.tracks.column("frame_start").to_numpy(), lib.tracks.column("frame_count").to_numpy()
    ids = lib.tracks.column("track_id").to_pylist()
    for row, tid in zip(audio, r.track_ids):
        k = ids.index(tid)
        mean = lib.store.vectors(int(starts[k]), int(counts[k])).astype(np.float64).mean(0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)
