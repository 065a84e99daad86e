"""The contracts scripts rely on: `index`, `ingest`, `info --json`, `search --json` and batch queries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.storage.writer import acquire_lock
from tests.audio_helpers import tone_track, write_wav
from tests.library_helpers import vector_table

runner = CliRunner()
INFO_KEYS = {"tracks", "frames", "encoder", "checkpoint", "dim", "window_s", "hop_s", "index", "random_weights",
             "failures"}
HIT_KEYS = {"rank", "track_id", "path", "score", "start_s", "end_s"}


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def audio_library(tmp_path: Path) -> Path:
    music = tmp_path / "music"
    write_wav(music / "low.wav", tone_track([110, 110], 10, 0))
    write_wav(music / "high.wav", tone_track([3000, 3000, 110], 10, 1))
    write_wav(music / "mid.wav", tone_track([440], 10, 2))
    (music / "broken.mp3").write_text("not audio")
    lib = tmp_path / "lib"
    code, out, err = run("index", str(music), "--library", str(lib), "--encoder", "fake", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["added"], report["failed"]) == (3, 1)
    return lib


def test_info_json_has_the_contract_keys(audio_library: Path) -> None:
    code, out, _ = run("info", "--library", str(audio_library), "--json")
    info = json.loads(out)
    assert code == 0 and INFO_KEYS <= set(info)
    assert (info["tracks"], info["frames"], info["failures"], info["encoder"]) == (3, 6, 1, "fake")
    assert (info["window_s"], info["hop_s"], info["dim"], info["random_weights"]) == (10.0, 10.0, 32, True)


def test_search_by_audio_json_and_strict_exit(audio_library: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    write_wav(clip, tone_track([3000], 10, 9))
    code, out, _ = run("search", "--audio", str(clip), "--library", str(audio_library), "-k", "2", "--json",
                       "--rerank", "max")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 2 and HIT_KEYS <= set(hits[0])
    assert Path(hits[0]["path"]).name == "high.wav" and hits[0]["rank"] == 1
    assert hits[0]["end_s"] <= 20.0  # one of the two 3000 Hz windows, not the 110 Hz tail
    code, _, err = run("index", str(tmp_path / "music"), "--library", str(audio_library), "--strict",
                       "--retry-failed")
    assert code == 1


def test_query_file_prints_one_json_line_per_line_in_order(audio_library: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text("low drone\n\nbright whistle\n  \nmid tone\n")
    code, out, err = run("search", "--query-file", str(queries), "--library", str(audio_library), "-k", "3")
    assert code == 0, err
    # a blank line gets [], so output line n answers input line n (paste q.txt out.jsonl lines them up)
    assert [len(json.loads(line)) for line in out.splitlines()] == [3, 0, 3, 0, 3]
    code, out, err = run("search", "--query-file", str(queries), "--library", str(audio_library), "-k", "9")
    assert code == 0 and len(out.splitlines()) == 5
    assert _not_warnings(err) == ["note: the library has 3 tracks; showing all of them"], err


def _not_warnings(err: str) -> list[str]:
    """stderr without the warning every search of a fake-encoder (random weights) library starts with."""
    return [line for line in err.splitlines() if "RANDOM weights" not in line]


def test_ingest_then_query_vectors(tmp_path: Path) -> None:
    table = vector_table(20, 8, seed=2)
    pq.write_table(table, tmp_path / "v.parquet")
    code, out, err = run("ingest", str(tmp_path / "v.parquet"), "--library", str(tmp_path / "lib"))
    assert code == 0, err
    q = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    code, out, _ = run("search", "--query-vectors", str(tmp_path / "q.npy"), "--library", str(tmp_path / "lib"),
                       "-k", "5", "--where", "artist = 'artist1'")
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert code == 0 and len(rows) == 3 and all(len(r) == 5 for r in rows)
    # The same first hit as a brute-force best window over the matching tracks.
    emb = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.asarray(table.column("track_id").to_pylist())
    artists = np.asarray(table.column("artist").to_pylist())
    code, out, _ = run("search", "--query-vectors", str(tmp_path / "q.npy"), "--library", str(tmp_path / "lib"),
                       "-k", "1", "--rerank", "none", "--where", "artist = 'artist1'")
    for qi, line in enumerate(out.strip().splitlines()):
        sims = np.where(artists == "artist1", emb @ (q[qi] / np.linalg.norm(q[qi])), -np.inf)
        assert json.loads(line)[0]["track_id"] == ids[int(np.argmax(sims))]


@pytest.mark.parametrize("args, message", [
    (["-k", "0"], "k must be at least 1"),
    (["--rerank", "best"], "unknown rerank mode"),
    (["--where", "nonexistent > 1"], "bad where predicate"),
])
def test_bad_search_arguments_exit_2_with_one_line(audio_library: Path, args: list[str], message: str) -> None:
    code, _, err = run("search", "low", "--library", str(audio_library), *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_missing_library_and_missing_weights_are_one_line(tmp_path: Path) -> None:
    code, _, err = run("info", "--library", str(tmp_path / "nope"))
    assert code == 2 and "no library at" in err
    write_wav(tmp_path / "music" / "a.wav", tone_track([220], 10, 0))  # audio to index: the weights are missing
    code, _, err = run("index", str(tmp_path / "music"), "--library", str(tmp_path / "lib"), "--encoder", "laion",
                       "--checkpoint", str(tmp_path / "missing.pt"))
    assert code == 2 and "missing.pt" in err and len(err.strip().splitlines()) == 1


def test_demo_runs_end_to_end_on_three_tracks(tmp_path: Path) -> None:
    code, out, err = run("demo", "--out", str(tmp_path / "demo"), "--tracks", "3", "-k", "3")
    assert code == 0, err
    assert "three searches" in out and "of 3 queries" in out


def test_demo_with_another_seed_replaces_its_set_instead_of_mixing_two(tmp_path: Path) -> None:
    from songseek.engine.query.search import Library

    out_dir = tmp_path / "demo"
    for seed in ("5", "6"):
        code, out, err = run("demo", "--out", str(out_dir), "--tracks", "3", "--seed", seed, "-k", "3")
        assert code == 0, err
    assert "replacing the demo set of seed 5 (3 tracks)" in out
    assert len(list((out_dir / "music" / "audio").iterdir())) == 3
    assert Library.open(out_dir / "library").n_tracks == 3


def test_nprobe_saved_in_the_library_is_every_search_default(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.engine.query.search import Library
    from songseek.engine.storage import index as faiss_index

    lib = tmp_path / "lib"
    pq.write_table(vector_table(40, 8, seed=3), tmp_path / "a.parquet")
    pq.write_table(vector_table(45, 8, seed=4).slice(0, 200), tmp_path / "b.parquet")

    def info() -> dict[str, Any]:
        code, out, err = run("info", "--library", str(lib), "--json")
        assert code == 0, err
        return json.loads(out)

    code, _, err = run("ingest", str(tmp_path / "a.parquet"), "--library", str(lib), "--index-factory",
                       "IVF8,Flat", "--nprobe", "3")
    assert code == 0, err
    assert info()["index_nprobe"] == 3
    code, _, err = run("ingest", str(tmp_path / "b.parquet"), "--library", str(lib), "--index-factory", "IVF8,Flat")
    assert code == 0 and info()["index_nprobe"] == 3  # kept when not given

    probes: list[int | None] = []
    real = faiss_index.search

    def spy(index: object, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        probes.append(nprobe)  # the engine passes nprobe per call
        return real(index, queries, k, nprobe)

    monkeypatch.setattr(faiss_index, "search", spy)
    q = np.random.default_rng(5).standard_normal(8).astype(np.float32)
    opened = Library.open(lib)
    opened.search(vector=q, k=3)
    opened.search(vector=q, k=3, nprobe=6)  # a query's own --nprobe wins
    assert probes == [3, 6]

    code, _, err = run("ingest", str(tmp_path / "b.parquet"), "--library", str(lib), "--index-factory", "IVF8,Flat",
                       "--nprobe", "0")
    assert code == 0 and info()["index_nprobe"] == faiss_index.default_nprobe("IVF8,Flat", info()["index_frames"])
    code, _, err = run("ingest", str(tmp_path / "b.parquet"), "--library", str(lib), "--nprobe", "-2")
    assert code == 2 and "nprobe must be 0 (automatic) or more" in err


def _files(lib: Path) -> dict[str, bytes]:
    """Every stored byte of a library (the lock file included): a refusal must leave all of it as it was."""
    return {p.name: p.read_bytes() for p in sorted(lib.iterdir()) if p.is_file()}


def _spy_loader(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Replace the encoder loader with one that records its call and then refuses (no model ever loads)."""
    from songseek.engine import encoders
    from songseek.engine.errors import WeightsNotFoundError

    calls: list[tuple[str, str | None]] = []

    def refuse(name: str, checkpoint: str | None = None, *args: object) -> None:
        calls.append((name, checkpoint))
        raise WeightsNotFoundError(f"test loader: {name} was asked to load")

    monkeypatch.setattr(encoders, "load_encoder", refuse)
    return calls


