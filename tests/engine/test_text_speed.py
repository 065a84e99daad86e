"""The fast text path: dynamic padding, the ONNX Runtime backends and how the default is chosen.

Real data: LAION-CLAP's RoBERTa tokenizer and text config (../shared/data/clap-htsat-fused) and 1,000
MusicCaps captions, cut to 1-60 words so batches mix short and long texts as queries do. The text tower
is the real architecture with seeded random weights, one of its twelve layers (padding is masked in
every layer alike, so depth does not change what is checked, only the run time; `bench query-speed`
measures the full model). Random weights cannot show ranking damage: that is measured on the demo model.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from songseek.engine.encoders import clap_hf, demo, demo_net, onnx_text
from songseek.engine.encoders.text_backend import TextTowerRunner
from tests.engine.encoder_helpers import tiny_config

torch.set_num_threads(1)
N_CAPTIONS = 1000


def captions(shared: Path, n: int = N_CAPTIONS) -> list[str]:
    """The first ``n`` MusicCaps captions, the i-th cut to its first 1 + (i * 7) % 60 words."""
    with open(shared / "musiccaps" / "musiccaps-public.csv", encoding="utf-8", newline="") as fh:
        rows = [r["caption"] for r in csv.DictReader(fh) if r["caption"].strip()][:n]
    return [" ".join(c.split()[: 1 + (i * 7) % 60]) for i, c in enumerate(rows)]


def real_text_encoder(shared: Path, layers: int = 1) -> tuple[clap_hf.ClapEncoder, Any]:
    """ClapEncoder with LAION-CLAP's tokenizer and text config (``layers`` deep), a tiny audio side."""
    from transformers import ClapConfig

    real = ClapConfig.from_pretrained(shared / "clap-htsat-fused")
    text = real.text_config.to_dict()  # type: ignore[union-attr]  # a ClapConfig always has one
    text["num_hidden_layers"] = layers
    config = ClapConfig(text_config=text, audio_config=tiny_config().audio_config.to_dict(),
                        projection_dim=real.projection_dim)
    model = clap_hf.random_model(config)
    fe, tok = clap_hf.load_parts(str(shared / "clap-htsat-fused"), True)
    assert tok is not None
    info = clap_hf.make_info("clap", "test-real-text", model, fe, True)
    return clap_hf.ClapEncoder(model, fe, tok, info, "cpu"), model


