"""The native ``msclap`` backend (MS-CLAP 2023 without the msclap package).

A random MsClapModel is written out in msclap's own checkpoint format (``{"model": ...}``, msclap's key
names, fused qkv, the extra tensors msclap saves), loaded back through ``msclap_backend.load`` and compared
with the model itself; the key names are checked against the real 2023 layout
(tests/engine/msclap_2023_keys.txt); the mel front end against a numpy reference; tokens against
msclap's rules. The comparison with the msclap package itself is in test_msclap_reference.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from songseek.engine.encoders import gpt2_tokenizer, load_encoder, msclap_backend, msclap_model, msclap_weights
from songseek.engine.errors import UsageError, WeightsNotFoundError
from tests.engine.encoder_helpers import isolate_hf, save_tiny_tokenizer
from tests.engine.msclap_helpers import (
    msclap_layout,
    naive_log_mel,
    perturb,
    save_gpt2_sized_tokenizer,
    save_msclap_pth,
    slaney_mel,
    to_msclap,
)

torch.set_num_threads(1)
N = msclap_model.N_SAMPLES
TEXTS = ["calm piano", "heavy metal guitar solo with drums!", "x"]


@pytest.fixture(scope="module")
def native() -> msclap_model.MsClapModel:
    model = msclap_model.random_model(seed=3)
    perturb(model)
    return model


@pytest.fixture(scope="module")
def pth(native: msclap_model.MsClapModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_msclap_pth(native.state_dict(), tmp_path_factory.mktemp("w") / "CLAP_weights_2023.pth",
                           legacy_gpt2_buffers=True)


@pytest.fixture(scope="module")
def loaded(pth: Path) -> msclap_backend.MsClapEncoder:
    enc = msclap_backend.load(str(pth), "cpu", False)
    enc.set_tokenizer(gpt2_tokenizer.byte_tokenizer(), "test")  # offline: no GPT-2 files here
    return enc


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(gpt2_tokenizer.TOKENIZER_ENV, raising=False)
    return isolate_hf(monkeypatch, tmp_path)


def waves(n: int = 2, seconds: float = 7.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 44100)) / 44100
    rows = [rng.standard_normal(t.size) * 0.1, 0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)]
    return np.stack([rows[i % 2] for i in range(n)]).astype(np.float32)


def unit(x: torch.Tensor) -> np.ndarray:
    v = x.detach().float().numpy()
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_helper_inverse_uses_the_real_layouts_names(native: msclap_model.MsClapModel) -> None:
    """Every key the test writes in msclap's format exists, with its shape, in the real 2023 layout."""
    real = msclap_layout()
    written = {k: tuple(v.shape) for k, v in to_msclap(native.state_dict()).items()}
    assert {k for k in written if not k.endswith("attn_mask")} == {k for k in real if not k.endswith("attn_mask")}
    assert all(real[k] == shape for k, shape in written.items() if k in real)


def test_real_2023_layout_maps_completely() -> None:
    """All 357 keys of the real layout map onto MsClapModel with every weight covered and none left over."""
    layout = msclap_layout()
    assert len(layout) == 357
    sd = {k: torch.empty(shape, device="meta") for k, shape in layout.items()}
    mapped = msclap_weights.msclap_to_native(sd)
    with torch.device("meta"):
        model = msclap_model.MsClapModel()
    msclap_weights.check_state_dict(mapped, model, "2023 layout")  # raises on any gap, extra or shape
    dropped = [k for k in layout if not msclap_weights.msclap_to_native({k: sd[k]})]
    assert len(dropped) == 3 + 4 + 5  # stft real/imag + melW, tscam_conv/head, 5 shifted-window masks
    qkv = [k for k in mapped if ".attention.self.query.weight" in k]
    assert len(qkv) == 12 and len(mapped) == len(model.state_dict())


def test_checkpoint_round_trip_matches_the_model(native: msclap_model.MsClapModel, pth: Path,
                                                 loaded: msclap_backend.MsClapEncoder) -> None:
    enc = loaded
    info = enc.info
    assert (info.name, info.dim, info.sample_rate, info.native_window_s, info.text_max_tokens) == (
        "msclap", 1024, 44100, 7.0, 77)
    assert info.checkpoint == str(pth) and len(info.checkpoint_sha256) == 64 and not info.random_weights
    wav = waves()
    with torch.inference_mode():
        want = unit(native.embed_audio(torch.from_numpy(wav)))
    got = enc.embed_audio(wav)
    assert got.shape == (2, 1024) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    ids, mask = gpt2_tokenizer.tokenize(gpt2_tokenizer.byte_tokenizer(), TEXTS)
    with torch.inference_mode():
        want_t = unit(native.embed_text(ids, mask))
    np.testing.assert_allclose(enc.embed_text(TEXTS), want_t, atol=1e-5)


