"""Bad input never crashes a run nor corrupts the library: each file is indexed or lands in the failures
table (path, error class, message, time), and is retried only when it changes or with --retry-failed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mutagen
import numpy as np
import pytest
import soundfile as sf
from mutagen.id3 import APIC, ID3, TDRC, TIT2
from typer.testing import CliRunner

from songseek.cli.main import app
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage.repair import verify_library
from songseek.indexers import pipeline
from songseek.indexers.pipeline import IndexConfig, IndexReport, index_paths
from songseek.indexers.sources import check_sources
from songseek.indexers.tags import MAX_TAG_CHARS
from tests.audio_helpers import write_audio
from tests.library_helpers import library_rows

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")
SR = 16000
SHARED_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "data" / "audio"
CLI = "import sys; sys.modules['torch'] = None; from songseek.cli.main import app; app()"


def noise(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = 0.2 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels)).astype(np.float32)
    return x if channels > 1 else x[:, 0]


def run(src: Path, lib: Path, **kw: Any) -> IndexReport:
    return index_paths([src], lib, FakeEncoder(), IndexConfig(**kw))


tracks = library_rows


def failures(lib: Path) -> dict[str, dict]:
    library = Library.open(lib)
    from songseek.engine.storage.store import read_table_mmap

    return {r["path"]: r for r in read_table_mmap(lib / library.manifest.failures_file).to_pylist()}


def make_bad_folder(d: Path) -> dict[str, str]:
    """The zoo of bad input; returns name -> what must happen ("indexed" or "failed")."""
    d.mkdir()
    expect = {}
    (d / "zero.mp3").touch()
    expect["zero.mp3"] = "failed"
    for ext, fmt in (("mp3", "MP3"), ("flac", "FLAC"), ("ogg", "OGG")):
        sf.write(d / f"full.{ext}", noise(20), SR, format=fmt)
        data = (d / f"full.{ext}").read_bytes()
        (d / f"trunc.{ext}").write_bytes(data[: len(data) // 2])
        (d / f"full.{ext}").unlink()
        expect[f"trunc.{ext}"] = "either"         # mp3/ogg decode to where they end; flac says truncated
    (d / "text.mp3").write_text("this is not audio\n" * 100)
    expect["text.mp3"] = "failed"
    (d / "image.flac").write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(4000))
    expect["image.flac"] = "failed"
    sf.write(d / "silence.wav", np.zeros(12 * SR, np.float32), SR)
    expect["silence.wav"] = "indexed"
    x = noise(12)
    x[100:200], x[5000:5100], x[9000] = np.nan, np.inf, -np.inf
    sf.write(d / "nan_inf.wav", x, SR, subtype="FLOAT")
    expect["nan_inf.wav"] = "indexed"
    for sr in (8000, 192000):
        sf.write(d / f"sr{sr}.wav", noise(5, sr), sr)
        expect[f"sr{sr}.wav"] = "indexed"
    for ch in (2, 8):
        sf.write(d / f"ch{ch}.wav", noise(5, SR, ch), SR)
        expect[f"ch{ch}.wav"] = "indexed"
    sf.write(d / "tiny.wav", noise(0.05), SR)
    expect["tiny.wav"] = "indexed"
    for name in ("uni ñame 音楽 ♫.wav", "new\nline.wav", " spaced  out .wav"):
        sf.write(d / name, noise(3, seed=len(name)), SR)
        expect[name] = "indexed"
    sf.write(d / "raw.wav", noise(3, seed=9), SR)
    os.rename(os.fsencode(d / "raw.wav"), os.fsencode(d) + b"/bad\xffname.wav")
    expect["bad\\xffname.wav"] = "failed"
    os.symlink("loop.mp3", d / "loop.mp3")                     # a symlink to itself
    expect["loop.mp3"] = "failed"
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "up")                         # a directory loop: not followed
    return expect


def test_bad_input_zoo(tmp_path: Path) -> None:
    src, lib = tmp_path / "bad", tmp_path / "lib"
    expect = make_bad_folder(src)
    report = run(src, lib)
    got, failed = tracks(lib), failures(lib)
    outcome = {}
    for name, want in expect.items():
        path = f"{src}/{name}"
        state = "indexed" if path in got else "failed" if path in failed else "missing"
        outcome[name] = state
        assert state != "missing", name
        assert want in ("either", state), (name, state, failed.get(path))
    print("outcome:", outcome)
    assert report.failed == len(failed) == sum(v == "failed" for v in outcome.values())
    assert report.added == len(got)
    for row in failed.values():
        assert row["error_class"] and row["message"] and row["time"] > 0 and "\n" not in row["error_class"]
    assert failed[f"{src}/zero.mp3"]["error_class"] == "DecodeError"
    assert "empty file" in failed[f"{src}/zero.mp3"]["message"]
    assert failed[f"{src}/loop.mp3"]["error_class"] == "OSError"
    assert "not valid UTF-8" in failed[f"{src}/bad\\xffname.wav"]["message"]
    for row in got.values():
        assert np.isfinite(row["vectors"]).all()
        assert np.allclose(np.linalg.norm(row["vectors"], axis=1), 1, atol=1e-4)
    for name, secs in (("sr8000.wav", 5), ("sr192000.wav", 5), ("ch8.wav", 5), ("tiny.wav", 0.05)):
        assert got[f"{src}/{name}"]["duration_s"] == pytest.approx(secs, abs=0.01), name
    assert got[f"{src}/tiny.wav"]["frame_count"] == 1
    assert verify_library(lib) == []
    library = Library.open(lib)
    assert library.search_vectors(np.ones((1, 32), np.float32), SearchOptions(k=3, rerank="max"))[0]

    # Second run: known failures are skipped, except those found by the scan (listed again each run).
    r2 = run(src, lib)
    scan_level = {f"{src}/loop.mp3", f"{src}/bad\\xffname.wav"}
    assert (r2.added, r2.changed, r2.failed) == (0, 0, len(scan_level))
    assert r2.skipped_failed == len(failed) - len(scan_level)
    # A fixed file is retried because it changed; --retry-failed retries the unchanged ones too.
    sf.write(src / "text.mp3", noise(3, seed=5), SR, format="MP3")
    r3 = run(src, lib)
    assert r3.added == 1 and f"{src}/text.mp3" in tracks(lib) and f"{src}/text.mp3" not in failures(lib)
    r4 = run(src, lib, retry_failed=True)
    assert r4.skipped_failed == 0 and r4.failed == len(failed) - 1
    # Deleted failed files leave the failures table (prune).
    (src / "zero.mp3").unlink()
    run(src, lib)
    assert f"{src}/zero.mp3" not in failures(lib)


def test_messy_tags_and_less_common_formats_are_indexed(tmp_path: Path) -> None:
    """Formats a folder scan used to skip without a word (AIFC, Matroska, WavPack) are
    indexed; tag values of 50,000 characters are stored cut to MAX_TAG_CHARS; NUL, unicode and odd dates
    are cleaned."""
    src, lib = tmp_path / "messy", tmp_path / "lib"
    src.mkdir()
    sf.write(src / "float.aifc", noise(3), SR, format="AIFF", subtype="FLOAT")
    write_audio(src / "lossless.wv", noise(3, seed=1), SR, codec="wavpack", container_format="wv")
    write_audio(src / "video.mkv", noise(3, seed=2), SR, codec="flac", container_format="matroska")
    sf.write(src / "long_tags.flac", noise(3, seed=3), SR)
    flac: Any = mutagen.File(src / "long_tags.flac")
    flac["ARTIST"], flac["TITLE"], flac["DATE"] = "é" * 50_000, "a\x00b", "unknown"
    flac.save()
    sf.write(src / "id3.mp3", noise(3, seed=4), SR, format="MP3")
    id3 = ID3()
    id3.add(TIT2(encoding=3, text="Ünïcødé ♫ 音楽"))
    id3.add(TDRC(encoding=3, text="2001-05-03"))
    id3.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=b"\xff\xd8\xff\xe0" + bytes(100_000)))
    id3.save(src / "id3.mp3")
    report = run(src, lib)
    assert (report.added, report.failed) == (5, 0)
    got = {Path(p).name: row for p, row in tracks(lib).items()}
    for name in ("float.aifc", "lossless.wv", "video.mkv", "long_tags.flac", "id3.mp3"):
        assert got[name]["duration_s"] == pytest.approx(3.0, abs=0.06), name
    long_row = got["long_tags.flac"]
    assert long_row["artist"] == "é" * (MAX_TAG_CHARS - 1) + "\u2026"
    assert (long_row["title"], long_row["year"]) == ("a b", None)
    assert (got["id3.mp3"]["title"], got["id3.mp3"]["year"]) == ("Ünïcødé ♫ 音楽", 2001)
    assert verify_library(lib) == []


def test_file_changing_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, lib = tmp_path / "src", tmp_path / "lib"
    src.mkdir()
    sf.write(src / "growing.wav", noise(25), SR)
    sf.write(src / "steady.wav", noise(25, seed=1), SR)
    real = pipeline._decode_windows

    def decode(f, *a):
        for n, item in enumerate(real(f, *a)):
            if n == 1 and f.path.name == "growing.wav":
                sf.write(f.path, noise(30, seed=3), SR)       # rewritten under the reader
            yield item

    monkeypatch.setattr(pipeline, "_decode_windows", decode)
    r = run(src, lib)
    assert r.added == 1 and r.failed == 1
    fail = failures(lib)[f"{src}/growing.wav"]
    assert fail["error_class"] == "FileChangedError" and "changed while being read" in fail["message"]
    monkeypatch.setattr(pipeline, "_decode_windows", real)
    r2 = run(src, lib)                                         # it changed since it failed: retried
    assert r2.added == 1 and r2.skipped_failed == 0
    assert tracks(lib)[f"{src}/growing.wav"]["frame_count"] == 3


@pytest.mark.skipif(not SHARED_AUDIO.is_dir(), reason="../shared/data not present")
def test_damaged_copies_of_real_audio(tmp_path: Path) -> None:
    src, lib = tmp_path / "real", tmp_path / "lib"
    src.mkdir()
    rng = np.random.default_rng(7)
    originals = sorted(SHARED_AUDIO.glob("*.ogg"))
    assert originals
    for f in originals:
        data = f.read_bytes()
        (src / f"{f.stem}.half.ogg").write_bytes(data[: len(data) // 2])
        mid = bytearray(data)
        at = int(len(data) * 0.4)
        mid[at:at + 2048] = rng.bytes(min(2048, len(data) - at))
        (src / f"{f.stem}.garbled.ogg").write_bytes(bytes(mid))
        (src / f"{f.stem}.nohead.ogg").write_bytes(b"\0" * 4096 + data[4096:])
    report = run(src, lib)
    got, failed = tracks(lib), failures(lib)
    assert report.added + report.failed == 3 * len(originals)
    assert set(got) | set(failed) == {str(p) for p in src.iterdir()}
    assert all(r["error_class"] == "DecodeError" for r in failed.values())
    assert verify_library(lib) == []
    print(f"damaged real files: {len(got)} indexed, {len(failed)} failed:",
          sorted(Path(p).name for p in failed))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
def test_two_hour_file_memory_stays_flat(tmp_path: Path) -> None:
    """Peak RSS (VmHWM of the indexing process) for a 2-hour file stays within a few MB of a 2-minute one
    (4 kHz fake encoder to keep it fast; the decoded 2 hours would be 115 MB of float32)."""
    sr = 4000
    block = noise(60, sr)
    with sf.SoundFile(tmp_path / "long.wav", "w", sr, 1, subtype="PCM_16") as fh:
        for _ in range(120):
            fh.write(block)
    sf.write(tmp_path / "short.wav", np.tile(block, 2), sr, subtype="PCM_16")
    code = ("import sys; sys.modules['torch'] = None; from pathlib import Path; "
            "from songseek.engine.encoders.fake import FakeEncoder; "
            "from songseek.indexers.pipeline import IndexConfig, index_paths; "
            "r = index_paths([Path(sys.argv[1])], Path(sys.argv[2]), FakeEncoder(sample_rate=4000), IndexConfig()); "
            "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1]; "
            "print(r.windows, hwm)")
    peaks = {}
    for name in ("short", "long"):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{name}.wav"), str(tmp_path / name)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        windows, kb = map(int, out.stdout.split())
        peaks[name] = (windows, kb / 1024)
    print("peak RSS MB (windows):", peaks)
    assert peaks["long"][0] == 720 and peaks["short"][0] == 12
    assert peaks["long"][1] - peaks["short"][1] < 40


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


def test_unreadable_file(tmp_path: Path) -> None:
    """chmod 000: reported, then retried once readable (chmod moves ctime). As root, the run drops the
    capabilities that bypass file permissions (setpriv), so the kernel really refuses the read."""
    src, lib = tmp_path / "src", tmp_path / "lib"
    src.mkdir()
    sf.write(src / "locked.wav", noise(3), SR)
    sf.write(src / "open.wav", noise(3, seed=1), SR)
    os.chmod(src / "locked.wav", 0)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    cmd = _cli("index", str(src), "--library", str(lib), "--encoder", "fake", "--device", "cpu")
    out = subprocess.run(prefix + cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "added 1," in out.stdout and "failed 1" in out.stdout
    fail = failures(lib)[f"{src}/locked.wav"]
    assert fail["error_class"] == "PermissionError" and "Permission denied" in fail["message"]
    strict = subprocess.run(prefix + cmd + ["--strict"], capture_output=True, text=True, timeout=120)
    assert strict.returncode == 0 and "known failures skipped" in strict.stdout  # unchanged: not retried
    os.chmod(src / "locked.wav", 0o644)
    again = subprocess.run(prefix + cmd + ["--strict"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "added 1," in again.stdout, again.stdout + again.stderr
    assert not failures(lib)


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    if "torch" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torch", None)  # the fake encoder needs none; saves seconds


def test_cli_exit_codes_and_failure_listing(tmp_path: Path, no_torch: None) -> None:
    src, lib = tmp_path / "src", tmp_path / "lib"
    src.mkdir()
    sf.write(src / "good.wav", noise(3), SR)
    (src / "bad.mp3").write_text("not audio")
    (src / "new\nline.mp3").write_text("not audio either")
    runner = CliRunner()
    base = ["index", str(src), "--library", str(lib), "--encoder", "fake", "--device", "cpu"]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    assert "added 1, changed 0, moved 0, removed 0, unchanged 0, failed 2" in r.stdout
    r = runner.invoke(app, [*base, "--strict", "--retry-failed"])
    assert r.exit_code == 1 and "failed 2" in r.stdout
    r = runner.invoke(app, ["failures", "--library", str(lib)])
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(ln.count("\t") == 3 for ln in lines)
    assert any("new\\nline.mp3\tDecodeError" in ln for ln in lines)
    r = runner.invoke(app, ["info", "--library", str(lib), "--json"])
    assert r.exit_code == 0 and '"failures": 2' in r.stdout
    for bad_args in (["index", str(tmp_path / "nope"), "--library", str(lib)],
                     [*base, "--window", "-1"], [*base, "--commit-every", "0"], [*base, "--no-such-option"],
                     ["index", str(src), "--library", str(src / "good.wav"), "--encoder", "fake"]):
        r = runner.invoke(app, bad_args)
        assert r.exit_code == 2, (bad_args, r.output)
    r = runner.invoke(app, ["index", str(tmp_path / "nope"), "--library", str(lib)])
    assert "does not exist" in r.output


def test_a_new_library_from_folders_without_audio_is_refused(tmp_path: Path, no_torch: None) -> None:
    """Before: `songseek index notaudio --library new` (a.txt, b.jpg, c.pdf) said "added 0 ... index
    unchanged", exited 0, created an empty library and exported the text tower. Now: one line, exit 2,
    nothing written; an existing library keeps its tracks and gets a note (an unmounted drive)."""
    src, lib = tmp_path / "notaudio", tmp_path / "lib"
    src.mkdir()
    for name in ("a.txt", "b.jpg", "c.pdf"):
        (src / name).write_text("x")
    base = ["index", str(src), "--library", str(lib), "--encoder", "fake", "--device", "cpu"]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith(f"error: no audio files under {src} (3 other files skipped: a.txt, b.jpg, c.pdf); "
                           "songseek reads .aac .aif") and last.endswith(" .wv")
    assert not lib.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no audio files under .*empty; songseek reads"):
        index_paths([tmp_path / "empty"], lib, FakeEncoder())  # the Python API refuses it too
    assert not lib.exists()
    # an existing library: the run goes on, keeps the tracks of the folder and says why
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "x.wav", noise(3), SR)
    assert run(music, lib).added == 1
    (music / "x.wav").unlink()
    (music / "cover.jpg").write_text("x")
    report = run(music, lib)
    assert report.removed == 0 and any("no audio file found under" in n for n in report.notes)


def test_check_sources_returns_the_named_files_it_skips(tmp_path: Path) -> None:
    """The check the CLI runs before a model loads: same return value; with the library, it also refuses
    a new library whose folders hold no audio, and stops walking at the first audio file."""
    (tmp_path / "music" / "deep").mkdir(parents=True)
    sf.write(tmp_path / "music" / "deep" / "x.wav", noise(1), SR)
    cover = tmp_path / "cover.jpg"
    cover.write_text("x")
    assert check_sources([tmp_path / "music", cover], tmp_path / "lib") == [cover]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UsageError, match=r"no audio files under .*cover.jpg \(1 other file skipped: cover.jpg\)"):
        check_sources([tmp_path / "nothing", cover], tmp_path / "lib")
    assert check_sources([tmp_path / "nothing", cover]) == [cover]  # no library named: the run decides


def test_scan_matches_a_naive_walk(tmp_path: Path) -> None:
    """Extensions in any case, directories named like audio files left out, sorted by path; a missing
    source refused, as a plain os.walk filter finds them."""
    from songseek.engine.audio import AUDIO_EXTENSIONS
    from songseek.indexers.sources import scan

    for rel in ("b/Song.FLAC", "b/c/low.wav", "a/UP.Mp3", "a/notes.txt", "z.WAV", "cover.JPG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    (tmp_path / "a" / "folder.flac").mkdir()
    os.mkfifo(tmp_path / "b" / "pipe.wav")  # not a regular file: opening it to decode would block
    naive = sorted(str(Path(d) / n) for d, _, names in os.walk(tmp_path) for n in names
                   if Path(n).suffix.lower() in AUDIO_EXTENSIONS and os.path.isfile(Path(d) / n))
    result = scan([tmp_path])
    assert [str(f.path) for f in result.files] == naive and len(naive) == 4
    assert [f.size for f in result.files] == [os.path.getsize(p) for p in naive]
    with pytest.raises(UsageError, match="does not exist"):
        scan([tmp_path / "gone"])


def test_check_sources_finds_audio_with_upper_case_extensions(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    (music / "SONG.WAV").write_bytes(b"x")
    assert check_sources([music], tmp_path / "lib") == []  # a new library: the folder holds audio


def test_a_folder_that_cannot_be_listed_is_left_to_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from songseek.indexers import sources

    def walk(top: Any, onerror: Any = None, followlinks: bool = False) -> Any:
        onerror(PermissionError(13, "Permission denied", str(top)))
        return iter(())

    monkeypatch.setattr(sources.os, "walk", walk)
    (tmp_path / "music").mkdir()
    assert check_sources([tmp_path / "music"], tmp_path / "lib") == []  # not refused as "no audio files"
