"""cli/library_cmds.py behaviour test_library_cmds.py leaves open, against plain references: the shortfall
note's edges, m:ss, the positive-seconds check, info's nested values, the query-file and .npy readers, and
the one-line refusals of search, ingest and index (each names the option and the fix)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from songseek.cli.library_cmds import (
    _check_positive,
    _info_text,
    _load_query_vectors,
    _mmss,
    _read_query_file,
    _shortfall_note,
)
from songseek.cli.main import app
from songseek.engine.errors import QueryError
from tests.library_helpers import vector_table

runner = CliRunner()


def test_shortfall_note_edges() -> None:
    assert _shortfall_note(5, 0, 0, None, [0]) == "note: the library has no tracks (songseek index adds them)"
    assert _shortfall_note(5, 0, 0, "x > 1", [0]) == "note: the library has no tracks (songseek index adds them)"
    assert _shortfall_note(5, 0, 4, "x > 1", [0]) == 'no track matches --where "x > 1"'
    assert _shortfall_note(5, 5, 5, None, [5]) == ""  # -k reached exactly
    assert _shortfall_note(5, 3, 3, None, [3, 2]) == ""  # something else cut a query's hits
    assert _shortfall_note(5, 3, 3, None, [3, 3]) == "note: the library has 3 tracks; showing all of them"
    assert _shortfall_note(5, 1, 1, None, [1]) == "note: the library has 1 track; showing all of them"
    assert _shortfall_note(5, 1, 9, "a", [1]) == "note: 1 track matches --where; showing all of them"
    assert _shortfall_note(5, 2, 9, "a", [2]) == "note: 2 tracks match --where; showing all of them"
    assert _shortfall_note(5, 0, 9, None, [0]) == "note: the library has 0 tracks; showing all of them"
    assert _shortfall_note(5, 0, 9, "y\x1b", [0]) == 'no track matches --where "y\\x1b"'


@pytest.mark.parametrize("seconds", [0.0, 0.4, 0.5, 1.5, 59.4, 59.6, 60.0, 61.0, 599.5, 3600.2, 7322.7])
def test_mmss_rounds_to_the_second(seconds: float) -> None:
    s = round(seconds)  # Python's round: half to even, as the product's int(round(x))
    assert _mmss(seconds) == f"{s // 60}:{s % 60:02d}"


def test_mmss_examples() -> None:
    assert (_mmss(0), _mmss(5), _mmss(65.4), _mmss(3600)) == ("0:00", "0:05", "1:05", "60:00")


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), float("-inf")])
def test_check_positive_refuses_and_names_the_first_bad_option(value: float) -> None:
    with pytest.raises(QueryError) as err:
        _check_positive({"--a": 1.0, "--b": None, "--c": value, "--d": -5.0})
    assert str(err.value) == f"--c must be a finite number of seconds above 0 (got {value!r})"


def test_check_positive_accepts_positive_and_absent() -> None:
    _check_positive({"--a": 1e-9, "--b": None, "--c": 1e9})


def test_info_text_flattens_nested_values() -> None:
    assert _info_text({}) == "-"
    assert _info_text({"a": 1, "b": {"c": 2, "d": {"e": "x"}}, "f": {}}) == "a=1, b.c=2, b.d.e=x, f=-"
    assert _info_text({"a": None, "b": [1, 2]}) == "a=None, b=[1, 2]"
    assert _info_text(3.5) == "3.5" and _info_text("text") == "text"


def test_read_query_file(tmp_path: Path) -> None:
    f = tmp_path / "q.txt"
    f.write_text("a\n\n b \n", encoding="utf-8")
    assert _read_query_file(f) == ["a", "", " b "]
    f.write_text(" \n\t\n", encoding="utf-8")
    with pytest.raises(QueryError, match="no queries in the file"):
        _read_query_file(f)
    f.write_bytes(b"ok\n\xff\n")
    with pytest.raises(QueryError, match=r"not UTF-8 text \(invalid start byte at byte 3\)"):
        _read_query_file(f)
    with pytest.raises(QueryError, match="cannot read"):
        _read_query_file(tmp_path / "missing.txt")


def test_load_query_vectors(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.arange(4, dtype=np.float32))
    assert _load_query_vectors(tmp_path / "one.npy").shape == (1, 4)  # one row: one query
    np.save(tmp_path / "two.npy", np.ones((2, 3), np.float32))
    assert _load_query_vectors(tmp_path / "two.npy").shape == (2, 3)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(QueryError, match="a .npy file of Python objects, not of float vectors"):
        _load_query_vectors(tmp_path / "obj.npy")
    (tmp_path / "text.npy").write_text("piano\n")
    with pytest.raises(QueryError, match="no .npy header.*use --query-file"):
        _load_query_vectors(tmp_path / "text.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "two.npy").read_bytes()[:-5])
    with pytest.raises(QueryError, match="not a readable .npy file of float vectors"):
        _load_query_vectors(tmp_path / "cut.npy")


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("libmut")
    pq.write_table(vector_table(1, 8, seed=3, max_frames=2), tmp / "v.parquet")
    result = runner.invoke(app, ["ingest", str(tmp / "v.parquet"), "--library", str(tmp / "lib")])
    assert result.exit_code == 0 and result.stdout == f"ingested 1 track into {tmp / 'lib'}\n"  # not "1 tracks"
    return tmp / "lib"


@pytest.mark.parametrize("args, says", [
    ([], "give exactly one of QUERY, --audio, --query-vectors or --query-file"),
    (["--query-vectors", "q.npy", "--start", "1"],
     "--start cuts an --audio query's excerpt: give --audio FILE, or drop them"),
    (["--query-vectors", "q.npy", "--start", "1", "--end", "2"],
     "--start, --end cut an --audio query's excerpt: give --audio FILE, or drop them"),
    (["--query-vectors", "q.npy", "--where-timeout", "0"],
     "--where-timeout must be a finite number of seconds above 0 (got 0.0)"),
])
def test_search_refusals_are_one_line_exit_2(lib: Path, args: list[str], says: str) -> None:
    result = runner.invoke(app, ["search", "--library", str(lib), *args])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: {says}"


def test_a_folder_given_as_query_vectors_is_refused(lib: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", "--library", str(lib), "--query-vectors", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {tmp_path}: not a regular file; give a file"


def test_ingest_random_weights_without_encoder_is_refused(lib: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "none.parquet"), "--library", str(lib),
                                 "--random-weights"])
    assert result.exit_code == 2
    assert "--checkpoint and --random-weights describe an --encoder: pass --encoder NAME too" in result.stderr


@pytest.mark.parametrize("args, says", [
    (["--ray-gpus", "-1"], "--ray-workers, --ray-gpus and --ray-threads must be 0 or more"),
    (["--ray-threads", "-1"], "--ray-workers, --ray-gpus and --ray-threads must be 0 or more"),
    (["--batch-size", "0"], "--batch-size 0: must be above 0"),
])
def test_index_refusals_before_any_work(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "music").mkdir()
    result = runner.invoke(app, ["index", str(tmp_path / "music"), "--library", str(tmp_path / "lib"),
                                 "--encoder", "fake", *args])
    assert result.exit_code == 2 and says in result.stderr and not (tmp_path / "lib").exists()


def test_failures_text_lists_each_failure_in_local_time(tmp_path: Path) -> None:
    from tests.cli.test_library_cmds import tone_track, write_wav

    music = tmp_path / "music"
    write_wav(music / "ok.wav", tone_track([220], 10, 0))
    for i in range(7):
        (music / f"bad{i}.mp3").write_text("not audio")
    lib = tmp_path / "lib"
    result = runner.invoke(app, ["index", str(music), "--library", str(lib), "--encoder", "fake", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["failed"] == 7
    rows = json.loads(runner.invoke(app, ["failures", "--library", str(lib), "--json"]).stdout)
    text = runner.invoke(app, ["failures", "--library", str(lib)])
    assert text.exit_code == 0
    assert text.stderr.strip() == "7 failures (retried when the file changes, or with `songseek index " \
        "--retry-failed`)"
    lines = text.stdout.splitlines()
    assert len(lines) == 7
    for r, line in zip(rows, lines):
        when = datetime.datetime.fromtimestamp(r["time"]).strftime("%Y-%m-%d %H:%M:%S")  # local time
        assert line.split("\t") == [r["path"], r["error_class"], when, r["message"].replace("\n", "\\n")]


def test_index_names_at_most_five_non_audio_files(tmp_path: Path) -> None:
    from tests.cli.test_library_cmds import tone_track, write_wav

    write_wav(tmp_path / "a.wav", tone_track([220], 10, 0))
    names = [f"cover{i}.jpg" for i in range(6)]
    for n in names:
        (tmp_path / n).write_bytes(b"\xff\xd8\xff")
    sources = [str(tmp_path / "a.wav"), *(str(tmp_path / n) for n in names)]
    result = runner.invoke(app, ["index", *sources, "--library", str(tmp_path / "lib"), "--encoder", "fake"])
    assert result.exit_code == 0, result.output
    note = [ln for ln in result.stderr.splitlines() if ln.startswith("note: skipped")]
    assert note == [f"note: skipped 6 named file(s) that are not audio: {', '.join(names[:5])} ..."]
    result = runner.invoke(app, ["index", *sources[:3], "--library", str(tmp_path / "lib"), "--encoder", "fake"])
    note = [ln for ln in result.stderr.splitlines() if ln.startswith("note: skipped")]
    assert note == [f"note: skipped 2 named file(s) that are not audio: {', '.join(names[:2])}"]


def test_index_lists_twenty_failures_then_counts_the_rest(tmp_path: Path) -> None:
    from tests.cli.test_library_cmds import tone_track, write_wav

    music = tmp_path / "music"
    write_wav(music / "ok.wav", tone_track([220], 10, 0))
    for i in range(21):  # one more than are listed
        (music / f"bad{i:02d}.mp3").write_text("not audio")
    lib = tmp_path / "lib"
    result = runner.invoke(app, ["index", str(music), "--library", str(lib), "--encoder", "fake"])
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert len([ln for ln in err if ln.startswith("  failed: ")]) == 20
    assert f"  ... and 1 more: songseek failures --library {lib}" in err
    strict = runner.invoke(app, ["index", str(music), "--library", str(lib), "--encoder", "fake", "--strict",
                                 "--retry-failed", "--json"])
    assert strict.exit_code == 1 and len(json.loads(strict.stdout)["failures"]) == 21