def test_index_with_another_encoder_is_refused_from_the_manifest_before_any_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    music = tmp_path / "music"
    write_wav(music / "a.wav", tone_track([220], 10, 0))
    lib = tmp_path / "lib"
    code, _, err = run("index", str(music), "--library", str(lib), "--encoder", "demo", "--text-backend", "torch")
    assert code == 0, err
    before = _files(lib)
    calls = _spy_loader(monkeypatch)
    for other in ("fake", "laion"):
        code, out, err = run("index", str(music), "--library", str(lib), "--encoder", other)
        assert code == 2 and out == "" and calls == []
        assert err.strip() == (f"error: {lib} was built with another encoder: 'demo' (checkpoint bundled:demo-v1), "
                               f"not '{other}' as --encoder asks; drop --encoder to use the library's own, "
                               "or index into a new library")
    assert _files(lib) == before
    # the control: the library's own encoder, named or not, reaches the loader with the library's checkpoint
    for named in ((), ("--encoder", "demo")):
        code, _, err = run("index", str(music), "--library", str(lib), *named)
        assert code == 2 and "test loader: demo" in err
    assert calls == [("demo", "bundled:demo-v1")] * 2 and _files(lib) == before


def test_index_of_a_non_audio_file_is_refused_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audio_library: Path) -> None:
    readme = tmp_path / "README.txt"
    readme.write_text("not music\n")
    before = _files(audio_library)
    calls = _spy_loader(monkeypatch)
    for lib in (audio_library, tmp_path / "new-lib"):
        code, out, err = run("index", str(readme), "--library", str(lib))
        assert code == 2 and out == "" and calls == []
        assert len(err.strip().splitlines()) == 1
        assert err.startswith(f"error: {readme} is not an audio format songseek reads (")
        assert ".flac" in err and ".mp3" in err and ".wav" in err
    assert _files(audio_library) == before and not (tmp_path / "new-lib").exists()


