"""What a random-weight MS-CLAP library records: never a ``--checkpoint`` it did not read.

``msclap --random-weights`` builds the fixed 2023 architecture with seeded weights and reads nothing from
``--checkpoint`` (unlike ``clap``/``laion``/``demo``, whose random models take their architecture from the
checkpoint they record). So the manifest says ``checkpoint: "msclap-2023"``, no sha256, random weights,
and a later open/search rebuilds the same encoder from that record even when the file is gone.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from songseek import IndexConfig, Library, index_paths, load_encoder
from songseek.cli.main import app
from songseek.engine.storage.manifest import check_compatible, read_manifest
from tests.audio_helpers import tone_track, write_wav
from tests.engine.encoder_helpers import isolate_hf

runner = CliRunner()
torch.set_num_threads(1)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    isolate_hf(monkeypatch, tmp_path)  # offline: nothing is downloaded
    monkeypatch.delenv("SONGSEEK_GPT2_TOKENIZER", raising=False)
    write_wav(tmp_path / "music" / "a.wav", tone_track([220], 3, 0))
    fake = tmp_path / "weights" / "CLAP_weights_2023.pth"
    fake.parent.mkdir()
    fake.write_bytes(b"not a checkpoint: random weights never read it")
    return tmp_path, fake


def test_cli_random_weights_do_not_record_the_checkpoint(setup: tuple[Path, Path]) -> None:
    tmp_path, fake = setup
    lib = tmp_path / "lib"
    r = runner.invoke(app, ["index", str(tmp_path / "music"), "--library", str(lib), "--encoder", "msclap",
                            "--random-weights", "--checkpoint", str(fake), "--json"])
    assert r.exit_code == 0, r.output
    enc = read_manifest(lib).encoder
    assert (enc.name, enc.checkpoint, enc.checkpoint_sha256, enc.random_weights) == ("msclap", "msclap-2023", "",
                                                                                     True)
    info = json.loads(runner.invoke(app, ["info", "--library", str(lib), "--json"]).stdout)
    assert (info["checkpoint"], info["random_weights"]) == ("msclap-2023", True)
    assert str(fake) not in (lib / "manifest.json").read_text()
    fake.unlink()  # the library never depended on it
    r = runner.invoke(app, ["search", "a low hum", "--library", str(lib), "-k", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert [Path(h["path"]).name for h in json.loads(r.stdout)] == ["a.wav"]
    write_wav(tmp_path / "music" / "b.wav", tone_track([880], 3, 1))
    other = tmp_path / "elsewhere.pth"  # adding to it with another (unread) --checkpoint is the same encoder
    r = runner.invoke(app, ["index", str(tmp_path / "music"), "--library", str(lib), "--encoder", "msclap",
                            "--random-weights", "--checkpoint", str(other), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["added"] == 1 and read_manifest(lib).encoder.checkpoint == "msclap-2023"


def test_api_random_weights_reopen_the_same_encoder(setup: tuple[Path, Path]) -> None:
    tmp_path, fake = setup
    with_file = load_encoder("msclap", str(fake), "cpu", random_weights=True)
    assert (with_file.info.checkpoint, with_file.info.checkpoint_sha256) == ("msclap-2023", "")
    lib = tmp_path / "lib"
    index_paths(tmp_path / "music", lib, with_file, IndexConfig())
    manifest = read_manifest(lib)
    assert manifest.encoder == with_file.info
    fake.unlink()
    rebuilt = load_encoder(manifest.encoder.name, manifest.encoder.checkpoint, "cpu", manifest.encoder.random_weights)
    check_compatible(manifest, rebuilt.info, lib)  # what Library.encoder does on open
    wav = (0.1 * np.random.default_rng(2).standard_normal((1, 7 * 44100))).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.embed_audio(wav), with_file.embed_audio(wav))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        library = Library.open(lib)
        hits = library.search("a low hum", k=1)
    assert [Path(h.path).name for h in hits] == ["a.wav"]
    assert library.encoder.info.checkpoint == "msclap-2023"
