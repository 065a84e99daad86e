"""_torch_util details the encoder tests left open (found by a mutation sweep): which HF_HUB_OFFLINE values
count, window validation, the front-end tolerance, where a state dict is looked for in a checkpoint, legacy
(non-zip) files, and text batching. Small tensors and plain-Python references only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from songseek.engine.encoders import _torch_util, clap_hf, demo, msclap_model
from songseek.engine.encoders._torch_util import check_front_end, check_windows, fit_windows, read_state_dict
from songseek.engine.errors import UsageError, WeightsNotFoundError
from tests.engine.encoder_helpers import tiny_config
from tests.engine.msclap_helpers import slaney_mel


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("On", True),
    ("", False), ("0", False), ("false", False), ("no", False), ("off", False), ("2", False),
])
def test_offline_reads_hf_hub_offline_as_huggingface_hub_does(monkeypatch: pytest.MonkeyPatch, value: str,
                                                                expected: bool) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert _torch_util.offline() is expected
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert _torch_util.offline() is False


def test_check_windows_shapes_and_dtypes() -> None:
    one = np.arange(5, dtype=np.float64) / 10
    got = check_windows(one)
    assert got.shape == (1, 5) and got.dtype == np.float32 and got.flags.c_contiguous
    assert got[0].tolist() == [np.float32(v) for v in one.tolist()]
    strided = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    got = check_windows(strided)
    assert got.flags.c_contiguous and got.tolist() == [[r * 6 + c for c in (0, 2, 4)] for r in range(4)]
    for bad in (np.zeros((3, 0), np.float32), np.zeros(0, np.float32), np.zeros((2, 2, 2), np.float32)):
        with pytest.raises(UsageError, match="non-empty"):
            check_windows(bad)
    with pytest.raises(UsageError, match="floating point"):
        check_windows(np.zeros((1, 4), np.int32))
    with pytest.raises(UsageError):  # an empty window is refused before any fill mode divides by its length
        fit_windows(np.zeros((2, 0), np.float32), 10, mode="repeat")


def test_fit_windows_refuses_an_unknown_fill_mode() -> None:
    with pytest.raises(ValueError, match="unknown fill mode 'zeros'"):
        fit_windows(np.ones((1, 3), np.float32), 10, mode="zeros")


MSCLAP_FILTERS = slaney_mel(32000, 1024, 64, 50.0, 14000.0).astype(np.float32)


def test_front_end_tolerance_passes_rounding_and_refuses_a_one_percent_band_shift() -> None:
    key = "audio_encoder.base.htsat.logmel_extractor.melW"
    rounded = torch.from_numpy(MSCLAP_FILTERS).half().float()  # float16 storage: rounding only
    check_front_end(key, rounded, MSCLAP_FILTERS, "msclap's", "x.pth")
    check_front_end(key, torch.empty(MSCLAP_FILTERS.shape, device="meta"), MSCLAP_FILTERS, "msclap's", "x.pth")
    peak = float(MSCLAP_FILTERS.max())
    off = MSCLAP_FILTERS.copy()
    off[10, 3] += 0.02 * peak  # one coefficient 2 % of the peak away
    shifted = slaney_mel(32000, 1024, 64, 50.0, 14000.0 * 1.01).astype(np.float32)
    for bad in (torch.from_numpy(off), torch.from_numpy(shifted), torch.from_numpy(MSCLAP_FILTERS[:, :63].copy()),
                torch.empty((513, 63), device="meta")):
        with pytest.raises(WeightsNotFoundError, match=r"x\.pth: .*melW .*not the audio front end"):
            check_front_end(key, bad, MSCLAP_FILTERS, "msclap's", "x.pth")


def test_front_end_stft_weights_must_be_the_fft_size() -> None:
    key = "audio_encoder.base.htsat.spectrogram_extractor.stft.conv_real.weight"
    check_front_end(key, torch.empty((513, 1, 1024), device="meta"), MSCLAP_FILTERS, "f", "x.pth")
    for shape in ((513, 1, 1022), (512, 1, 1024), (513, 2, 1024), (513, 1024)):
        with pytest.raises(WeightsNotFoundError, match="conv_real"):
            check_front_end(key, torch.empty(shape, device="meta"), MSCLAP_FILTERS, "f", "x.pth")


SD = {"caption_encoder.projection.linear1.weight": torch.arange(6.0).reshape(2, 3),
      "logit_scale": torch.tensor(2.5)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "bare", "empty_state_dict", "non_tensor_state_dict"])
def test_state_dict_is_found_where_each_trainer_saves_it(tmp_path: Path, wrap: str) -> None:
    obj = {"state_dict": SD, "model": {"junk": 1}, "epoch": 3} if wrap == "state_dict" else \
        {"model": SD, "optimizer": {"lr": 0.1}} if wrap == "model" else \
        dict(SD) if wrap == "bare" else \
        {"state_dict": {}, "model": SD} if wrap == "empty_state_dict" else \
        {"state_dict": {"step": 4}, "model": SD}
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    assert _same(read_state_dict(path, "msclap"), SD)


def test_no_state_dict_of_tensors_is_one_line(tmp_path: Path) -> None:
    objs: list[object] = [{"model": {"a": torch.zeros(1), "b": 3}}, {"model": {}}, [torch.zeros(1)], {"epoch": 1}]
    for obj in objs:
        path = tmp_path / "w.pth"
        torch.save(obj, path)
        with pytest.raises(WeightsNotFoundError, match=r"w\.pth is not an MS-CLAP checkpoint \(no state dict"):
            read_state_dict(path, "msclap")


def test_another_encoders_file_is_named_even_with_module_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {"module.text_branch.x": torch.zeros(1), "module.logit_scale_a": torch.zeros(1)}}, path)
    with pytest.raises(WeightsNotFoundError, match="is not an MS-CLAP checkpoint: it is a LAION-CLAP checkpoint; "
                                                   "use --encoder laion"):
        read_state_dict(path, "msclap")
    assert list(read_state_dict(path, "laion")) == ["module.text_branch.x", "module.logit_scale_a"]
    mixed = tmp_path / "mixed.pth"  # its own towers present: not refused for holding another's key too
    torch.save({"caption_encoder.a": torch.zeros(1), "text_model.b": torch.zeros(1)}, mixed)
    assert list(read_state_dict(mixed, "msclap")) == ["caption_encoder.a", "text_model.b"]


def test_a_legacy_pickle_file_with_python_objects_is_not_called_a_bad_download(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save's legacy (non-zip) format starts with a pickle opcode, not 'PK': still a PyTorch file, so the
    line names the refused object and the opt-in, not an HTML page."""
    monkeypatch.delenv(_torch_util.UNSAFE_PICKLE_ENV, raising=False)
    path = tmp_path / "legacy.pth"
    torch.save({"model": SD, "where": Path("/x")}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    with pytest.raises(WeightsNotFoundError, match=r"pickled Python objects .*SONGSEEK_UNSAFE_PICKLE=1") as err:
        read_state_dict(path, "msclap")
    assert "HTML" not in str(err.value)
    monkeypatch.setenv(_torch_util.UNSAFE_PICKLE_ENV, "1")
    assert _same(read_state_dict(path, "msclap"), SD)
    monkeypatch.setenv(_torch_util.UNSAFE_PICKLE_ENV, "yes")  # only "1" opts in
    with pytest.raises(WeightsNotFoundError, match="pickled Python objects"):
        read_state_dict(path, "msclap")


def test_a_legacy_file_of_tensors_loads(tmp_path: Path) -> None:
    """Legacy files cannot be memory-mapped: read them the ordinary way."""
    path = tmp_path / "legacy.pth"
    torch.save({"model": SD}, path, _use_new_zipfile_serialization=False)
    assert _same(read_state_dict(path, "msclap"), SD)


@pytest.mark.parametrize("size", [1, 2, 3, 64])
def test_text_batches_are_consecutive_chunks(size: int) -> None:
    texts = [f"t{i}" for i in range(7)]
    want: list[list[str]] = []
    for t in texts:
        if not want or len(want[-1]) == size:
            want.append([])
        want[-1].append(t)
    assert _torch_util.text_batches(texts, size) == want
    assert _torch_util.text_batches([], size) == []


def test_text_batches_default_size_and_bad_input() -> None:
    assert [len(b) for b in _torch_util.text_batches(["a"] * 130)] == [64, 64, 2]
    with pytest.raises(UsageError, match="not a single string"):
        _torch_util.text_batches("jazz")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="got int"):
        _torch_util.text_batches(["a", 3])  # type: ignore[list-item]