def test_a_non_audio_file_inside_a_folder_is_skipped_not_refused(tmp_path: Path) -> None:
    music = tmp_path / "music"
    write_wav(music / "a.wav", tone_track([220], 10, 0))
    (music / "README.txt").write_text("liner notes\n")
    code, out, err = run("index", str(music), "--library", str(tmp_path / "lib"), "--encoder", "fake", "--json")
    assert code == 0, err
    assert (json.loads(out)["added"], json.loads(out)["failed"]) == (1, 0)


def test_a_glob_that_names_cover_art_indexes_the_music_and_says_what_it_skipped(tmp_path: Path) -> None:
    music = tmp_path / "album"  # what `songseek index album/*` passes: the songs, the cover and a playlist
    write_wav(music / "01.wav", tone_track([220], 10, 0))
    write_wav(music / "02.wav", tone_track([330], 10, 1))
    (music / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not music")
    (music / "album.m3u").write_text("01.wav\n02.wav\n")
    named = sorted(music.iterdir())
    code, out, err = run("index", *map(str, named), "--library", str(tmp_path / "lib"), "--encoder", "fake",
                         "--json")
    assert code == 0, err
    assert (json.loads(out)["added"], json.loads(out)["failed"]) == (2, 0)
    assert "note: skipped 2 named file(s) that are not audio: album.m3u, cover.jpg" in err
    # only non-audio files named: still refused, naming the first and counting the rest
    code, out, err = run("index", str(music / "album.m3u"), str(music / "cover.jpg"), "--library",
                         str(tmp_path / "lib2"), "--encoder", "fake")
    assert code == 2 and err.startswith(f"error: {music / 'album.m3u'} (and 1 more named files) is not an audio")
    assert not (tmp_path / "lib2").exists()


def test_info_on_a_flat_index_says_exact_and_gives_no_nprobe(audio_library: Path, tmp_path: Path) -> None:
    code, out, err = run("info", "--library", str(audio_library))
    assert code == 0, err
    lines = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}
    assert lines["index"] == "Flat"
    assert lines["index_status"] == ("up to date (exact Flat index: every search scans every frame, nprobe does "
                                     "not apply; auto moves to IVF at 50,000 frames)")
    assert lines["index_nprobe"] == "- (Flat index: not IVF, nothing to probe)"
    code, out, _ = run("info", "--library", str(audio_library), "--json")
    assert json.loads(out)["index_nprobe"] == 0  # the JSON contract: 0 when the index is not IVF
    # --nprobe on a Flat library is saved, and the run says it has no effect yet
    code, _, err = run("index", str(tmp_path / "music"), "--library", str(audio_library), "--nprobe", "4")
    assert code == 0 and "note: --nprobe 4 is saved; it takes effect once the index is IVF (now Flat" in err