def test_windows_are_fitted_to_7s_deterministically(loaded: msclap_backend.MsClapEncoder) -> None:
    enc = loaded
    ten = waves(2, 10.0, seed=4)
    out = enc.embed_audio(ten)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out, enc.embed_audio(ten))
    np.testing.assert_allclose(out, enc.embed_audio(ten[:, :N]), atol=1e-6)  # the first 7 s, never a crop
    three = ten[:, : 3 * 44100]
    np.testing.assert_allclose(enc.embed_audio(three), enc.embed_audio(np.tile(three, (1, 3))[:, :N]), atol=1e-6)


def test_mel_front_end_matches_numpy_reference() -> None:
    """Same window, same spectrogram: torch front end vs MS-CLAP's settings written out in numpy."""
    wav = waves(2, 7.0, seed=1)
    with torch.device("meta"):
        model = msclap_model.MsClapModel()
    got = model.audio_features(torch.from_numpy(wav)).numpy()
    assert got.shape == (2, 1, 965, 64)
    for row in range(2):
        want = naive_log_mel(wav[row])
        loud = want > want.max() - 80  # below that, float32 rounding of tiny powers dominates
        assert np.abs(got[row, 0] - want)[loud].max() < 1e-3


def test_tokens_follow_msclap() -> None:
    tok = gpt2_tokenizer.byte_tokenizer()
    # GPT-2's own ids for single bytes: 'H' 39, 'i' 72, ' ' 220 ('Ġ'), '\n' 198 ('Ċ'), '!' 0; 50256 = <|endoftext|>
    assert tok.encode("Hi !\n<|endoftext|>") == [39, 72, 220, 0, 198, 50256]
    ids, mask = gpt2_tokenizer.tokenize(tok, ["Hi", "a" * 200])
    assert ids.shape == (2, 202) and ids.dtype == torch.long  # msclap does not cut at 77 (padding='max_length')
    assert ids[0, :4].tolist() == [39, 72, 220, 50256] and ids[0, 4:].eq(0).all()  # text + ' <|endoftext|>', '!'
    assert mask[0].tolist() == [1] * 4 + [0] * 198 and mask[1].eq(1).all() and ids[1, -1] == 50256
    short, short_mask = gpt2_tokenizer.tokenize(tok, ["Hi"])
    assert short.shape == (1, 4) and short_mask.eq(1).all()  # padded to the longest of the batch only


def test_text_embedding_reads_msclaps_token_and_ignores_padding(native: msclap_model.MsClapModel) -> None:
    """Batch embedding = each text alone, run through GPT-2 with no padding, read at msclap's index."""
    tok = gpt2_tokenizer.byte_tokenizer()
    ids, mask = gpt2_tokenizer.tokenize(tok, TEXTS)
    padded77 = torch.zeros((len(TEXTS), 77), dtype=torch.long)
    padded77[:, : ids.shape[1]] = ids
    mask77 = torch.zeros_like(padded77)
    mask77[:, : ids.shape[1]] = mask
    with torch.inference_mode():
        batch = unit(native.embed_text(ids, mask))
        batch77 = unit(native.embed_text(padded77, mask77))
        alone = []
        for text in TEXTS:
            row = torch.tensor([tok.encode(text + " <|endoftext|>")])
            hidden = native.text(input_ids=row).last_hidden_state[0]
            last = int((row != 0).sum()) - 1  # msclap: count of non-'!' ids - 1 (the '!' in a text shifts it)
            alone.append(native.text_projection(hidden[last][None]))
    np.testing.assert_allclose(batch, unit(torch.cat(alone)), atol=1e-5)
    np.testing.assert_allclose(batch, batch77, atol=1e-5)


def test_missing_weights_are_one_line(tmp_path: Path) -> None:
    for checkpoint in (None, str(tmp_path / "CLAP_weights_2023.pth")):
        with pytest.raises(WeightsNotFoundError) as err:
            load_encoder("msclap", checkpoint, "cpu", False)  # through the registry: no msclap package needed
        msg = str(err.value)
        assert "\n" not in msg and "--checkpoint PATH" in msg and "huggingface.co/microsoft/msclap" in msg
        if checkpoint:
            assert checkpoint in msg
    with pytest.raises(UsageError, match="is a directory"):
        msclap_backend.load(str(tmp_path), "cpu", False)


def test_bad_checkpoints_name_the_key(tmp_path: Path, native: msclap_model.MsClapModel) -> None:
    sd = to_msclap(native.state_dict())
    extra = "audio_encoder.base.htsat.mel_conv2d.weight"
    cases = {
        f"unknown weight '{extra}'": {**sd, extra: torch.zeros(1)},
        "lacks 1 weights, e.g. text.ln_f.bias": {k: v for k, v in sd.items() if k != "caption_encoder.base.ln_f.bias"},
        "weight text.wpe.weight has shape (77, 768)": {**sd, "caption_encoder.base.wpe.weight": torch.zeros(77, 768)},
    }
    for expected, state in cases.items():
        path = tmp_path / "bad.pth"
        torch.save({"model": state}, path)
        with pytest.raises(WeightsNotFoundError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
            msclap_backend.load(str(path), "cpu", False)
        assert "\n" not in str(err.value)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="cannot read MS-CLAP checkpoint"):
        msclap_backend.load(str(path), "cpu", False)


