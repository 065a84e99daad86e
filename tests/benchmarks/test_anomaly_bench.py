"""Anomaly benchmark: per-ID AUC/pAUC (pure) and a synthetic DCASE 2020 Task 2 tree end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.benchmarks.anomaly import anomaly_rows, run_anomaly_bench, scan_dcase
from songseek.benchmarks.score_metrics import partial_auc, roc_auc
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError

sf = pytest.importorskip("soundfile")
SR = 16000


def test_anomaly_rows_per_id_and_average() -> None:
    rng = np.random.default_rng(0)
    types = ["fan"] * 40 + ["pump"] * 20
    ids = ["00"] * 20 + ["02"] * 20 + ["00"] * 20
    y = rng.random(60) < 0.5
    y[[0, 1, 20, 21, 40, 41]] = [True, False] * 3
    s = rng.standard_normal(60) + y
    rows = anomaly_rows(types, ids, y, s)
    assert [(r.machine_type, r.machine_id) for r in rows] == [("fan", "00"), ("fan", "02"), ("fan", "average"),
                                                              ("pump", "00"), ("pump", "average")]
    assert rows[0].auc == pytest.approx(roc_auc(y[:20], s[:20]))
    assert rows[1].pauc == pytest.approx(partial_auc(y[20:40], s[20:40], 0.1))
    assert rows[2].auc == pytest.approx((rows[0].auc + rows[1].auc) / 2)
    assert rows[0].normal + rows[0].anomalous == 20


def _clip(freq: float, anomaly: bool, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(SR) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.01 * rng.standard_normal()) * t) + 0.01 * rng.standard_normal(SR)
    if anomaly:  # a rattle: broadband clicks in the high band
        x += 0.2 * rng.standard_normal(SR) * (rng.random(SR) < 0.05)
    return x.astype(np.float32)


def _dcase(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for mt, base in (("fan", 300.0), ("valve", 900.0)):
        for mid, f in (("00", base), ("02", base * 1.5)):
            for n in range(6):
                path = root / "dev_data" / mt / "train" / f"normal_id_{mid}_{n:08d}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, _clip(f, False, rng), SR)
            for kind in ("normal", "anomaly"):
                for n in range(4):
                    path = root / "dev_data" / mt / "test" / f"{kind}_id_{mid}_{n:08d}.wav"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(path, _clip(f, kind == "anomaly", rng), SR)
    return root


def test_scan_dcase(tmp_path: Path) -> None:
    clips = scan_dcase(_dcase(tmp_path / "d"))
    assert len(clips) == 2 * 2 * (6 + 8)
    assert {c.machine_type for c in clips} == {"fan", "valve"}
    assert sum(c.anomaly for c in clips) == 16 and all(not c.anomaly for c in clips if c.split == "train")
    with pytest.raises(UsageError, match="DCASE"):
        scan_dcase(tmp_path)


def test_run_anomaly_bench_on_a_synthetic_tree(tmp_path: Path) -> None:
    root = _dcase(tmp_path / "d")
    rep = run_anomaly_bench(root, FakeEncoder(), tmp_path / "work", k=4, window_s=1.0)
    ids = [r for r in rep.rows if r.machine_id != "average"]
    assert len(ids) == 4 and all(r.normal == 4 and r.anomalous == 4 for r in ids)
    assert rep.mean_auc > 0.9  # clicks move the band energies far from the clean tones
    again = run_anomaly_bench(root, FakeEncoder(), tmp_path / "work", k=4, window_s=1.0)  # reuses the libraries
    assert again.to_json()["rows"] == rep.to_json()["rows"]
    per_type = run_anomaly_bench(root, FakeEncoder(), tmp_path / "work", k=4, reference="type", window_s=1.0)
    assert per_type.reference == "type" and len(per_type.rows) == 6


def test_a_machine_type_without_test_clips_is_one_clear_error(tmp_path: Path) -> None:
    """valve/ with train/ but no test/ was an IndexError traceback."""
    import shutil

    root = _dcase(tmp_path / "d")
    shutil.rmtree(root / "dev_data" / "valve" / "test")
    with pytest.raises(UsageError, match=r"valve: no test clips"):
        run_anomaly_bench(root, FakeEncoder(), tmp_path / "work", k=4, window_s=1.0)
    assert not (tmp_path / "work").exists()  # refused before any machine type was indexed


def test_only_normal_training_clips_are_references(tmp_path: Path) -> None:
    """An anomaly_* file in train/ (a copy of a test anomaly) was a reference at distance 0 from that test
    clip, pulling its score down: references are the normal training clips (Eq. 1, seed 004)."""
    import shutil

    root = _dcase(tmp_path / "d")
    clean = run_anomaly_bench(root, FakeEncoder(), tmp_path / "w1", k=4, window_s=1.0)
    fan = root / "dev_data" / "fan"
    for n in range(4):
        shutil.copy(fan / "test" / f"anomaly_id_00_{n:08d}.wav", fan / "train" / f"anomaly_id_00_{n:08d}.wav")
    mixed = run_anomaly_bench(root, FakeEncoder(), tmp_path / "w2", k=4, window_s=1.0)
    assert mixed.to_json()["rows"] == clean.to_json()["rows"]