def test_info_on_an_ivf_index_keeps_the_ivf_status(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    pq.write_table(vector_table(40, 8, seed=3), tmp_path / "a.parquet")
    code, _, err = run("ingest", str(tmp_path / "a.parquet"), "--library", str(lib), "--index-factory", "IVF8,Flat")
    assert code == 0, err
    code, out, _ = run("info", "--library", str(lib))
    assert "index_status: up to date (IVF; retrained past 2,476 frames)" in out  # trained on its 619 frames
    assert "nothing to probe" not in out and "exact Flat" not in out


def test_the_ingest_commands_errors_suggest_work(tmp_path: Path) -> None:
    """Both errors that point at `ingest --encoder ... --checkpoint ...` name a command that runs."""
    from songseek.engine.encoders.fake import DIM

    vectors = tmp_path / "v.parquet"
    pq.write_table(vector_table(4, DIM, seed=3, max_frames=3), vectors)
    plain = tmp_path / "plain"
    assert run("ingest", str(vectors), "--library", str(plain))[0] == 0
    code, _, err = run("search", "jazz", "--library", str(plain))
    suggested = re.search(r"`songseek (ingest FILE --library NEW --encoder NAME --checkpoint CKPT)`", err)
    assert code == 2 and suggested is not None, err
    new = tmp_path / "new"
    words = {"FILE": str(vectors), "NEW": str(new), "NAME": "fake", "CKPT": "fake"}
    code, _, err = run(*[words.get(w, w) for w in suggested[1].split()])
    assert code == 0, err
    code, out, err = run("search", "jazz", "--library", str(new), "--json")
    assert code == 0 and json.loads(out), err
    # extending a library that has an encoder without naming it: the hint's flags make it work
    code, _, err = run("ingest", str(vectors), "--library", str(new))
    hint = re.search(r"Use (--encoder \S+ --checkpoint \S+)", err)
    assert code == 2 and hint is not None, err
    code, _, err = run("ingest", str(vectors), "--library", str(new), *hint[1].split())
    assert code == 0, err


def test_ingest_encoder_flags_are_refused_where_they_would_be_dropped(tmp_path: Path) -> None:
    from songseek.engine.encoders.fake import DIM

    vectors = tmp_path / "v.parquet"
    pq.write_table(vector_table(2, DIM, seed=4, max_frames=2), vectors)
    plain = tmp_path / "plain"
    assert run("ingest", str(vectors), "--library", str(plain))[0] == 0
    before = _files(plain)
    code, _, err = run("ingest", str(vectors), "--library", str(plain), "--encoder", "fake")
    assert code == 2 and "new --library" in err and len(err.strip().splitlines()) == 1
    assert _files(plain) == before  # nothing was added under the old precomputed label
    code, _, err = run("ingest", str(vectors), "--library", str(tmp_path / "x"), "--checkpoint", "fake")
    assert code == 2 and "pass --encoder NAME" in err and not (tmp_path / "x").exists()


def test_a_where_matching_nothing_says_so_and_info_text_is_readable(tmp_path: Path) -> None:
    pq.write_table(vector_table(6, 8, seed=1), tmp_path / "v.parquet")
    lib = str(tmp_path / "lib")
    code, _, err = run("ingest", str(tmp_path / "v.parquet"), "--library", lib)
    assert code == 0, err
    np.save(tmp_path / "q.npy", np.ones((1, 8), np.float32))
    code, out, err = run("search", "--query-vectors", str(tmp_path / "q.npy"), "--library", lib,
                         "--where", "artist = 'nobody'")
    assert code == 0 and json.loads(out) == [] and 'no track matches --where "artist = \'nobody\'"' in err
    code, _, err = run("search", "--query-vectors", str(tmp_path / "q.npy"), "--library", lib,
                       "--where", "artist = 'artist1'")
    assert code == 0 and "no track matches" not in err
    code, out, err = run("info", "--library", lib)
    assert code == 0, err
    lines = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}
    hours = json.loads(run("info", "--library", lib, "--json")[1])["audio_hours"]
    assert lines["audio_hours"] == f"{hours:.2f}" != str(hours)  # the JSON keeps every digit
    assert lines["duplicates"] == "groups=0, tracks=0, by_level=-, found=False"
    assert lines["rerank"].startswith("rerank=auto, params.gamma_k=") and "{" not in lines["rerank"]