def test_seeded_cpu_rng_seeds_the_cpu_generator_only_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a random model must not reseed a GPU user's CUDA generators (torch.manual_seed does) nor
    move the caller's CPU stream."""
    reseeded: list[str] = []
    monkeypatch.setattr(torch, "manual_seed", lambda seed: reseeded.append(f"torch.manual_seed({seed})"))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(f"cuda({seed})"))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(f"cuda({seed})"))
    with torch.random.fork_rng(devices=[]):  # this test's seeding stays here
        torch.random.default_generator.manual_seed(77)
        want_after = torch.rand(4)
        torch.random.default_generator.manual_seed(77)
        with _torch_util.seeded_cpu_rng(5):
            inside = torch.rand(3)
        after = torch.rand(4)
    assert torch.equal(inside, torch.rand(3, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(after, want_after)
    assert reseeded == []


def test_random_model_builders_seed_through_the_cpu_only_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(seed: int) -> None:
        raise AssertionError("a random model reseeded torch globally (CUDA generators included)")

    monkeypatch.setattr(torch, "manual_seed", refuse)
    monkeypatch.setattr(msclap_model, "MsClapModel", lambda: torch.nn.Linear(2, 2))
    clap_hf.random_model(tiny_config())
    msclap_model.random_model(seed=1)
    demo.load(None, "cpu", True)
