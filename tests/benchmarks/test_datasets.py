"""Dataset loaders on real layouts: manifests, MusicCaps (real CSV when present), Song Describer, queries."""

from __future__ import annotations

import csv
import json
import shutil
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from songseek.benchmarks.datasets import (
    Subset,
    dataset_hash,
    load_manifest,
    load_musiccaps,
    load_queries,
    load_song_describer,
    subset,
)
from songseek.engine.errors import UsageError

MUSICCAPS_CSV = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "musiccaps" / "musiccaps-public.csv"


def write_wav(path: Path, seconds: float = 0.25, sr: int = 16000, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def write_csv(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------ manifests



def test_manifest_csv_groups_captions_and_reports_missing(audio_root: Path, tmp_path: Path) -> None:
    absolute = write_wav(tmp_path / "elsewhere" / "d.wav")
    m = write_csv(
        audio_root / "manifest.csv",
        ["path", "caption", "captions", "split", "start_s", "end_s"],
        [
            ["a.wav", "calm piano", "", "test", "", ""],
            ["a.wav", "soft keys, slow", "", "test", "", ""],
            ["sub/b.wav", "", '["fast drums", "loud"]', "", "", ""],
            ["c.wav", "", "violin | cello", "", "0", "10"],
            ["c.wav", "strings", "", "", "10", "20"],
            [str(absolute), "absolute one", "", "", "", ""],
            ["gone.wav", "not here", "", "", "", ""],
        ],
    )
    ds = load_manifest(m)
    assert ds.name == "manifest" and ds.root == audio_root and ds.source == m
    by_id = {it.item_id: it for it in ds.items}
    assert list(by_id) == ["a.wav", "sub/b.wav", "c.wav#0-10", "c.wav#10-20", str(absolute)]
    assert by_id["a.wav"].captions == ("calm piano", "soft keys, slow")
    assert by_id["a.wav"].split == "test"
    assert by_id["sub/b.wav"].captions == ("fast drums", "loud")
    assert by_id["c.wav#0-10"].captions == ("violin", "cello")
    assert (by_id["c.wav#10-20"].start_s, by_id["c.wav#10-20"].end_s) == (10.0, 20.0)
    assert by_id[str(absolute)].audio_path == absolute
    assert ds.missing == (audio_root / "gone.wav",)
    assert ds.n_captions == 8
    texts, owner = ds.caption_pairs()
    assert texts[:2] == ["calm piano", "soft keys, slow"] and owner.tolist() == [0, 0, 1, 1, 2, 2, 3, 4]

    with pytest.raises(UsageError, match=r"1 of 6 audio files are missing .*gone\.wav"):
        load_manifest(m, on_missing="error")


def test_manifest_formats_agree_and_root_override(audio_root: Path, tmp_path: Path) -> None:
    rows = [
        {"id": "x1", "audio_path": "a.wav", "captions": ["one", "two"]},
        {"id": "x2", "audio_path": "sub/b.wav", "caption": "three"},
    ]
    jl = tmp_path / "m.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq_path = tmp_path / "m.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["x1", "x2"],
                "audio_path": ["a.wav", "sub/b.wav"],
                "captions": [["one", "two"], ["three"]],
            }
        ),
        pq_path,
    )
    cs = write_csv(
        tmp_path / "m.csv",
        ["id", "audio_path", "captions"],
        [["x1", "a.wav", "one|two"], ["x2", "sub/b.wav", "three"]],
    )
    loaded = [load_manifest(p, root=audio_root) for p in (jl, pq_path, cs)]
    for ds in loaded:
        assert [it.item_id for it in ds.items] == ["x1", "x2"]
        assert ds.items[0].captions == ("one", "two")
        assert ds.missing == ()
    assert len({dataset_hash(ds) for ds in loaded}) == 1
    # relative to the manifest's own folder by default: nothing there
    with pytest.raises(UsageError, match="none of the 2 audio files"):
        load_manifest(jl)