@pytest.mark.parametrize("args, message", [
    (["--window", "0"], "--window 0: must be above 0"),
    (["--hop", "-1", "--workers", "0"], "--hop -1, --workers 0: must be above 0"),
])
def test_bad_index_numbers_name_only_the_options_given(tmp_path: Path, args: list[str], message: str) -> None:
    """--commit-every is hidden; the message listed it for a bad --window."""
    write_wav(tmp_path / "music" / "a.wav", tone_track([110], 10, 0))
    code, _, err = run("index", str(tmp_path / "music"), "--library", str(tmp_path / "lib"), "--encoder", "fake",
                       *args)
    assert code == 2 and message in err and "commit-every" not in err


def test_batch_query_help_says_the_output_is_json() -> None:
    code, out, _ = run("search", "--help")
    flat = " ".join(out.replace("│", " ").split())  # rich's boxes cut the help text into columns
    assert code == 0 and flat.count("Prints JSON: one array of hits per query") == 2, flat


@pytest.mark.parametrize("encoder", ["clap", "laion"])
def test_index_with_no_network_fails_fast_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       encoder: str) -> None:
    from tests.engine.encoder_helpers import unreachable_hub

    hub = unreachable_hub(monkeypatch, tmp_path)
    music = tmp_path / "music"
    write_wav(music / "a.wav", tone_track([440], 10, 0))
    code, _, err = run("index", str(music), "--library", str(tmp_path / "lib"), "--encoder", encoder)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
    assert "unreachable" in err and hub.probes() == 1 and not hub.repo_requests("laion")


@pytest.mark.parametrize(("option", "value"), [("--kernel-s", "0"), ("--stride-s", "-2"), ("--segment-s", "nan"),
                                               ("--where-timeout", "inf")])
def test_search_number_errors_name_the_option_as_typed(tmp_path: Path, option: str, value: str) -> None:
    code, _, err = run("search", "hello", "--library", str(tmp_path / "lib"), option, value)
    assert code == 2 and err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"error: {option} must be a finite number of seconds above 0")



