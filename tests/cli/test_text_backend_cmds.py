"""`search --text-backend` / `--cache-texts` and `index --text-backend` on a tiny clap model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.encoders import clap_hf, onnx_text
from tests.audio_helpers import tone_track, write_wav
from tests.engine.encoder_helpers import save_tiny_tokenizer, tiny_config, tiny_model

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def clap_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clap_lib")
    ckpt = root / "tiny"
    tiny_model(tiny_config()).save_pretrained(ckpt)
    clap_hf.laion_feature_extractor().save_pretrained(ckpt)
    save_tiny_tokenizer(ckpt)
    music = root / "music"
    write_wav(music / "a.wav", tone_track([110, 440], 10, 0))
    write_wav(music / "b.wav", tone_track([3000], 10, 1))
    code, _, err = run("index", str(music), "--library", str(root / "lib"), "--encoder", "clap",
                       "--checkpoint", str(ckpt), "--text-backend", "torch")
    assert code == 0, err
    return root / "lib"


def test_search_gives_the_same_hits_on_every_backend(clap_library: Path) -> None:
    pytest.importorskip("onnxruntime")
    ranked = {}
    for backend in ("torch", "onnx", "onnx-int8", "auto"):
        code, out, err = run("search", "jazz trio with vibraphone", "--library", str(clap_library), "--json",
                             "--text-backend", backend, "-k", "2")
        assert code == 0, err
        assert "use torch" not in err  # the ONNX path was available: nothing fell back
        ranked[backend] = [h["track_id"] for h in json.loads(out)]
    assert ranked["onnx"] == ranked["torch"] == ranked["auto"]


def test_cache_texts_keeps_vectors_in_the_library(clap_library: Path) -> None:
    code, out, err = run("search", "heavy metal guitar solo", "--library", str(clap_library), "--json",
                         "--text-backend", "torch", "--cache-texts")
    assert code == 0, err
    assert list((clap_library / "text-cache").glob("*.npz"))
    code, again, _ = run("search", "heavy metal guitar solo", "--library", str(clap_library), "--json",
                         "--text-backend", "torch", "--cache-texts")
    assert code == 0 and json.loads(again) == json.loads(out)


def test_unknown_backend_is_one_line_exit_2(clap_library: Path) -> None:
    code, _, err = run("search", "piano", "--library", str(clap_library), "--text-backend", "tensorrt")
    assert code == 2 and "tensorrt" in err and "onnx-int8" in err and len(err.strip().splitlines()) == 1


def test_bench_text_speed_times_the_contract_and_reuses_the_export(clap_library: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench text-speed`: the padded-to-77 baseline, encode, engine, whole query cold and cached, with
    ratios to the baseline; a second run finds the export on disk and does not export again."""
    pytest.importorskip("onnxruntime")
    import torch

    code, out, err = run("bench", "text-speed", "--library", str(clap_library), "--queries", "3", "--threads", "1",
                         "--json")
    assert code == 0, err
    r = json.loads(out)
    names = [x["name"] for x in r["latencies"]]
    assert names == ["baseline-77", f"encode {r['backend']}", "engine", f"text query {r['backend']} cold",
                     f"encode {r['backend']} cached", f"text query {r['backend']} cached"]
    assert r["backend"] in ("torch", "onnx") and r["backend_note"] == "" and r["encoder"] == "clap"
    base = r["latencies"][0]["p50_ms"]
    assert r["query_ratio"] == pytest.approx(r["latencies"][3]["p50_ms"] / base)
    assert r["encode_ratio"] == pytest.approx(r["latencies"][1]["p50_ms"] / base)
    assert r["tracks"] == 2 and r["queries"] == 3 and r["words"] == 10
    targets = {t["name"]: t for t in r["targets"]}
    assert list(targets) == ["encode cold", "whole text query cold", "encode cached"]
    for t, row in zip(targets.values(), (r["latencies"][1], r["latencies"][3], r["latencies"][4])):
        assert t["p50_ms"] == row["p50_ms"] and t["ratio"] == row["vs_baseline"]
        assert t["met_absolute"] == (t["p50_ms"] <= t["target_ms"])
        assert t["met_ratio"] == (t["ratio"] <= t["target_ratio"])
    assert targets["encode cold"]["target_ratio"] == pytest.approx(15 / 54)

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    code, out, err = run("bench", "text-speed", "--library", str(clap_library), "--queries", "2", "--threads", "1",
                         "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["export_cached"] is True and again["backend"] == r["backend"] and again["backend_note"] == ""


def test_bench_text_speed_needs_one_library(clap_library: Path) -> None:
    code, _, err = run("bench", "text-speed")
    assert code == 2 and "--library" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("bench", "text-speed", "--library", str(clap_library), "--encoder", "clap")
    assert code == 2 and "--frames" in err


def test_bench_text_ranking_compares_backends_with_a_matched_control(clap_library: Path) -> None:
    pytest.importorskip("onnxruntime")
    code, out, err = run("bench", "text-ranking", "--library", str(clap_library), "--queries", "6", "-k", "2",
                         "--threads", "1", "--json")
    assert code == 0, err
    r = json.loads(out)
    checks = {c["name"]: c for c in r["checks"]}
    assert set(checks) == {"onnx", "onnx-int8", "noise at int8's cosines"}
    assert checks["onnx"]["min_cosine"] >= 0.9999 and checks["onnx"]["agreement"]["identical"] == 1.0
    # the control moves every vector exactly as far as int8 did
    assert checks["noise at int8's cosines"]["min_cosine"] == pytest.approx(checks["onnx-int8"]["min_cosine"],
                                                                             abs=1e-5)
    assert r["queries"] == 6 and r["k"] == 2 and -1.0 <= r["spread"] <= 1.0


def test_bench_text_ranking_save_keeps_int8_out_of_auto_on_too_few_queries(clap_library: Path) -> None:
    pytest.importorskip("onnxruntime")
    code, out, err = run("bench", "text-ranking", "--library", str(clap_library), "--queries", "6", "-k", "2",
                         "--threads", "1", "--save")
    assert code == 0, err
    line = out.strip().splitlines()[-1]
    assert line.startswith("saved in ") and "int8 stays out of `auto`" in line
    assert "6 queries < 50" in line
    path = Path(line.removeprefix("saved in ").split(": ")[0])
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["queries"] == 6 and saved["k"] == 2 and saved["library"] == str(clap_library)
    assert onnx_text.auto_candidates(path.parent) == ("onnx",)


def test_bench_text_speed_on_a_demo_library_times_a_torch_baseline(tmp_path: Path) -> None:
    """The demo tower has ONNX backends too: the library's copy may run on ONNX, the baseline on torch."""
    pytest.importorskip("onnxruntime")
    music = tmp_path / "music"
    write_wav(music / "a.wav", tone_track([220, 660], 6, 2))
    code, _, err = run("index", str(music), "--library", str(tmp_path / "lib"), "--encoder", "demo")
    assert code == 0, err
    code, out, err = run("bench", "text-speed", "--library", str(tmp_path / "lib"), "--queries", "3", "--threads",
                         "1", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["encoder"] == "demo" and r["latencies"][0]["name"] == "baseline"
    assert "demo text tower in torch" in r["latencies"][0]["what"]
    assert r["backend"] in ("torch", "onnx") and r["backend_note"] == ""
    code, out, err = run("bench", "text-speed", "--library", str(tmp_path / "lib"), "--queries", "2", "--threads",
                         "1", "--json")
    assert code == 0 and json.loads(out)["export_cached"] is True, err  # the first run left export and choice