def padded_to_77(model: Any, tok: Any, texts: list[str]) -> np.ndarray:
    """The reference: every text padded to 77 tokens, as LAION-CLAP does, in batches of 64."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            t = tok(texts[i:i + 64], padding="max_length", truncation=True, max_length=77, return_tensors="pt")
            assert t["input_ids"].shape[1] == 77
            h = model.text_model(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
            out.append(model.text_projection(h.pooler_output).numpy())
    v = np.concatenate(out)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def real(shared_data_module: Path) -> tuple[clap_hf.ClapEncoder, Any, Any, list[str], np.ndarray]:
    from transformers import AutoTokenizer

    enc, model = real_text_encoder(shared_data_module)
    tok = AutoTokenizer.from_pretrained(shared_data_module / "clap-htsat-fused")
    texts = captions(shared_data_module)
    return enc, model, tok, texts, padded_to_77(model, tok, texts)


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-data tests skipped")
    return SHARED_DATA


def test_dynamic_padding_matches_padding_to_77(real: Any) -> None:
    enc, _, tok, texts, ref = real
    lengths = [len(tok(t, truncation=True, max_length=77)["input_ids"]) for t in texts]
    assert min(lengths) <= 4 and np.median(lengths) < 60  # the captions do mix short and long texts
    enc.set_text_backend("torch")
    got = enc.embed_text(texts)
    assert got.shape == ref.shape and np.isfinite(got).all()
    cos = row_cosines(got, ref)
    assert cos.min() >= 0.9999, f"worst caption: {texts[int(cos.argmin())]!r} cosine {cos.min()}"
    # one text at a time (a query) is padded to its own length: the same vectors
    single = np.concatenate([enc.embed_text([t]) for t in texts[:50]])
    assert row_cosines(single, ref[:50]).min() >= 0.9999


@pytest.mark.slow  # exports and quantises the tower: about a minute of CPU
def test_onnx_backends_match_torch(real: Any) -> None:
    pytest.importorskip("onnxruntime")
    enc, _, _, texts, ref = real
    for backend, floor in (("onnx", 0.9999), ("onnx-int8", 0.99)):
        enc.set_text_backend(backend)
        state = enc.text_backend_state()
        assert state.backend == backend and state.note == "", state
        got = enc.embed_text(texts)
        cos = row_cosines(got, ref)
        assert cos.min() >= floor, f"{backend}: worst cosine {cos.min()} on {texts[int(cos.argmin())]!r}"
        # one text at a time agrees with the batch (dynamic axes, padding masked in the exported graph); int8,
        # whose activation ranges are per run, runs every text alone, so a text's vector is its own exactly
        single = np.concatenate([enc.embed_text([t]) for t in texts[:20]])
        if backend == "onnx":
            assert row_cosines(single, got[:20]).min() >= 0.9999
        else:
            np.testing.assert_array_equal(single, got[:20])
    folder = Path(enc.text_tower_folder())
    assert (folder / onnx_text.FP32_FILE).is_file() and (folder / onnx_text.INT8_FILE).is_file()
    enc.set_text_backend("torch")


@pytest.mark.slow
def test_auto_chooses_a_passing_backend_and_records_it(real: Any) -> None:
    pytest.importorskip("onnxruntime")
    enc = real[0]
    enc.set_text_backend("auto")
    state = enc.text_backend_state()
    assert state.choice is not None and state.note == ""
    c = state.choice
    assert c.chosen == state.backend and c.passes(c.chosen)
    assert c.seconds[c.chosen] == min(s for b, s in c.seconds.items() if c.passes(b))
    again = onnx_text.read_choice(Path(enc.text_tower_folder()), torch.get_num_threads())
    assert again == c
    enc.set_text_backend("torch")


def test_choose_backend_takes_the_fastest_that_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    base = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    # A clock that only the runners move: each call costs its backend a fixed time, so the ranking does not
    # depend on the machine's speed or on a run being descheduled (busy loops timed for real did).
    clock = [0.0]
    monkeypatch.setattr(onnx_text, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def run(noise: float, cost_s: float) -> Any:
        def fn(texts: list[str]) -> np.ndarray:
            clock[0] += cost_s  # slower backends
            seed = sum(map(ord, texts[0]))
            return base + noise * np.random.default_rng(seed).standard_normal(base.shape).astype(np.float32)
        return fn

    runners = {"torch": run(0.0, 0.002), "onnx": run(0.0, 0.001), "onnx-int8": run(1.0, 0.0)}
    c = onnx_text.choose_backend(runners, threads=1, repeats=1)
    assert c.seconds == pytest.approx({"torch": 0.002, "onnx": 0.001, "onnx-int8": 0.0})
    assert c.min_cosine["torch"] == 1.0 and c.min_cosine["onnx"] >= 0.9999
    assert c.min_cosine["onnx-int8"] < 0.99 and not c.passes("onnx-int8")  # fastest, but fails its check
    assert c.chosen == "onnx"


class _Tower(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 8)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()
        return (self.emb(ids) * m).sum(1) / m.sum(1)


def _tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(t.split()) for t in texts)
    ids = np.zeros((len(texts), n), np.int64)
    mask = np.zeros((len(texts), n), np.int64)
    for i, t in enumerate(texts):
        for j, w in enumerate(t.split()):
            ids[i, j], mask[i, j] = len(w) % 50, 1
    return ids, mask


def test_missing_onnxruntime_falls_back_to_torch_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_text, "missing_reason", lambda: "onnxruntime/onnx not installed (onnxruntime): "
                        "pip install 'songseek[onnx]' for the fast text path; text queries use torch")
    runner = TextTowerRunner(_Tower(), _tokenize, "cpu")
    runner.request("onnx-int8")
    state = runner.state()
    assert state.backend == "torch" and "pip install" in state.note and "\n" not in state.note
    assert runner.embed(["a b", "ccc"]).shape == (2, 8)


def test_export_failure_falls_back_to_torch_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")

    def boom(*args: Any) -> None:
        raise RuntimeError("Exporting the operator 'aten::weird' is not supported\nsecond line")

    monkeypatch.setattr(onnx_text, "export_text_tower", boom)
    runner = TextTowerRunner(_Tower(), _tokenize, "cpu")
    runner.request("auto")
    state = runner.state()
    assert state.backend == "torch" and state.note.startswith("ONNX text path unavailable (RuntimeError")
    assert "\n" not in state.note and "text queries use torch" in state.note
    want = _Tower()(torch.from_numpy(_tokenize(["x yy"])[0]), torch.from_numpy(_tokenize(["x yy"])[1]))
    np.testing.assert_allclose(runner.embed(["x yy"]), want.detach().numpy(), rtol=1e-6)


def test_bad_backend_name_is_refused() -> None:
    from songseek.engine.errors import UsageError

    with pytest.raises(UsageError, match="onnx-int8"):
        onnx_text.validate_backend("tensorrt")


def test_demo_dynamic_padding_matches_fixed_length(shared_data_module: Path) -> None:
    """The demo text tower, padded to each batch's longest text vs to its 64 tokens: same vectors."""
    from safetensors.torch import load_file

    texts = captions(shared_data_module)
    enc = demo.load(None)
    root = demo.bundled_dir()
    cfg, words = demo.read_checkpoint_dir(root)
    model = demo_net.DemoCLAP(cfg, len(words)).eval()
    model.load_state_dict(load_file(str(root / demo.WEIGHTS_FILE)))
    tok = demo.Tokenizer(words, cfg)
    with torch.inference_mode():
        ref = np.concatenate([model.text(tok.encode(texts[i:i + 256])).numpy() for i in range(0, len(texts), 256)])
    got = enc.embed_text(texts)
    assert row_cosines(got, ref).min() >= 0.9999
    single = np.concatenate([enc.embed_text([t]) for t in texts[:50]])
    assert row_cosines(single, ref[:50]).min() >= 0.9999