@pytest.mark.parametrize("explain", [[], ["--explain"]])
def test_search_table_fits_an_80_column_terminal_and_keeps_the_file_name(audio_library: Path, tmp_path: Path,
                                                                        explain: list[str]) -> None:
    clip = tmp_path / "clip.wav"
    write_wav(clip, tone_track([3000], 10, 9))
    result = runner.invoke(app, ["search", "--audio", str(clip), "--library", str(audio_library), "-k", "3",
                                 *explain], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    rows = [line for line in lines if re.search(r"\d+:\d\d–\d+:\d\d", line)]
    assert len(rows) == 3  # one line per hit: the long path loses its middle folders, not its file name
    assert len(str(audio_library)) > 40 and all("…/" in row for row in rows)
    names = [re.search(r"…/(?:[^│ ]*/)?(\w+\.wav) ", row) for row in rows]
    assert all(names) and {m.group(1) for m in names if m} == {"low.wav", "mid.wav", "high.wav"}
    if explain:  # no room beside the track at 80 columns: the score parts get a table of their own, by rank
        parts = [line.split() for line in lines if re.match(r" +[123] │ +-?\d\.\d{4} │", line)]
        assert [p[0] for p in parts] == ["1", "2", "3"] and any("rerank:" in line for line in lines)
    wide = runner.invoke(app, ["search", "--audio", str(clip), "--library", str(audio_library), "-k", "1",
                               *explain], env={"COLUMNS": "400"})
    assert str(audio_library.parent / "music") in wide.stdout  # room enough: the whole path
    assert not explain or all("rK" in line for line in wide.stdout.splitlines() if "track" in line)


def test_a_tagged_hit_shows_artist_and_title(tmp_path: Path) -> None:
    rows = vector_table(3, 32, seed=4).to_pylist()  # the fake encoder's dimension: text queries work
    for r in rows:
        r["title"] = f"Song of {r['track_id']}"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "v.parquet")
    lib = str(tmp_path / "lib")
    assert run("ingest", str(tmp_path / "v.parquet"), "--library", lib, "--encoder", "fake")[0] == 0
    result = runner.invoke(app, ["search", "anything", "--library", lib], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert {f"artist{t} – Song of t000{t}" for t in range(3)} <= set(re.findall(r"artist\d – Song of t\d+",
                                                                               result.stdout))
    assert "/music/" not in result.stdout


def test_search_notes_come_after_success_and_are_true(audio_library: Path, tmp_path: Path) -> None:
    # an error is the only line: no note about -k before it
    code, out, err = run("search", "--audio", str(tmp_path / "nosuch.mp3"), "--library", str(audio_library))
    lines = _not_warnings(err)
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: --audio")
    code, _, err = run("search", "low", "--library", str(audio_library), "--where", "nosuch > 1")
    lines = _not_warnings(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: bad where predicate")
    pq.write_table(vector_table(6, 8, seed=1), tmp_path / "v.parquet")  # years 1950 ... 1955
    lib = str(tmp_path / "vectors-lib")
    assert run("ingest", str(tmp_path / "v.parquet"), "--library", lib)[0] == 0
    np.save(tmp_path / "q.npy", np.ones((2, 8), np.float32))
    search = ("search", "--query-vectors", str(tmp_path / "q.npy"), "--library", lib)
    code, out, err = run(*search, "--where", "year > 1952")
    assert code == 0 and [len(json.loads(line)) for line in out.splitlines()] == [3, 3]
    assert err.splitlines() == ["note: 3 tracks match --where; showing all of them"]
    code, out, err = run(*search, "--where", "year > 1952", "-k", "2")
    assert code == 0 and err == ""  # -k was reached: nothing to explain
    code, out, err = run(*search, "--where", "year > 1954")
    assert code == 0 and err.splitlines() == ["note: 1 track matches --where; showing all of them"]
    code, out, err = run(*search, "--where", "year > 2000")
    assert code == 0 and err.splitlines() == ['no track matches --where "year > 2000"']
    code, out, err = run(*search)
    assert code == 0 and err.splitlines() == ["note: the library has 6 tracks; showing all of them"]


@pytest.mark.parametrize("args", [["--start", "5"], ["--end", "3"], ["--max-excerpt", "5"],
                                  ["--start", "0", "--max-excerpt", "60"]])
def test_excerpt_options_without_audio_are_refused(audio_library: Path, args: list[str]) -> None:
    code, out, err = run("search", "piano", "--library", str(audio_library), *args)
    assert code == 2 and out == "" and err.splitlines() == [err.strip()]  # refused before the library opens
    assert err.startswith(f"error: {args[0]}") and "--audio" in err


def test_a_text_file_given_as_query_vectors_points_to_query_file(audio_library: Path, tmp_path: Path) -> None:
    queries = tmp_path / "qs.txt"
    queries.write_text("slow piano\nstring crescendo\n")
    code, out, err = run("search", "--query-vectors", str(queries), "--library", str(audio_library))
    assert code == 2 and out == "" and len(_not_warnings(err)) == 1
    assert "not a .npy file of float vectors" in err and "--query-file" in err and "allow_pickle" not in err
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run("search", "--query-vectors", str(objects), "--library", str(audio_library))
    assert code == 2 and "Python objects" in err and "allow_pickle" not in err


def test_failures_json_has_help() -> None:
    result = runner.invoke(app, ["failures", "--help"], env={"COLUMNS": "200"})
    line = next(ln for ln in result.stdout.splitlines() if "--json" in ln)
    assert "JSON" in line.split("--json", 1)[1]


# Ctrl-C from the model call of the 3rd file (one window per file, batches of one, one decoder: files arrive
# in order), where an interrupt usually lands; a child started from a background job inherits SIGINT
# ignored, so the handler a terminal's Ctrl-C meets is restored first.
_CTRL_C = ("import os, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from songseek.engine.encoders.fake import FakeEncoder as F; real = F.embed_audio; n = [0]\n"
           "def f(self, *a):\n"
           "    n[0] += 1\n"
           "    os.kill(os.getpid(), signal.SIGINT) if n[0] == 3 else None\n"
           "    return real(self, *a)\n"
           "F.embed_audio = f")


def test_ctrl_c_during_index_says_how_far_it_got(tmp_path: Path) -> None:
    music = tmp_path / "music"
    for i in range(6):
        write_wav(music / f"{i}.wav", tone_track([200 + 100 * i], 10, i))
    lib = tmp_path / "lib"
    cli = f"import sys; sys.modules['torch'] = None; exec({_CTRL_C!r}); from songseek.cli.main import app; app()"
    index = [sys.executable, "-c", cli, "index", str(music), "--library", str(lib), "--encoder", "fake",
             "--workers", "1", "--batch-size", "1", "--commit-every", "100"]
    out = subprocess.run(index, capture_output=True, text=True, timeout=120)
    assert out.returncode == 130, out.stderr
    assert out.stderr.splitlines()[-1] == "interrupted: 2 of 6 files committed; run the same command to resume"
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert json.loads(run("info", "--library", str(lib), "--json")[1])["tracks"] == 2
    code, out_, err = run("index", str(music), "--library", str(lib), "--encoder", "fake", "--json")
    assert code == 0 and json.loads(out_)["added"] == 4, err


def test_info_wraps_long_values_under_their_start(audio_library: Path) -> None:
    result = runner.invoke(app, ["info", "--library", str(audio_library)], env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 60
    starts = [line for line in lines if not line.startswith(" " * 20)]
    assert all(re.match(r" *\w+:( |$)", line) for line in starts)  # the others continue a value, indented
    assert any(line.startswith(" " * 20) for line in lines)  # the rerank settings did not fit in one line


def test_the_text_search_path_is_announced_only_when_it_is_prepared(tmp_path: Path) -> None:
    music = tmp_path / "music"
    write_wav(music / "a.wav", tone_track([220], 10, 0))
    lib = tmp_path / "lib"
    home = {"SONGSEEK_CACHE_DIR": str(tmp_path / "cache")}  # a fresh ONNX cache: the first run prepares it
    first = runner.invoke(app, ["index", str(music), "--library", str(lib), "--encoder", "demo"], env=home)
    assert first.exit_code == 0, first.stderr
    said = [line for line in first.stderr.splitlines() if line.strip()]
    assert said[-2:] == ["preparing the text search path (the first time per checkpoint exports it to ONNX)",
                         "text search runs on onnx"]  # and no screen of export warnings before them
    assert not any("Warning" in line or line.startswith("WARNING") for line in said)
    write_wav(music / "b.wav", tone_track([440], 10, 1))
    again = runner.invoke(app, ["index", str(music), "--library", str(lib)], env=home)
    assert again.exit_code == 0, again.stderr
    assert "preparing the text search path" not in again.stderr  # cached now: nothing to prepare, nothing said
    assert "text search runs on" not in again.stderr


def test_ingest_of_bad_rows_is_one_line_and_a_rerun_says_what_it_kept(tmp_path: Path) -> None:
    """A year that is no number, a null track_id and string vectors ended in tracebacks (exit 1); a NaN
    start_s left a library whose manifest no command could read."""
    table = vector_table(3, 8, seed=5, min_frames=2, max_frames=3)
    lib = tmp_path / "lib"
    for column, values in (("year", ["nineteen"] * table.num_rows),
                           ("track_id", [None, *table.column("track_id").to_pylist()[1:]]),
                           ("start_s", [float("nan"), *table.column("start_s").to_pylist()[1:]]),
                           ("embedding", ["0.1 0.2"] * table.num_rows)):
        pq.write_table(table.set_column(table.schema.get_field_index(column), column, pa.array(values)),
                       tmp_path / "bad.parquet")
        code, out, err = run("ingest", str(tmp_path / "bad.parquet"), "--library", str(lib))
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), (column, err)
        assert not lib.exists(), column
    pq.write_table(table, tmp_path / "v.parquet")
    assert run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))[1] == f"ingested 3 tracks into {lib}\n"
    code, out, err = run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))
    assert code == 0 and out == f"ingested 3 tracks into {lib} (3 already stored as given, left as they were)\n"
    assert json.loads(run("info", "--library", str(lib), "--json")[1])["dead_frames"] == 0


