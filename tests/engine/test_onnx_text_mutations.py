"""onnx_text's small decisions that the other tests left open (found by a mutation sweep): the cosine check,
how ``choose_backend`` times, what a recorded choice must be to be reused, the ranking check's thresholds,
the cache folder, the weights fingerprint, which files ``remove_models`` deletes and int8's one-text runs.
Each checked against a plain computation (loops, the documented rule), not the module's own helpers."""

from __future__ import annotations

import json
import math
import statistics
import sys
import types
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from songseek.engine.encoders import onnx_text


def _naive_min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    worst = math.inf
    for x, y in zip(a.tolist(), b.tolist()):
        dot = sum(p * q for p, q in zip(x, y))
        nx = math.sqrt(sum(p * p for p in x))
        ny = math.sqrt(sum(q * q for q in y))
        worst = min(worst, dot / (max(nx, 1e-12) * max(ny, 1e-12)))
    return worst


def test_min_cosine_is_the_worst_row_not_the_average() -> None:
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 5)).astype(np.float32)
    b = a + 0.05 * rng.standard_normal((6, 5)).astype(np.float32)
    b[4] = -a[4] * 3.0  # one row pointing the other way: cosine -1
    got = onnx_text.min_cosine(a, b)
    assert got == pytest.approx(_naive_min_cosine(a, b), abs=1e-9)
    assert got == pytest.approx(-1.0, abs=1e-6)
    scaled = onnx_text.min_cosine(a * 10.0, b * 0.1)  # lengths do not matter
    assert scaled == pytest.approx(got, abs=1e-9)


def test_min_cosine_of_a_zero_row_is_zero_not_nan() -> None:
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
    b = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
    got = onnx_text.min_cosine(a, b)
    assert not math.isnan(got) and got == pytest.approx(_naive_min_cosine(a, b)) and got == 0.0