def test_text_without_gpt2_tokenizer_is_one_line(pth: Path, offline: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    save_tiny_tokenizer(pth.parent)  # a RoBERTa-style tokenizer beside the checkpoint: not GPT-2's, refused
    try:
        enc = msclap_backend.load(str(pth), "cpu", False)
        enc.embed_audio(waves(1))  # audio never needs the tokenizer
        with pytest.raises(WeightsNotFoundError) as err:  # exit code 2, as laion's and clap's missing tokenizer
            enc.embed_text(["jazz"])
        msg = str(err.value)
        assert "\n" not in msg and gpt2_tokenizer.TOKENIZER_ENV in msg and "gpt2" in msg
        assert err.value.exit_code == 2
        monkeypatch.setenv(gpt2_tokenizer.TOKENIZER_ENV, str(save_gpt2_sized_tokenizer(tmp_path / "gpt2")))
        assert enc.embed_text(["jazz"]).shape == (1, 1024)
        assert enc.tokenizer_source == str(tmp_path / "gpt2")
    finally:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (pth.parent / name).unlink(missing_ok=True)


def test_random_weights_work_offline_with_the_byte_stand_in(offline: Path) -> None:
    a = msclap_backend.load(None, "cpu", True)
    assert a.info.random_weights and a.info.checkpoint == "msclap-2023" and a.info.checkpoint_sha256 == ""
    assert a.info.dim == 1024
    wav = waves(1, 5.0, seed=2)
    text = a.embed_text(["slow sad piano", "jazz"])
    assert text.shape == (2, 1024) and a.tokenizer_source == gpt2_tokenizer.BYTE_TOKENIZER
    b = msclap_backend.load(None, "cpu", True)
    np.testing.assert_array_equal(a.embed_audio(wav), b.embed_audio(wav))  # seeded
    np.testing.assert_array_equal(text, b.embed_text(["slow sad piano", "jazz"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu(pth: Path, loaded: msclap_backend.MsClapEncoder) -> None:
    wav = waves(2)
    dev = msclap_backend.load(str(pth), "cuda", False)
    dev.set_tokenizer(gpt2_tokenizer.byte_tokenizer(), "test")
    np.testing.assert_allclose(dev.embed_audio(wav), loaded.embed_audio(wav), atol=1e-4)
    np.testing.assert_allclose(dev.embed_text(TEXTS), loaded.embed_text(TEXTS), atol=1e-4)


def test_other_files_name_the_file_and_what_to_use(tmp_path: Path, native: msclap_model.MsClapModel) -> None:
    """A LAION-CLAP file (as LAION saves it, or bare) given to msclap says to use --encoder laion; an unknown
    weight, a 2022 file and a qkv that cannot be split name the file, in one line, never a traceback."""
    from tests.engine.encoder_helpers import save_laion_pt, tiny_config, tiny_model, to_original

    laion = tiny_model(tiny_config())
    sd = to_msclap(native.state_dict())
    qkv = "audio_encoder.base.htsat.layers.0.blocks.0.attn.qkv.weight"
    cases = {
        "laion_bare.pt": ({"state_dict": to_original(laion.state_dict())}, "--encoder laion"),
        "2022.pth": ({"model": {"audio_encoder.base.conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3),
                                "caption_encoder.base.embeddings.word_embeddings.weight": torch.zeros(4, 2)}},
                     "2022 CNN14 + BERT model"),
        "qkv.pth": ({"model": {**sd, qkv: torch.zeros(2, 96)}}, "attn.qkv.weight"),
        "linear.pth": ({"model": torch.nn.Linear(2, 2).state_dict()}, "unknown weight 'weight'"),
    }
    paths = {name: tmp_path / name for name in cases}
    for name, (obj, _) in cases.items():
        torch.save(obj, paths[name])
    paths["laion.pt"] = save_laion_pt(laion, tmp_path / "laion.pt")
    cases["laion.pt"] = ({}, "--encoder laion")
    for name, (_, expected) in cases.items():
        with pytest.raises(WeightsNotFoundError) as err:
            msclap_backend.load(str(paths[name]), "cpu", False)
        msg = str(err.value)
        assert "\n" not in msg and str(paths[name]) in msg and expected in msg, msg


def test_mel_filters_other_than_msclaps_are_refused(tmp_path: Path, native: msclap_model.MsClapModel) -> None:
    """CLAP_weights_2023.pth stores the mel filters its HTSAT used (32 kHz, 50-14,000 Hz, from msclap's config.py):
    songseek computes the same; a file holding others (e.g. the YAML's 44.1 kHz, 8 kHz top) is refused."""
    sd = to_msclap(native.state_dict())
    key = "audio_encoder.base.htsat.logmel_extractor.melW"
    sd[key] = torch.from_numpy(slaney_mel(44100, 1024, 64, 50.0, 8000.0)).float()
    path = tmp_path / "other_mel.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(WeightsNotFoundError, match="melW") as err:
        msclap_backend.load(str(path), "cpu", False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
