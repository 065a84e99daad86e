"""The public Python API (`songseek.__all__`) as docs/api.md describes it.

The doc's ```python blocks run here in order, in a temporary folder whose music/ this module writes, so the
page cannot drift from the code; the other tests check what the doc promises but its blocks do not show.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
import subprocess
import sys
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import songseek
from songseek import (
    FilterLimits,
    FusionParams,
    Hit,
    IndexConfig,
    Library,
    LibraryLockedError,
    QueryError,
    SearchOptions,
    SongseekError,
    index_paths,
    load_encoder,
)
from tests.audio_helpers import SR, tone_track

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"
INIT = ROOT / "songseek_pkg" / "__init__.py"
# The files the doc's examples search and filter: name -> (tone frequencies, artist, genre, year).
MUSIC: dict[str, tuple[list[float], str, str, int]] = {
    "harbour-lights": ([220.0, 330.0], "Ada Lune", "ambient", 1998),
    "night-train": ([880.0, 440.0], "Ada Lune", "jazz", 2004),
    "paper-boats": ([523.0, 1046.0], "Bo Strand", "jazz", 1987),
    "slow-river": ([196.0, 294.0], "Cy Vale", "classical", 2011),
}


def write_music(folder: Path) -> None:
    """Four 20 s mono FLAC files at 16 kHz (the demo and fake encoders' rate), tagged as MUSIC says."""
    import soundfile as sf
    from mutagen.flac import FLAC

    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, (freqs, artist, genre, year)) in enumerate(MUSIC.items()):
        path = folder / f"{name}.flac"
        sf.write(path, tone_track(freqs, 10.0, seed).astype(np.float32), SR, subtype="PCM_16")
        tags = FLAC(path)
        tags.update({"title": name.replace("-", " ").title(), "artist": artist, "genre": genre, "date": str(year)})
        tags.save()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def synth_command(text: str) -> str:
    """The doc's one line that writes a music/ folder for a reader with no music at hand."""
    lines = [line for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
             for line in block.splitlines() if line.startswith("songseek synth")]
    assert len(lines) == 1, "docs/api.md lost its `songseek synth` line"
    return lines[0]


def run_synth_line(folder: Path) -> None:
    """Run the doc's line in a shell, as a reader would, with this interpreter's `songseek` first on PATH."""
    scripts = Path(sys.executable).parent
    assert (scripts / "songseek").exists() or (scripts / "songseek.exe").exists(), f"no songseek in {scripts}"
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(synth_command(DOC.read_text()), shell=True, cwd=folder, env=env, check=True,
                   capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("music", ["synth", "tagged-flac"])
def test_the_doc_examples_run_in_order(music: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block, in order: on what the doc's `songseek synth` line writes (untagged WAV, 0:34 to
    3:39) and on this module's tagged FLAC files, so the examples hold for more than one folder."""
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 10, "docs/api.md lost its examples"
    monkeypatch.chdir(tmp_path)
    if music == "synth":
        run_synth_line(tmp_path)
    else:
        write_music(tmp_path / "music")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "music").rglob("*"))
    namespace: dict[str, Any] = {"__name__": "docs_api"}
    for number, block in enumerate(blocks, start=1):
        # the name shows in a traceback: "docs/api.md python block 3", line N of that block
        exec(compile(block, f"docs/api.md python block {number}", "exec"), namespace)
    # the examples leave the reader's music/ as they found it
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "music").rglob("*")) == before
    lib = namespace["lib"]
    assert lib.n_tracks == 4
    tagged = lib.search("piano", k=10, where="artist IS NOT NULL AND year < 2000")
    # the filter block's tag example: nothing on synth's untagged files, the two tagged before 2000 here
    want = [] if music == "synth" else ["harbour-lights.flac", "paper-boats.flac"]
    assert sorted(Path(h.path).name for h in tagged) == want


# -- what the doc promises beyond its examples ------------------------------------------------------------

def test_import_songseek_stays_cheap() -> None:
    heavy = ("numpy", "pyarrow", "torch", "faiss", "duckdb", "av", "transformers")
    code = ("import sys, songseek; before = [m for m in HEAVY if m in sys.modules]; songseek.Library; "
            "songseek.index_paths; songseek.load_encoder; songseek.SongseekError; "
            "print(before, '|', [m for m in HEAVY if m in sys.modules])").replace("HEAVY", repr(heavy))
    before, after = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True).stdout.strip().split(" | ")
    assert before == "[]"
    assert set(ast.literal_eval(after)) <= {"numpy", "pyarrow"}  # the model, FAISS and DuckDB: on first use only


def test_every_export_resolves_and_the_errors_are_all_exported() -> None:
    from songseek.engine import errors

    for name in songseek.__all__:
        assert getattr(songseek, name) is not None
    assert set(songseek.__all__) <= set(dir(songseek))
    with pytest.raises(AttributeError):
        songseek.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
    every_error = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, SongseekError)}
    assert every_error <= set(songseek.__all__)
    assert all(issubclass(getattr(songseek, n), SongseekError) for n in every_error)


