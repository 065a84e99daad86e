"""cli/bench_retrieval_cmds.py helpers against plain references: the --rerank list, the fusion overrides,
the long-run note's threshold and the dataset loader's option checks and missing-file note."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from songseek.cli.bench_retrieval_cmds import _fusion_changes, _load_dataset, _modes, planted_start_note
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import RERANK_MODES


def test_modes_keep_the_first_of_each_in_order() -> None:
    first, second = RERANK_MODES[0], RERANK_MODES[1]
    assert _modes(f" {second} ,{first},{second},, {first}") == [second, first]
    assert _modes(",".join(RERANK_MODES)) == list(RERANK_MODES)


@pytest.mark.parametrize("text", ["", " , ", "nonsense", f"{RERANK_MODES[0]},nonsense"])
def test_modes_refuse_unknown_or_none(text: str) -> None:
    with pytest.raises(UsageError, match="--rerank takes a comma list of"):
        _modes(text)


def test_fusion_changes_are_only_the_given_values_as_floats() -> None:
    assert _fusion_changes(None, None, None) == {}
    got = _fusion_changes(2, None, 0.5)
    assert got == {"kernel": 2.0, "temperature": 0.5} and isinstance(got["kernel"], float)
    assert _fusion_changes(0.0, 3, None) == {"kernel": 0.0, "stride": 3.0}  # 0 is given, not absent


def test_planted_note_starts_at_500_tracks_and_scales_with_the_square() -> None:
    assert planted_start_note(499, "engine", 1) is None
    note = planted_start_note(500, "engine", 1)
    assert note is not None and f"roughly {30 * 0.25 ** 2:.0f} min" in note and "all 500 tracks" in note
    assert f"roughly {30 * 9 / 3:.0f} min" in (planted_start_note(6000, "engine", 3) or "")


class _Datasets:
    """A stand-in for benchmarks.datasets that records which loader ran with what."""

    def __init__(self, missing: list[str]) -> None:
        self.calls: list[tuple] = []
        self.missing = missing

    def _data(self) -> SimpleNamespace:
        return SimpleNamespace(missing=self.missing, items=[1, 2])

    def load_manifest(self, path: Path, on_missing: str) -> SimpleNamespace:
        self.calls.append(("manifest", path, on_missing))
        return self._data()

    def load_song_describer(self, path: Path, audio: Path, on_missing: str) -> SimpleNamespace:
        self.calls.append(("song-describer", path, audio, on_missing))
        return self._data()

    def load_musiccaps(self, path: Path, audio: Path, on_missing: str, clip_layout: str) -> SimpleNamespace:
        self.calls.append(("musiccaps", path, audio, on_missing, clip_layout))
        return self._data()


@pytest.mark.parametrize("layout, call", [
    ("manifest", ("manifest", Path("d"), "error")),
    ("song-describer", ("song-describer", Path("d"), Path("a"), "error")),
    ("musiccaps", ("musiccaps", Path("d"), Path("a"), "error", "trimmed")),
    ("musiccaps-full", ("musiccaps", Path("d"), Path("a"), "error", "full")),
])
def test_each_layout_has_its_loader(layout: str, call: tuple) -> None:
    ds = _Datasets([])
    _load_dataset(ds, Path("d"), layout, Path("a"), "error")
    assert ds.calls == [call]


@pytest.mark.parametrize("layout, audio, missing, says", [
    ("manifest", None, "ignore", "--missing is skip or error"),
    ("musiccaps", None, "skip", "--layout musiccaps needs --audio-dir"),
    ("song-describer", None, "skip", "--layout song-describer needs --audio-dir"),
    ("csv", Path("a"), "skip", "--layout is manifest, musiccaps"),
])
def test_bad_dataset_options_are_usage_errors(layout: str, audio: Path | None, missing: str, says: str) -> None:
    ds = _Datasets([])
    with pytest.raises(UsageError, match=says):
        _load_dataset(ds, Path("d"), layout, audio, missing)
    assert ds.calls == []


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7])
def test_missing_files_are_counted_and_the_first_three_named(n: int, capsys: pytest.CaptureFixture[str]) -> None:
    missing = [f"/x/m{i}.wav" for i in range(n)]
    _load_dataset(_Datasets(missing), Path("d"), "manifest", None, "skip")
    err = capsys.readouterr().err
    if n == 0:
        assert err == ""
        return
    shown = ", ".join(missing[:3]) + (", ..." if n > 3 else "")
    assert err.startswith(f"note: {n} audio files missing ({shown}); evaluating the 2 ")
