"""Opinion-score benchmark: split, system means and metrics against naive references, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from songseek.benchmarks.mos_bench import mos_metrics, run_mos_bench, split_indices, system_means
from songseek.engine.analysis.mos import MosTrainConfig
from songseek.engine.errors import UsageError
from tests.analysis_helpers import build_library, unit

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def test_split_is_seeded_disjoint_and_complete() -> None:
    tr, te = split_indices(100, 0.15, seed=3)
    assert len(te) == 15 and len(tr) == 85 and set(tr) | set(te) == set(range(100)) and not set(tr) & set(te)
    tr2, te2 = split_indices(100, 0.15, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, split_indices(100, 0.15, seed=4)[1])
    with pytest.raises(UsageError):
        split_indices(3, 0.5)


def test_system_means_and_metrics() -> None:
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 3.0])
    p = np.array([1.5, 2.0, 2.5, 4.5, 4.0, 3.5])
    st, sp = system_means(t, p, ("b", "a", "b", "a", "c", "c"))
    np.testing.assert_allclose(st, [3.0, 2.0, 4.0])
    np.testing.assert_allclose(sp, [3.25, 2.0, 3.75])
    m = mos_metrics(t, p)
    assert m.n == 6 and m.mse == pytest.approx(np.mean((t - p) ** 2))
    assert m.lcc == pytest.approx(np.corrcoef(t, p)[0, 1])

    def avg_ranks(x: np.ndarray) -> list[float]:  # 1-based, ties share the mean of their positions
        return [sum(v < xi for v in x) + (sum(v == xi for v in x) + 1) / 2 for xi in x]

    assert m.srcc == pytest.approx(np.corrcoef(avg_ranks(t), avg_ranks(p))[0, 1], abs=1e-12)
    conc = disc = tie_t = tie_p = 0
    for i in range(6):
        for j in range(i + 1, 6):
            a, b = np.sign(t[i] - t[j]), np.sign(p[i] - p[j])
            conc += a * b > 0
            disc += a * b < 0
            tie_t += a == 0 and b != 0
            tie_p += b == 0 and a != 0
    want_tau = (conc - disc) / np.sqrt((conc + disc + tie_t) * (conc + disc + tie_p))  # tau-b
    assert m.ktau == pytest.approx(want_tau, abs=1e-12)
    assert m.srcc != pytest.approx(m.ktau)  # the two are told apart on this data
    assert mos_metrics(np.ones(3), p[:3]).lcc is None  # undefined, not a crash


def test_run_mos_bench_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 160
    a = unit(rng.standard_normal((n, 32)))
    w = rng.standard_normal(32)
    systems = [f"S{i % 8}" for i in range(n)]
    offset = {f"S{j}": 0.4 * (j - 3.5) / 3.5 for j in range(8)}
    imp = np.clip(3 + np.tanh(a @ w / 2) + np.array([offset[s] for s in systems]), 1, 5)
    root = build_library(tmp_path / "lib", [v[None] for v in a])
    csv = tmp_path / "r.csv"
    csv.write_text("track_id,mi,system,prompt,ta\n" + "".join(
        f"t{i:03d},{imp[i]:.3f},{systems[i]},music number {i % 5},{1 + (i % 5)}\n" for i in range(n)))
    cfg = MosTrainConfig(optimizer="adam", lr=3e-3, max_epochs=120, patience=20)
    rep = run_mos_bench(root, csv, test_fraction=0.25, seed=1, config=cfg)
    assert rep.n_test == 40 and rep.n_train == 120
    assert set(rep.utterance) == {"impression", "alignment"} and set(rep.system) == {"impression", "alignment"}
    assert rep.utterance["impression"].srcc is not None and rep.utterance["impression"].srcc > 0.6
    assert rep.system["impression"].n == len({systems[i] for i in split_indices(n, 0.25, 1)[1]})
    assert rep.to_json()["settings"]["config"]["seed"] == 1