@pytest.mark.parametrize(
    "header, row, match",
    [
        (["file", "caption"], ["a.wav", "x"], "'path' or 'audio_path'"),
        (["path", "text"], ["a.wav", "x"], "'caption' or 'captions'"),
        (["path", "caption"], ["a.wav", ""], r"line 2: no caption"),
        (["path", "caption", "start_s", "end_s"], ["a.wav", "x", "5", "3"], "line 2: end_s"),
        (["path", "caption", "start_s"], ["a.wav", "x", "soon"], "line 2: column 'start_s'"),
        (["path", "captions"], ["a.wav", "[not json"], "not a JSON list"),
    ],
)
def test_manifest_errors_name_file_line_column(audio_root: Path, header: list[str], row: list[str], match: str) -> None:
    m = write_csv(audio_root / "bad.csv", header, [row])
    with pytest.raises(UsageError, match=match) as err:
        load_manifest(m)
    assert "bad.csv" in str(err.value)


def test_manifest_conflicting_ids(audio_root: Path) -> None:
    m = write_csv(audio_root / "ids.csv", ["id", "path", "caption"], [["k", "a.wav", "x"], ["k", "c.wav", "y"]])
    with pytest.raises(UsageError, match="id 'k' is used for two different clips"):
        load_manifest(m)


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "m.xlsx").write_text("x")
    with pytest.raises(UsageError, match="unknown format"):
        load_manifest(tmp_path / "m.xlsx")
    with pytest.raises(UsageError, match="file not found"):
        load_manifest(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------------ MusicCaps
def musiccaps_dir(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "musiccaps_audio"
    wav = write_wav(tmp_path / "src.wav")
    for name in names:
        d.mkdir(exist_ok=True)
        shutil.copy(wav, d / name)
    return d


def test_musiccaps_real_csv(tmp_path: Path) -> None:
    if not MUSICCAPS_CSV.is_file():
        pytest.skip("../shared/data not present")
    with MUSICCAPS_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = [r["ytid"] for r in rows[:3]]
    audio = musiccaps_dir(tmp_path, [first[0] + ".wav", first[1] + ".flac", first[2] + ".mp3"])
    (audio / "unrelated.wav").write_bytes(b"x")

    ds = load_musiccaps(MUSICCAPS_CSV, audio)
    assert [it.item_id for it in ds.items] == first
    assert [it.audio_path.name for it in ds.items] == [
        first[0] + ".wav",
        first[1] + ".flac",
        first[2] + ".mp3",
    ]
    assert ds.items[0].captions == (rows[0]["caption"],)
    assert ds.items[0].start_s is None and ds.items[0].end_s is None  # trimmed clips: whole file
    assert len(ds.missing) == len(rows) - 3 == 5518
    assert ds.missing[0] == audio / f"{rows[3]['ytid']}.wav"
    assert ds.items[0].split == ("eval" if rows[0]["is_audioset_eval"] == "True" else "train")

    with pytest.raises(UsageError, match=r"5518 of 5521 audio files are missing") as err:
        load_musiccaps(MUSICCAPS_CSV, audio, on_missing="error")
    assert rows[3]["ytid"] in str(err.value) and "5513 more" in str(err.value)

    full = load_musiccaps(MUSICCAPS_CSV, audio, clip_layout="full")
    assert (full.items[0].start_s, full.items[0].end_s) == (
        float(rows[0]["start_s"]),
        float(rows[0]["end_s"]),
    )

    n_eval = sum(r["is_audioset_eval"] == "True" for r in rows)
    ev = load_musiccaps(MUSICCAPS_CSV, audio, split="eval")
    assert len(ev.items) + len(ev.missing) == n_eval == 2858
    assert all(it.split == "eval" for it in ev.items)

    empty = tmp_path / "empty_audio"
    empty.mkdir()
    with pytest.raises(UsageError, match="none of the 5521 audio files were found"):
        load_musiccaps(MUSICCAPS_CSV, empty)


def test_musiccaps_small_csv_and_empty_file(tmp_path: Path) -> None:
    header = [
        "ytid",
        "start_s",
        "end_s",
        "audioset_positive_labels",
        "aspect_list",
        "caption",
        "author_id",
        "is_balanced_subset",
        "is_audioset_eval",
    ]
    c = write_csv(
        tmp_path / "mc.csv",
        header,
        [
            ["-abc", "30", "40", "", "[]", "a calm piano", "1", "False", "True"],
            ["xyz_1", "0", "10", "", "[]", "loud drums", "2", "True", "False"],
            ["zzz", "10", "20", "", "[]", "empty download", "2", "True", "False"],
        ],
    )
    audio = musiccaps_dir(tmp_path, ["-abc.wav", "xyz_1.ogg"])
    (audio / "zzz.wav").write_bytes(b"")  # a failed download leaves an empty file
    ds = load_musiccaps(c, audio)
    assert [it.item_id for it in ds.items] == ["-abc", "xyz_1"]
    assert ds.missing == (audio / "zzz.wav",)
    with pytest.raises(UsageError, match="not a MusicCaps CSV"):
        load_musiccaps(write_csv(tmp_path / "x.csv", ["id", "caption"], [["a", "b"]]), audio)
    with pytest.raises(UsageError, match="audio folder not found"):
        load_musiccaps(c, tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ Song Describer
SDD_HEADER = [
    "caption_id",
    "track_id",
    "caption",
    "is_valid_subset",
    "familiarity",
    "artist_id",
    "album_id",
    "path",
    "duration",
]


def test_song_describer_layout(tmp_path: Path) -> None:
    audio = tmp_path / "sdd" / "audio"
    write_wav(audio / "00" / "1051200.2min.mp3")  # released excerpt name (content does not matter here)
    write_wav(audio / "audio" / "34" / "1004034.2min.mp3")  # nested audio/audio/ from the zip
    c = write_csv(
        tmp_path / "sdd" / "song_describer.csv",
        SDD_HEADER,
        [
            [12, 1051200, "second caption by id", "True", 1, 7, 8, "00/1051200.mp3", 219.5],
            [3, 1051200, "first caption by id", "True", 0, 7, 8, "00/1051200.mp3", 219.5],
            [4, 1051200, "not validated", "False", 0, 7, 8, "00/1051200.mp3", 219.5],
            [5, 1004034, "bright pop", "True", 2, 9, 9, "34/1004034.mp3", 180.0],
            [6, 1007274, "missing one", "True", 2, 9, 9, "74/1007274.mp3", 180.0],
            [7, 1234500, "only invalid", "", 2, 9, 9, "00/1234500.mp3", 180.0],
        ],
    )
    ds = load_song_describer(c, audio)
    assert ds.name == "song-describer-valid"
    assert [it.item_id for it in ds.items] == ["1051200", "1004034"]
    assert ds.items[0].captions == ("first caption by id", "second caption by id")
    assert ds.items[1].audio_path == audio / "audio" / "34" / "1004034.2min.mp3"
    assert ds.missing == (audio / "74" / "1007274.2min.mp3",)

    every = load_song_describer(c, audio, valid_only=False)
    assert every.items[0].captions == ("first caption by id", "not validated", "second caption by id")
    assert len(every.missing) == 2
    with pytest.raises(UsageError, match=r"2 of 4 audio files are missing .*1007274"):
        load_song_describer(c, audio, valid_only=False, on_missing="error")


# ------------------------------------------------------------------------------------------ subset / hash
def big_dataset(tmp_path: Path, n: int = 30):
    root = tmp_path / "big"
    wav = write_wav(tmp_path / "one.wav")
    rows = []
    for i in range(n):
        root.mkdir(exist_ok=True)
        shutil.copy(wav, root / f"t{i:03d}.wav")
        rows.append([f"t{i:03d}.wav", f"caption {i}"])
    return root, rows


def test_subset_is_seeded_and_order_free(tmp_path: Path) -> None:
    root, rows = big_dataset(tmp_path)
    a = load_manifest(write_csv(root / "m1.csv", ["path", "caption"], rows))
    b = load_manifest(write_csv(root / "m2.csv", ["path", "caption"], rows[::-1]))
    sa, sb = subset(a, 10, seed=3), subset(b, 10, seed=3)
    assert len(sa.items) == 10
    assert sorted(it.item_id for it in sa.items) == sorted(it.item_id for it in sb.items)
    assert [it.item_id for it in sa.items] == sorted(it.item_id for it in sa.items)  # keeps file order
    assert subset(a, 10, seed=3) == sa
    assert {it.item_id for it in subset(a, 10, seed=4).items} != {it.item_id for it in sa.items}
    assert sa.subset == Subset(requested=10, size=10, seed=3, population=30) and a.subset is None
    for n in (30, 1000):  # every item kept, and the request still recorded
        whole = subset(a, n, seed=5)
        assert whole.items == a.items and whole.name == a.name
        assert whole.subset == Subset(requested=n, size=30, seed=5, population=30)
    with pytest.raises(UsageError):
        subset(a, 0)
    assert dataset_hash(a) == dataset_hash(b)
    assert dataset_hash(sa) == dataset_hash(sb) != dataset_hash(a)


def test_dataset_hash_tracks_content_not_location(tmp_path: Path) -> None:
    root, rows = big_dataset(tmp_path, n=4)
    m = write_csv(root / "m.csv", ["path", "caption"], rows)
    h = dataset_hash(load_manifest(m))
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert dataset_hash(load_manifest(moved / "m.csv")) == h
    rows[1][1] = "a different caption"
    assert dataset_hash(load_manifest(write_csv(root / "m.csv", ["path", "caption"], rows))) != h


# ------------------------------------------------------------------------------------------ queries
def test_queries_csv_text(tmp_path: Path) -> None:
    q = write_csv(
        tmp_path / "q.csv",
        ["id", "query", "relevant", "start_s", "end_s"],
        [
            ["a", "a sad piano ballad", "track-1", "", ""],
            ["b", "drum solo", "track-2|track-3", "30", "40"],
            ["", "jazz", '["track-4", 17]', "", ""],
        ],
    )
    qs = load_queries(q)
    assert len(qs) == 3 and qs.dim is None and qs.path == q
    assert qs.queries[0].relevant == ("track-1",) and qs.queries[0].text == "a sad piano ballad"
    assert qs.queries[1].relevant == ("track-2", "track-3")
    assert (qs.queries[1].start_s, qs.queries[1].end_s) == (30.0, 40.0)
    assert qs.queries[2].query_id == "q3" and qs.queries[2].relevant == ("track-4", "17")


def test_queries_vectors_jsonl_and_parquet(tmp_path: Path) -> None:
    jl = tmp_path / "q.jsonl"
    jl.write_text(
        json.dumps({"vector": [0.1, 0.2, 0.3], "relevant": ["x"]})
        + "\n"
        + json.dumps({"vector": [1, 0, 0], "relevant": "y", "start_s": 0, "end_s": 10})
        + "\n"
    )
    qs = load_queries(jl)
    assert qs.dim == 3 and qs.queries[0].vector is not None
    assert qs.queries[0].vector.dtype == np.float32
    np.testing.assert_allclose(qs.queries[0].vector, [0.1, 0.2, 0.3], rtol=1e-6)
    assert qs.queries[1].relevant == ("y",) and qs.queries[1].end_s == 10.0

    p = tmp_path / "q.parquet"
    pq.write_table(pa.table({"vector": [[0.5, 0.5], [0.0, 1.0]], "relevant": [["a", "b"], ["c"]]}), p)
    qp = load_queries(p)
    assert qp.dim == 2 and qp.queries[0].relevant == ("a", "b")


@pytest.mark.parametrize(
    "rows, match",
    [
        ([{"query": "x"}], "needs a 'relevant' column"),
        ([{"relevant": "x"}], "'query' \\(text\\) or 'vector' column"),
        ([{"query": "x", "vector": [1.0], "relevant": "t"}], "row 1: give exactly one"),
        ([{"query": "x", "relevant": "t"}, {"query": "", "relevant": "t"}], "row 2: give exactly one"),
        (
            [{"vector": [1, 2], "relevant": "t"}, {"vector": [1, 2, 3], "relevant": "t"}],
            "row 2: column 'vector' has 3",
        ),
        ([{"vector": [1, "a"], "relevant": "t"}], "row 1: column 'vector' must contain only numbers"),
        ([{"vector": [1, None], "relevant": "t"}], "row 1: column 'vector'"),
        ([{"query": "x", "relevant": []}], "row 1: column 'relevant' is empty"),
        ([{"query": "x", "relevant": "t", "start_s": 3}], "row 1: give both 'start_s' and 'end_s'"),
        (
            [{"query": "x", "relevant": "t", "id": "d"}, {"query": "y", "relevant": "t", "id": "d"}],
            "appears twice",
        ),
    ],
)
def test_queries_errors(tmp_path: Path, rows: list[dict[str, object]], match: str) -> None:
    jl = tmp_path / "bad_queries.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UsageError, match=match) as err:
        load_queries(jl)
    assert "bad_queries.jsonl" in str(err.value)


def test_queries_csv_error_line_numbers(tmp_path: Path) -> None:
    q = write_csv(tmp_path / "q.csv", ["query", "relevant"], [["ok", "t1"], ["missing relevant", ""]])
    with pytest.raises(UsageError, match=r"q\.csv: line 3: column 'relevant' is empty"):
        load_queries(q)
    bad_json = tmp_path / "q.jsonl"
    bad_json.write_text('{"query": "a", "relevant": "t"}\n{oops\n')
    with pytest.raises(UsageError, match="line 2: not valid JSON"):
        load_queries(bad_json)


# ------------------------------------------------------------------------------------------ bad input files
MC_HEADER = ("ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,"
             "is_audioset_eval\n")


def test_non_utf8_names_the_line_and_the_fix(audio_root: Path) -> None:
    m = audio_root / "latin1.csv"
    m.write_bytes("path,caption\na.wav,fine\nc.wav,caf\xe9 jazz\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"latin1\.csv: line 3: not UTF-8 text.*save the file as UTF-8"):
        load_manifest(m)


def test_a_bom_is_accepted_in_jsonl_as_in_csv(audio_root: Path) -> None:
    (audio_root / "bom.jsonl").write_text('\ufeff{"path": "a.wav", "caption": "x"}\n', encoding="utf-8")
    (audio_root / "bom.csv").write_text("\ufeffpath,caption\na.wav,x\n", encoding="utf-8")
    for name in ("bom.jsonl", "bom.csv"):
        assert [it.captions for it in load_manifest(audio_root / name).items] == [("x",)]


def test_manifest_one_file_spelt_two_ways_is_one_item(audio_root: Path) -> None:
    # Rows about one clip must form one item whatever the path spelling: as two items, audio→text would
    # count the clip's other caption as a wrong answer (the same audio, another "clip").
    absolute = str((audio_root / "a.wav").resolve())
    m = write_csv(audio_root / "spell.csv", ["path", "caption"], [["a.wav", "x"], ["./a.wav", "y"], [absolute, "z"]])
    ds = load_manifest(m)
    assert [(it.item_id, it.captions) for it in ds.items] == [("a.wav", ("x", "y", "z"))]


def test_manifest_duplicate_row_is_an_error_naming_both_lines(audio_root: Path) -> None:
    m = write_csv(audio_root / "dup.csv", ["path", "caption"], [["a.wav", "x"], ["c.wav", "y"], ["a.wav", "x"]])
    with pytest.raises(UsageError, match=r"dup\.csv: line 4: repeats line 2 .*remove"):
        load_manifest(m)


def test_musiccaps_duplicate_ytid_is_an_error(tmp_path: Path) -> None:
    audio = musiccaps_dir(tmp_path, ["a.wav", "b.wav"])
    c = tmp_path / "mc.csv"
    c.write_text(MC_HEADER + "a,30,40,,[],cap one,1,False,True\nb,0,10,,[],cap b,1,False,True\n"
                 "a,30,40,,[],cap two,1,False,True\n")
    with pytest.raises(UsageError, match=r"mc\.csv: line 4: ytid 'a' is already on line 2"):
        load_musiccaps(c, audio)


def test_musiccaps_end_before_start_is_an_error(tmp_path: Path) -> None:
    audio = musiccaps_dir(tmp_path, ["a.wav"])
    c = tmp_path / "mc.csv"
    c.write_text(MC_HEADER + "a,40,30,,[],cap,1,False,True\n")
    with pytest.raises(UsageError, match=r"mc\.csv: line 2: end_s \(30.0\) must be after start_s \(40.0\)"):
        load_musiccaps(c, audio, clip_layout="full")


def test_song_describer_duplicate_caption_id_is_an_error(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    write_wav(audio / "00" / "100.2min.mp3")
    row = [1, 100, "a caption", "True", 0, 1, 1, "00/100.mp3", 120]
    c = write_csv(tmp_path / "sdd.csv", SDD_HEADER, [row, row])
    with pytest.raises(UsageError, match=r"sdd\.csv: line 3: caption_id 1 is already on line 2"):
        load_song_describer(c, audio)


def test_csv_line_numbers_count_newlines_inside_quoted_captions(audio_root: Path) -> None:
    # Five real MusicCaps captions span two lines; the error must point at the line the bad row starts on.
    m = write_csv(audio_root / "nl.csv", ["path", "caption", "start_s", "end_s"],
                  [["a.wav", "two\nlines", "1", "2"], ["c.wav", "fine", "soon", "2"]])
    with pytest.raises(UsageError, match=r"nl\.csv: line 4: column 'start_s'"):
        load_manifest(m)