def test_choose_backend_times_the_5_to_15_word_probes_by_their_median(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call costs its backend a time that grows with the text's words, so which probes are timed and
    how (median, not mean) shows in the seconds recorded."""
    clock = [0.0]
    monkeypatch.setattr(onnx_text, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    seen: dict[str, list[list[str]]] = {}

    def run(name: str, per_word: float) -> Any:
        def fn(texts: list[str]) -> np.ndarray:
            seen.setdefault(name, []).append(list(texts))
            words = len(texts[0].split())
            clock[0] += per_word * words * words  # skewed: the mean of these is not their median
            rng = np.random.default_rng(sum(map(ord, texts[0])))
            return rng.standard_normal((len(texts), 4)).astype(np.float32)
        return fn

    runners = {"torch": run("torch", 2e-6), "onnx": run("onnx", 1e-6)}
    probes = onnx_text.PROBE_TEXTS
    choice = onnx_text.choose_backend(runners, threads=3, probes=probes, repeats=2)
    timed_words = [len(t.split()) for t in probes if 5 <= len(t.split()) <= 15]
    assert timed_words and len(timed_words) < len(probes)
    for name, per_word in (("torch", 2e-6), ("onnx", 1e-6)):
        want = statistics.median([per_word * w * w for w in timed_words] * 2)
        assert choice.seconds[name] == pytest.approx(want, rel=1e-9)
    assert choice.chosen == "onnx" and choice.threads == 3
    assert choice.min_cosine["torch"] == 1.0 and choice.min_cosine["onnx"] == pytest.approx(1.0, abs=1e-12)
    assert all(len(call) == 1 for calls in seen.values() for call in calls)  # one text per call, as queries come


def test_choose_backend_takes_the_fastest_passing_whatever_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(onnx_text, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    base = np.ones((1, 4), np.float32)

    def run(cost: float) -> Any:
        def fn(texts: list[str]) -> np.ndarray:
            clock[0] += cost
            return base.copy()
        return fn

    # dict order: torch, then the fast onnx-int8, then onnx; all pass, int8 is fastest
    runners = {"torch": run(0.003), "onnx-int8": run(0.001), "onnx": run(0.002)}
    assert onnx_text.choose_backend(runners, threads=1, repeats=1).chosen == "onnx-int8"
    runners = {"torch": run(0.001), "onnx-int8": run(0.003), "onnx": run(0.002)}
    assert onnx_text.choose_backend(runners, threads=1, repeats=1).chosen == "torch"


def test_a_threshold_met_exactly_passes() -> None:
    c = onnx_text.BackendChoice("onnx", {"torch": 1.0, "onnx": 0.9999, "onnx-int8": 0.99}, {}, 1)
    assert c.passes("torch") and c.passes("onnx") and c.passes("onnx-int8")
    c = onnx_text.BackendChoice("onnx", {"onnx": 0.99989, "onnx-int8": 0.98999}, {}, 1)
    assert not c.passes("onnx") and not c.passes("onnx-int8") and not c.passes("torch")  # torch: not measured


def _choice(chosen: str = "onnx", threads: int = 2, **kw: Any) -> onnx_text.BackendChoice:
    return onnx_text.BackendChoice(chosen, {"torch": 1.0, "onnx": 1.0}, {"torch": 0.02, "onnx": 0.01}, threads, **kw)


def test_write_choice_keeps_the_other_thread_counts_records(tmp_path: Path) -> None:
    onnx_text.write_choice(tmp_path, _choice(threads=1))
    onnx_text.write_choice(tmp_path, _choice("torch", threads=4))
    raw = json.loads((tmp_path / onnx_text.CHOICE_FILE).read_text(encoding="utf-8"))
    assert sorted(raw) == ["1", "4"]
    assert onnx_text.read_choice(tmp_path, 1) == _choice(threads=1)
    assert onnx_text.read_choice(tmp_path, 4) == _choice("torch", threads=4)
    assert onnx_text.read_choice(tmp_path, 2) is None
    onnx_text.write_choice(tmp_path, _choice("torch", threads=1))  # the same thread count: replaced
    assert onnx_text.read_choice(tmp_path, 1) == _choice("torch", threads=1)
    assert onnx_text.read_choice(tmp_path, 4) == _choice("torch", threads=4)


@pytest.mark.parametrize("change", ["version", "backend"])
def test_a_recorded_choice_of_another_format_or_backend_is_not_reused(tmp_path: Path, change: str) -> None:
    rec = asdict(_choice(threads=2))
    if change == "version":
        rec["version"] = onnx_text.CHOICE_VERSION + 1
    else:
        rec["chosen"] = "tensorrt"
    (tmp_path / onnx_text.CHOICE_FILE).write_text(json.dumps({"2": rec}), encoding="utf-8")
    assert onnx_text.read_choice(tmp_path, 2) is None


def test_ranking_check_thresholds_met_exactly_pass() -> None:
    edge = onnx_text.RankingCheck("lib", onnx_text.MIN_RANKING_QUERIES, 10, identical=onnx_text.MIN_IDENTICAL,
                                  same_set=1.0, min_cosine=onnx_text.MIN_COSINE["onnx-int8"], random_weights=False)
    assert edge.failures() == []
    assert len(replace(edge, queries=onnx_text.MIN_RANKING_QUERIES - 1).failures()) == 1
    assert len(replace(edge, identical=onnx_text.MIN_IDENTICAL - 1e-6).failures()) == 1
    assert len(replace(edge, min_cosine=onnx_text.MIN_COSINE["onnx-int8"] - 1e-6).failures()) == 1


def test_cache_root_is_the_onnx_folder_under_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(onnx_text.CACHE_ENV, str(tmp_path / "c"))
    assert onnx_text.cache_root() == tmp_path / "c" / "onnx"
    monkeypatch.delenv(onnx_text.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert onnx_text.cache_root() == tmp_path / "home" / ".cache" / "songseek" / "onnx"


def test_the_weights_fingerprint_sees_names_shapes_values_and_extra() -> None:
    def module(**tensors: torch.Tensor) -> torch.nn.Module:
        m = torch.nn.Module()
        for name, t in tensors.items():
            m.register_buffer(name, t.clone())
        return m

    x = torch.arange(12, dtype=torch.float32)
    fp = onnx_text.weights_fingerprint
    base = fp(module(a=x), "sha")
    assert base == fp(module(a=x.clone()), "sha")  # the same weights, another module object
    others = [fp(module(a=x), "other sha"), fp(module(b=x), "sha"), fp(module(a=x.reshape(3, 4)), "sha"),
              fp(module(a=x.double()), "sha"), fp(module(a=x + 1), "sha")]
    assert len({base, *others}) == 1 + len(others)


def test_remove_models_deletes_both_exports_and_keeps_the_records(tmp_path: Path) -> None:
    names = (onnx_text.FP32_FILE, onnx_text.INT8_FILE, onnx_text.CHOICE_FILE, onnx_text.RANKING_FILE)
    for name in names:
        (tmp_path / name).write_text("x")
    onnx_text.remove_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([onnx_text.CHOICE_FILE, onnx_text.RANKING_FILE])
    onnx_text.remove_models(tmp_path)  # nothing left to delete: no error


def test_only_int8_sessions_run_texts_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 quantises activations per run, so a text must get the vector it gets alone: its session runs
    texts one by one; fp32 runs the batch (a stand-in session: what matters is what it is asked to run)."""
    runs: list[int] = []

    class FakeSession:
        def __init__(self, *_: Any, **__: Any) -> None:
            pass

        def get_inputs(self) -> list[Any]:
            return [SimpleNamespace(name="input_ids"), SimpleNamespace(name="attention_mask")]

        def run(self, _: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            ids = feeds["input_ids"]
            runs.append(len(ids))
            return [ids.sum(axis=1, keepdims=True).astype(np.float64)]

    class Opts:
        def __init__(self) -> None:
            self.entries: dict[str, str] = {}

        def add_session_config_entry(self, key: str, value: str) -> None:
            self.entries[key] = value

    fake = types.ModuleType("onnxruntime")
    fake.SessionOptions = Opts  # type: ignore[attr-defined]
    fake.GraphOptimizationLevel = SimpleNamespace(ORT_ENABLE_ALL=99)  # type: ignore[attr-defined]
    fake.InferenceSession = FakeSession  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)

    def tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array([[len(w) for w in t.split()] + [0] * (3 - len(t.split())) for t in texts], np.int64)
        return ids, (ids > 0).astype(np.int64)

    texts = ["a bb", "ccc", "dd e fff"]
    want = np.array([[sum(len(w) for w in t.split())] for t in texts], np.float32)
    int8 = onnx_text.OnnxTextSession(tmp_path / onnx_text.INT8_FILE, 2)
    got = int8.run_texts(tokenize)(texts)
    assert runs == [1, 1, 1] and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    runs.clear()
    fp32 = onnx_text.OnnxTextSession(tmp_path / onnx_text.FP32_FILE, 2)
    np.testing.assert_array_equal(fp32.run_texts(tokenize)(texts), want)
    assert runs == [3]


def test_a_failed_write_raises_and_leaves_neither_the_file_nor_a_temporary(tmp_path: Path) -> None:
    """An export or quantisation that fails mid-write must reach the caller (which falls back to torch) and
    leave no half model under the real name."""
    target = tmp_path / "m" / onnx_text.FP32_FILE

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half a model")
        raise RuntimeError("exporter failed")

    with pytest.raises(RuntimeError, match="exporter failed"):
        onnx_text._atomic_write_bytes(target, fail)
    assert list(target.parent.iterdir()) == []
    onnx_text._atomic_write_bytes(target, lambda tmp: tmp.write_bytes(b"whole"))  # type: ignore[arg-type]
    assert target.read_bytes() == b"whole" and [p.name for p in target.parent.iterdir()] == [target.name]