def test_a_fresh_runner_reuses_the_export_and_the_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A new process (a new runner on the same weights) reads the exported models and choice.json: it
    neither exports nor re-times the backends, and its vectors match torch's."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(onnx_text.CACHE_ENV, str(tmp_path))
    first = TextTowerRunner(_Tower(), _tokenize, "cpu")
    first.request("auto")
    chosen = first.state()
    assert chosen.note == "" and chosen.choice is not None
    folder = Path(first.cache_folder())
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_export(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    monkeypatch.setattr(onnx_text, "choose_backend", no_export)
    again = TextTowerRunner(_Tower(), _tokenize, "cpu")
    again.request("auto")
    state = again.state()
    assert state.backend == chosen.backend and state.choice == chosen.choice and state.note == ""
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    ids, mask = _tokenize(["x yy zzz"])
    want = _Tower()(torch.from_numpy(ids), torch.from_numpy(mask)).detach().numpy()
    np.testing.assert_allclose(again.embed(["x yy zzz"]), want, rtol=1e-5, atol=1e-6)


def test_an_upgrade_or_another_opset_exports_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder was keyed on the weights only: after upgrading transformers (model code), torch
    (exporter) or onnxruntime (quantiser), or a change of opset, the old export and its choice were reused."""
    from importlib import metadata

    def folder() -> str:
        return TextTowerRunner(_Tower(), _tokenize, "cpu").cache_folder()

    before = folder()
    assert folder() == before  # stable for the same weights and versions
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "9.9" if d == "transformers" else real_version(d))
    upgraded = folder()
    monkeypatch.setattr(onnx_text, "OPSET", 18)
    assert len({before, upgraded, folder()}) == 3


@pytest.mark.parametrize("damaged", [onnx_text.FP32_FILE, onnx_text.INT8_FILE])
def test_a_damaged_cached_export_is_exported_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   damaged: str) -> None:
    """A cached model that ONNX Runtime cannot load (a truncated copy, disk trouble) used to send every later
    run to torch with a note until someone deleted the folder; now it is exported afresh, once."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(onnx_text.CACHE_ENV, str(tmp_path))
    first = TextTowerRunner(_Tower(), _tokenize, "cpu")
    first.request("onnx")
    assert first.state().backend == "onnx"
    folder = Path(first.cache_folder())
    onnx_text.write_choice(folder, onnx_text.BackendChoice("onnx", {"torch": 1.0, "onnx": 1.0}, {}, 1))
    path = folder / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ids, mask = _tokenize(["x yy zzz"])
    want = _Tower()(torch.from_numpy(ids), torch.from_numpy(mask)).detach().numpy()
    for backend in ("onnx", "onnx-int8"):
        runner = TextTowerRunner(_Tower(), _tokenize, "cpu")
        runner.request(backend)
        state = runner.state()
        assert state.backend == backend and state.note == "", state
        np.testing.assert_allclose(runner.embed(["x yy zzz"]), want, rtol=0.05, atol=0.02)
    assert onnx_text.read_choice(folder, 1) is not None  # the recorded choice is kept
    # an export that fails on its own is tried once, not twice
    calls: list[int] = []

    def boom(*args: Any) -> None:
        calls.append(1)
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_text, "export_text_tower", boom)
    onnx_text.remove_models(folder)
    runner = TextTowerRunner(_Tower(), _tokenize, "cpu")
    runner.request("onnx")
    assert runner.state().backend == "torch" and len(calls) == 1


