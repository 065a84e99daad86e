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
    # every row against a plain loop: AUC = share of (anomalous, normal) pairs ordered right, ties 1/2
    spans = {("fan", "00"): [slice(0, 20)], ("fan", "02"): [slice(20, 40)], ("pump", "00"): [slice(40, 60)]}
    spans[("fan", "average")] = spans[("fan", "00")] + spans[("fan", "02")]
    spans[("pump", "average")] = spans[("pump", "00")]
    for r in rows:
        parts = spans[(r.machine_type, r.machine_id)]
        ys = [y[p] for p in parts]
        assert r.normal == sum(int((~v).sum()) for v in ys) and r.anomalous == sum(int(v.sum()) for v in ys)
        aucs, paucs = [], []
        for p in parts:
            pos, neg = s[p][y[p]], s[p][~y[p]]
            aucs.append(np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg]))
            paucs.append(partial_auc(y[p], s[p], 0.1))
        assert r.auc == pytest.approx(np.mean(aucs), abs=1e-12), r  # the average row: mean of its IDs
        assert r.pauc == pytest.approx(np.mean(paucs), abs=1e-12), r
    assert rows[0].auc == pytest.approx(roc_auc(y[:20], s[:20]))
    wide = anomaly_rows(types, ids, y, s, max_fpr=0.3)  # max_fpr reaches every pAUC
    assert [r.pauc for r in wide[:2]] == pytest.approx([partial_auc(y[:20], s[:20], 0.3),
                                                        partial_auc(y[20:40], s[20:40], 0.3)])
    assert wide[0].pauc != pytest.approx(rows[0].pauc)


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


def _naive_auc_by_id(work: Path, k: int, per: str) -> dict[tuple[str, str], float]:
    """Eq. 1 written plainly from the libraries the run built: each clip's vector is the normalised mean of
    its windows; a test clip's score is the mean of its k smallest Euclidean distances to the normal training
    clips (of its ID, or of its machine type); AUC per (type, ID) by counting pairs."""
    import warnings

    from songseek.engine.query.search import Library

    def clips(lib_path: Path) -> dict[str, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lib = Library.open(lib_path)
        out = {}
        for t in lib.tracks.to_pylist():
            v = lib.store.vectors(t["frame_start"], t["frame_count"]).astype(np.float64).mean(axis=0)
            out[Path(t["path"]).name] = v / np.linalg.norm(v)
        return out

    aucs = {}
    for mt in ("fan", "valve"):
        train, test = clips(work / mt / "train"), clips(work / mt / "test")
        for mid in ("00", "02"):
            refs = [v for name, v in train.items()
                    if name.startswith("normal_") and (per == "type" or f"_id_{mid}_" in name)]
            scored = {}
            for name, v in test.items():
                if f"_id_{mid}_" in name:
                    d = sorted(float(np.sqrt(((v - r) ** 2).sum())) for r in refs)
                    scored[name] = sum(d[:k]) / k
            pos = [sc for n, sc in scored.items() if n.startswith("anomaly_")]
            neg = [sc for n, sc in scored.items() if n.startswith("normal_")]
            aucs[(mt, mid)] = float(np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg]))
    return aucs


def test_run_anomaly_bench_on_a_synthetic_tree(tmp_path: Path) -> None:
    root = _dcase(tmp_path / "d")
    rep = run_anomaly_bench(root, FakeEncoder(), tmp_path / "work", k=4, window_s=1.0)
    ids = [r for r in rep.rows if r.machine_id != "average"]
    assert len(ids) == 4 and all(r.normal == 4 and r.anomalous == 4 for r in ids)
    assert rep.mean_auc > 0.9  # clicks move the band energies far from the clean tones
    naive = _naive_auc_by_id(tmp_path / "work", 4, "id")
    assert {(r.machine_type, r.machine_id): r.auc for r in ids} == pytest.approx(naive, abs=1e-6)
    again = run_anomaly_bench(root, FakeEncoder(), tmp_path / "work", k=4, window_s=1.0)  # reuses the libraries
    assert again.to_json()["rows"] == rep.to_json()["rows"]
    per_type = run_anomaly_bench(root, FakeEncoder(), tmp_path / "work", k=4, reference="type", window_s=1.0)
    assert per_type.reference == "type" and len(per_type.rows) == 6
    naive_type = _naive_auc_by_id(tmp_path / "work", 4, "type")
    assert {(r.machine_type, r.machine_id): r.auc for r in per_type.rows if r.machine_id != "average"} == \
        pytest.approx(naive_type, abs=1e-6)


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