def test_info_on_a_file_or_a_library_without_its_manifest_names_the_fix_that_works(tmp_path: Path) -> None:
    """Both said `create one with songseek index DIR --library LIB`: index refuses a file, and refuses a
    folder of library files without a manifest (it sends the user to repair, which rebuilds it)."""
    pq.write_table(vector_table(2, 8, seed=1, max_frames=2), tmp_path / "v.parquet")
    code, _, err = run("info", "--library", str(tmp_path / "v.parquet"))
    assert code == 2 and err == (f"error: {tmp_path / 'v.parquet'} is a file, not a library folder (--library takes "
                                 "the folder that songseek index or ingest made)\n")
    lib = tmp_path / "lib"
    assert run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))[0] == 0
    (lib / "manifest.json").unlink()
    for command in ("info", "failures"):
        code, _, err = run(command, "--library", str(lib))
        assert code == 2 and err == (f"error: {lib} holds library files but no manifest.json; run `songseek repair "
                                     f"--library {lib}`\n"), err
    assert run("repair", "--library", str(lib))[0] == 0
    assert run("info", "--library", str(lib))[0] == 0


def test_index_into_a_library_without_its_manifest_is_refused_before_any_model_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`songseek index DIR --library LIB` (no --encoder) into a folder whose manifest was deleted loaded the
    default encoder first (LAION: a download, or a 'checkpoint not found' line) and only then met the repair
    line that docs/robustness.md promises."""
    pq.write_table(vector_table(2, 8, seed=1, max_frames=2), tmp_path / "v.parquet")
    lib = tmp_path / "lib"
    assert run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))[0] == 0
    (lib / "manifest.json").unlink()
    before = sorted(p.name for p in lib.iterdir())
    write_wav(tmp_path / "music" / "a.wav", tone_track([440], 10, 0))

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("songseek.engine.encoders.load_encoder", no_model)
    code, out, err = run("index", str(tmp_path / "music"), "--library", str(lib))
    assert code == 2 and out == "" and err == (f"error: {lib} holds library files but no manifest.json; run "
                                               f"`songseek repair --library {lib}` to rebuild it from them "
                                               "(nothing was changed)\n"), err
    assert sorted(p.name for p in lib.iterdir()) == before


def test_ingest_refuses_what_it_can_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ingest --encoder X` loaded X's weights before it read the file or looked at the library."""
    pq.write_table(vector_table(2, 8, seed=1, max_frames=2), tmp_path / "v.parquet")
    lib = tmp_path / "lib"
    assert run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))[0] == 0
    (lib / "manifest.json").unlink()
    before = sorted(p.name for p in lib.iterdir())

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("songseek.engine.encoders.load_encoder", no_model)
    code, out, err = run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib), "--encoder", "demo")
    assert code == 2 and out == "" and "holds library files but no manifest.json; run `songseek repair" in err
    assert sorted(p.name for p in lib.iterdir()) == before
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    code, out, err = run("ingest", str(tmp_path / "bad.parquet"), "--library", str(tmp_path / "new"),
                         "--encoder", "demo")
    assert code == 2 and out == "" and "bad.parquet" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "new").exists()