def test_demo_onnx_backends_match_torch(shared_data_module: Path) -> None:
    """The demo tower through ONNX Runtime (its four inputs exported with dynamic axes): fp32 equals torch
    on 1,000 captions of 1-60 words, in batches and one text at a time. int8 is close on most captions but
    within the issue's 0.99 floor on all of them only since it quantises MatMul weights alone (worst 0.9985
    measured on an AVX-512 VNNI CPU; with the embedding tables quantised too, 3 of 1,000 fell below 0.99:
    docs/encoders.md). The floor asserted here is looser: int8 kernels differ between CPUs."""
    pytest.importorskip("onnxruntime")
    texts = captions(shared_data_module)
    enc = demo.load(None)
    ref = enc.embed_text(texts)
    enc.set_text_backend("onnx")
    state = enc.text_backend_state()
    assert state.backend == "onnx" and state.note == "", state
    cos = row_cosines(enc.embed_text(texts), ref)
    assert cos.min() >= 0.9999, f"worst cosine {cos.min()} on {texts[int(cos.argmin())]!r}"
    single = np.concatenate([enc.embed_text([t]) for t in texts[:50]])
    assert row_cosines(single, ref[:50]).min() >= 0.9999
    enc.set_text_backend("onnx-int8")
    cos8 = row_cosines(enc.embed_text(texts), ref)
    assert np.median(cos8) >= 0.999 and cos8.min() >= 0.98
    folder = Path(enc.text_tower_folder())
    assert (folder / onnx_text.FP32_FILE).is_file() and (folder / onnx_text.INT8_FILE).is_file()