def test_type_checkers_see_every_export() -> None:
    """songseek's lazy __getattr__ returns Any to a type checker; the TYPE_CHECKING imports give the real types."""
    tree = ast.parse(INIT.read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in guarded.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    exports = songseek._EXPORTS
    assert seen == exports and sorted(songseek.__all__) == sorted(["__version__", *exports])


def _public_functions() -> Iterator[tuple[str, Any]]:
    for name in songseek.__all__:
        obj = getattr(songseek, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(value, (classmethod, staticmethod)):
                    value = value.__func__
                elif isinstance(value, property):
                    value = value.fget
                if inspect.isfunction(value):
                    yield f"{name}.{attr}", value


def test_every_public_function_and_method_is_fully_typed() -> None:
    checked = 0
    for qualname, fn in _public_functions():
        hints = typing.get_type_hints(fn)  # also fails when an annotation does not resolve
        params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
        assert set(params) <= set(hints) and "return" in hints, f"{qualname} lacks type hints"
        checked += 1
    assert checked > 20


def test_the_doc_names_every_export_and_every_option_field() -> None:
    doc = DOC.read_text()
    for name in songseek.__all__:
        assert name == "__version__" or f"`{name}" in doc, name
    for cls in (SearchOptions, Hit, IndexConfig, FusionParams, FilterLimits):
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in doc or f"{field.name}=" in doc, f"{cls.__name__}.{field.name}"


# -- fixes and library behaviour, on a small library built with the fake encoder --------------------------

@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("api")
    write_music(root / "music")
    index_paths(str(root / "music"), str(root / "lib"), load_encoder("fake"), IndexConfig(window_s=2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # built with random weights
        return Library.open(root / "lib")


def test_index_paths_takes_str_paths_a_single_source_or_a_list(tmp_path: Path) -> None:
    # before: a str source or library raised AttributeError ('str' object has no attribute 'expanduser')
    write_music(tmp_path / "music")
    fake = load_encoder("fake")
    one = index_paths(str(tmp_path / "music"), str(tmp_path / "a"), fake, IndexConfig(window_s=2.0))
    listed = index_paths([str(tmp_path / "music" / "night-train.flac")], tmp_path / "b", fake,
                         IndexConfig(window_s=2.0))
    assert (one.added, listed.added) == (4, 1)


def test_search_texts_refuses_a_bare_string(fake_lib: Library) -> None:
    with pytest.raises(QueryError, match="list of texts"):  # before: one search per character
        fake_lib.search_texts("piano")  # type: ignore[arg-type]


def test_excerpt_arguments_with_a_text_or_vector_are_refused(fake_lib: Library) -> None:
    q = np.ones(fake_lib.manifest.dim, np.float32)
    for call in (lambda: fake_lib.search("piano", start_s=5), lambda: fake_lib.search(vector=q, end_s=3),
                 lambda: fake_lib.search("piano", max_excerpt_s=5)):
        with pytest.raises(QueryError, match="audio= query"):  # before: silently ignored
            call()


def test_search_vectors_takes_the_same_keyword_options(fake_lib: Library) -> None:
    q = np.random.default_rng(0).standard_normal((2, fake_lib.manifest.dim)).astype(np.float32)
    assert fake_lib.search_vectors(q, k=2, rerank="none") == fake_lib.search_vectors(
        q, SearchOptions(k=2, rerank="none"))
    with pytest.raises(QueryError, match="not both"):
        fake_lib.search_vectors(q, SearchOptions(), k=2)


def test_multichannel_samples_get_a_mono_message_not_empty(fake_lib: Library) -> None:
    stereo = np.zeros((2, SR * 4), np.float32)
    for samples in (stereo, stereo.T):
        with pytest.raises(QueryError, match="mono"):  # before: "the audio query is empty"
            fake_lib.search(audio=samples)


def test_a_second_writer_is_refused_or_waits(tmp_path: Path) -> None:
    from songseek.engine.storage.writer import acquire_lock

    write_music(tmp_path / "music")
    fake = load_encoder("fake")
    index_paths(tmp_path / "music", tmp_path / "lib", fake, IndexConfig(window_s=2.0))
    fd = acquire_lock(tmp_path / "lib")
    try:
        with pytest.raises(LibraryLockedError):
            index_paths(tmp_path / "music", tmp_path / "lib", fake, IndexConfig(window_s=2.0))
    finally:
        os.close(fd)
    assert index_paths(tmp_path / "music", tmp_path / "lib", fake, IndexConfig(window_s=2.0), wait=True).unchanged == 4


def test_an_open_library_keeps_its_snapshot_while_a_writer_commits_and_deletes(tmp_path: Path) -> None:
    """Two more commits delete the files (index included) the open Library named: it still answers, exactly."""
    import shutil

    write_music(tmp_path / "music")
    fake, config = load_encoder("fake"), IndexConfig(window_s=2.0)
    index_paths(tmp_path / "music", tmp_path / "lib", fake, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = Library.open(tmp_path / "lib")
        named = set(old.manifest.files())
        for i in range(2):
            shutil.copy(tmp_path / "music" / "slow-river.flac", tmp_path / "music" / f"copy-{i}.flac")
            index_paths(tmp_path / "music", tmp_path / "lib", fake, config)
        new = Library.open(tmp_path / "lib")
    assert named - set(os.listdir(tmp_path / "lib")), "the writer was expected to delete the old generation"
    q = np.ones(old.manifest.dim, np.float32)
    assert (old.n_tracks, len(old.search(vector=q, k=10))) == (4, 4)
    assert (new.n_tracks, len(new.search(vector=q, k=10))) == (6, 6)


def test_filter_limits_and_fusion_params_are_checked_as_the_doc_says(fake_lib: Library) -> None:
    with pytest.raises(QueryError, match="timeout_s"):
        fake_lib.search(vector=np.ones(fake_lib.manifest.dim), where="year > 0",
                        filter_limits=FilterLimits(timeout_s=0))
    with pytest.raises(SongseekError, match="temperature"):
        FusionParams(temperature=0)


def test_random_weights_are_recorded_and_warned_about(fake_lib: Library) -> None:
    assert load_encoder("demo", random_weights=True).info.random_weights
    with pytest.warns(UserWarning, match="RANDOM weights"):
        Library.open(fake_lib.root)