def test_info_on_a_library_with_no_index_yet_says_so(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    (music / "a.wav").write_bytes(b"not audio")  # the only file fails: a library with no frames, no index
    code, _, err = run("index", str(music), "--library", str(tmp_path / "lib"), "--encoder", "fake")
    assert code == 0, err
    code, out, err = run("info", "--library", str(tmp_path / "lib"))
    assert code == 0, err
    lines = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}
    assert lines["index"] == "none"
    assert lines["index_nprobe"] == "- (no index yet: nothing to probe)"


def test_ingest_prune_says_how_many_tracks_it_removed(tmp_path: Path) -> None:
    table = vector_table(4, 8, seed=3, max_frames=3)
    pq.write_table(table, tmp_path / "all.parquet")
    keep = sorted(set(table.column("track_id").to_pylist()))[:3]
    pq.write_table(table.filter(pc.is_in(table.column("track_id"), pa.array(keep))), tmp_path / "three.parquet")
    lib = str(tmp_path / "lib")
    assert run("ingest", str(tmp_path / "all.parquet"), "--library", lib)[0] == 0
    code, out, err = run("ingest", str(tmp_path / "three.parquet"), "--library", lib, "--prune")
    assert code == 0, err
    assert out.strip() == (f"ingested 3 tracks into {lib} (3 already stored as given, left as they were); "
                           "removed 1 track the file does not list")
    code, out, _ = run("info", "--library", lib, "--json")
    assert json.loads(out)["tracks"] == 3


def test_ingest_waits_for_another_writer_with_wait_and_refuses_without(tmp_path: Path) -> None:
    pq.write_table(vector_table(3, 8, seed=5, max_frames=2), tmp_path / "v.parquet")
    lib = tmp_path / "lib"
    assert run("ingest", str(tmp_path / "v.parquet"), "--library", str(lib))[0] == 0
    pq.write_table(vector_table(4, 8, seed=6, max_frames=2), tmp_path / "w.parquet")
    fd = acquire_lock(lib)  # another writer (an indexer) holds the library
    try:
        code, _, err = run("ingest", str(tmp_path / "w.parquet"), "--library", str(lib))
    finally:
        os.close(fd)
    assert code == 2 and "is being written by" in err and "--wait" in err
    fd = acquire_lock(lib)
    release = threading.Timer(1.0, os.close, args=(fd,))
    release.start()
    try:
        code, _, err = run("ingest", str(tmp_path / "w.parquet"), "--library", str(lib), "--wait")
    finally:
        release.join()
    assert code == 0, err
    # vector_table names tracks by number: w's 4 tracks replace v's 3 and add one, once the writer is done
    assert json.loads(run("info", "--library", str(lib), "--json")[1])["tracks"] == 4