def test_a_ranking_check_lists_every_reason_int8_may_not_be_a_default(tmp_path: Path) -> None:
    ok = onnx_text.RankingCheck("lib", 200, 10, identical=0.96, same_set=0.99, min_cosine=0.999,
                                random_weights=False)
    assert ok.failures() == []
    bad = replace(ok, queries=10, identical=0.9, min_cosine=0.98, random_weights=True)
    why = " | ".join(bad.failures())
    assert len(bad.failures()) == 4
    assert "random weights" in why and "10 queries" in why and "0.900" in why and "0.98000" in why
    assert onnx_text.read_ranking_check(tmp_path) is None  # absent
    (tmp_path / onnx_text.RANKING_FILE).write_text('{"library": "x"}', encoding="utf-8")
    assert onnx_text.read_ranking_check(tmp_path) is None  # damaged or foreign: ignored
    assert onnx_text.auto_candidates(tmp_path) == ("onnx",)


def test_a_saved_ranking_check_lets_auto_time_int8_and_a_failing_one_withdraws_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(onnx_text.CACHE_ENV, str(tmp_path))
    first = TextTowerRunner(_Tower(), _tokenize, "cpu")
    first.request("auto")
    before = first.state().choice
    assert before is not None and "onnx-int8" not in before.min_cosine  # not even timed without a check
    folder = Path(first.cache_folder())
    passing = onnx_text.RankingCheck("lib", 200, 10, 0.97, 0.99, 0.999, False)
    onnx_text.write_ranking_check(folder, passing)
    assert onnx_text.read_ranking_check(folder) == passing
    assert not (folder / onnx_text.CHOICE_FILE).exists()  # auto chooses again
    assert onnx_text.auto_candidates(folder) == ("onnx", "onnx-int8")
    again = TextTowerRunner(_Tower(), _tokenize, "cpu")
    again.request("auto")
    c = again.state().choice
    assert c is not None and "onnx-int8" in c.min_cosine and "onnx-int8" in c.seconds
    assert c.seconds[c.chosen] == min(t for b, t in c.seconds.items() if c.passes(b))
    onnx_text.write_ranking_check(folder, replace(passing, identical=0.9))
    assert onnx_text.auto_candidates(folder) == ("onnx",)
    third = TextTowerRunner(_Tower(), _tokenize, "cpu")
    third.request("auto")
    c3 = third.state().choice
    assert c3 is not None and "onnx-int8" not in c3.min_cosine and c3.chosen != "onnx-int8"


def test_a_new_int8_export_removes_the_old_int8_file(tmp_path: Path) -> None:
    """The int8 file of before the MatMul-only change (embedding tables quantised too) is no longer read:
    exporting the new one deletes it."""
    pytest.importorskip("onnxruntime")
    old = tmp_path / "text-int8.onnx"
    old.write_bytes(b"an int8 model of the earlier kind")
    onnx_text.export_text_tower(_Tower(), _tokenize(["a bb", "ccc dd e"]), tmp_path)
    assert (tmp_path / onnx_text.FP32_FILE).is_file() and (tmp_path / onnx_text.INT8_FILE).is_file()
    assert not old.exists()


def test_a_temporary_file_left_by_a_killed_export_is_removed_once_stale(tmp_path: Path) -> None:
    old, young, model = tmp_path / ".tmp-abc.onnx", tmp_path / ".tmp-def.onnx", tmp_path / onnx_text.FP32_FILE
    for p in (old, young, model):
        p.write_bytes(b"x")
    now = time.time()
    os.utime(old, (now - onnx_text.STALE_TEMP_S - 60,) * 2)  # killed an hour ago
    os.utime(model, (now - 10 * onnx_text.STALE_TEMP_S,) * 2)  # an old export is kept: only temporaries go
    assert onnx_text.remove_stale_temps(tmp_path, now) == [old]
    assert not old.exists() and young.exists() and model.exists()  # young: maybe another process's export
    assert onnx_text.remove_stale_temps(tmp_path / "absent") == []
