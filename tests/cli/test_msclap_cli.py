"""The MS-CLAP contract: `index --encoder msclap --random-weights` works without the msclap package and
`info --json` reports 1024 dimensions; text search and zero-shot tags run on that library too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from songseek.cli.main import app
from tests.audio_helpers import tone_track, write_wav
from tests.engine.encoder_helpers import isolate_hf

runner = CliRunner()
torch.set_num_threads(1)


def test_index_info_search_tag_with_native_msclap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_hf(monkeypatch, tmp_path)  # offline, empty HF cache: nothing may be downloaded
    monkeypatch.setitem(sys.modules, "msclap", None)  # `import msclap` would fail: the package is not used
    music = tmp_path / "music"
    write_wav(music / "low.wav", tone_track([110, 110], 5, 0))
    write_wav(music / "high.wav", tone_track([3000], 6, 1))
    lib = tmp_path / "lib"
    r = runner.invoke(app, ["index", str(music), "--library", str(lib), "--encoder", "msclap", "--random-weights",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["added"] == 2
    r = runner.invoke(app, ["info", "--library", str(lib), "--json"])
    info = json.loads(r.stdout)
    assert r.exit_code == 0 and (info["encoder"], info["dim"], info["random_weights"]) == ("msclap", 1024, True)
    assert (info["sample_rate"], info["checkpoint"], info["window_s"]) == (44100, "msclap-2023", 7.0)
    assert info["frames"] == 3  # 10 s: windows at 0 and 7 s (the last one repeat-filled); 6 s: one window
    r = runner.invoke(app, ["search", "a low hum", "--library", str(lib), "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert {Path(h["path"]).name for h in json.loads(r.stdout)} == {"low.wav", "high.wav"}
    labels = tmp_path / "labels.txt"
    labels.write_text("bass\nwhistle\n")
    r = runner.invoke(app, ["tag", "--library", str(lib), "--labels", str(labels), "--json"])
    assert r.exit_code == 0, r.output
    tagged = json.loads(r.stdout)[0]
    assert tagged["labels"] == ["bass", "whistle"] and len(tagged["tracks"]) == 2
