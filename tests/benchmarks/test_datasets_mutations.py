"""benchmarks/datasets.py behaviour that a mutation sweep found unpinned: blank/NaN cells, bounds, list
cells, empty audio files, missing-file messages, path spelling and split merging."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from songseek.benchmarks.datasets import dataset_hash, load_manifest, load_musiccaps, load_queries, load_song_describer
from songseek.engine.errors import UsageError
from tests.benchmarks.test_datasets import write_csv, write_wav


def test_nan_bounds_in_parquet_mean_the_whole_file(audio_root: Path) -> None:
    # pandas/Arrow write a missing float as NaN (or null): both are blank, not a bad number
    m = audio_root / "m.parquet"
    pq.write_table(pa.table({"path": ["a.wav", "c.wav", "sub/b.wav"], "caption": ["x", "y", "z"],
                             "start_s": [float("nan"), 1.0, None], "end_s": [float("nan"), 2.0, None]}), m)
    ds = load_manifest(m)
    got = [(it.item_id, it.start_s, it.end_s) for it in ds.items]
    assert got == [("a.wav", None, None), ("c.wav#1-2", 1.0, 2.0), ("sub/b.wav", None, None)]


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "-inf"])
def test_bounds_must_be_finite_and_not_negative(audio_root: Path, value: str) -> None:
    m = write_csv(audio_root / "m.csv", ["path", "caption", "start_s", "end_s"], [["a.wav", "x", value, "1e9"]])
    with pytest.raises(UsageError, match=r"line 2: column 'start_s' must be finite and >= 0"):
        load_manifest(m)


def test_zero_start_is_allowed_and_an_empty_segment_is_not(audio_root: Path) -> None:
    ok = write_csv(audio_root / "ok.csv", ["path", "caption", "start_s", "end_s"], [["a.wav", "x", "0", "0.5"]])
    assert [(it.start_s, it.end_s) for it in load_manifest(ok).items] == [(0.0, 0.5)]
    bad = write_csv(audio_root / "bad.csv", ["path", "caption", "start_s", "end_s"], [["a.wav", "x", "5", "5"]])
    with pytest.raises(UsageError, match=r"line 2: end_s \(5.0\) must be after start_s \(5.0\)"):
        load_manifest(bad)


def test_list_cells_drop_empty_parts_and_print_whole_floats_as_ints(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    rows = [
        {"vector": [1.0, 0.0], "relevant": "t1||t2| "},
        {"vector": [0.0, 1.0], "relevant": [7.0, 8.5, " t9 ", ""]},
        {"vector": [1.0, 1.0], "relevant": 42.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs = load_queries(path)
    assert [q.relevant for q in qs.queries] == [("t1", "t2"), ("7", "8.5", "t9"), ("42",)]


def test_empty_audio_files_count_as_missing(audio_root: Path) -> None:
    (audio_root / "empty.wav").write_bytes(b"")  # an interrupted download
    m = write_csv(audio_root / "m.csv", ["path", "caption"], [["a.wav", "x"], ["empty.wav", "y"]])
    ds = load_manifest(m)
    assert [it.item_id for it in ds.items] == ["a.wav"]
    assert ds.missing == (audio_root / "empty.wav",)


def test_missing_files_message_shows_five_and_counts_the_rest(audio_root: Path) -> None:
    rows = [["a.wav", "x"]] + [[f"gone{i}.wav", f"cap {i}"] for i in range(8)]
    m = write_csv(audio_root / "m.csv", ["path", "caption"], rows)
    with pytest.raises(UsageError, match=r"8 of 9 audio files are missing \(.*gone4\.wav and 3 more\)") as exc:
        load_manifest(m, on_missing="error")
    assert "gone5.wav" not in str(exc.value)
    few = write_csv(audio_root / "few.csv", ["path", "caption"], [["a.wav", "x"], ["gone.wav", "y"]])
    with pytest.raises(UsageError, match=r"1 of 2 audio files are missing \([^)]*gone\.wav\);") as exc2:
        load_manifest(few, on_missing="error")
    assert "more" not in str(exc2.value)


def test_a_path_through_dot_dot_is_the_same_clip(audio_root: Path) -> None:
    m = write_csv(audio_root / "m.csv", ["path", "caption"], [["a.wav", "x"], ["sub/../a.wav", "y"]])
    ds = load_manifest(m)
    assert [(it.item_id, it.captions) for it in ds.items] == [("a.wav", ("x", "y"))]
    assert ds.items[0].audio_path == audio_root / "a.wav"


def test_split_of_a_clip_is_kept_when_a_later_row_leaves_it_blank(audio_root: Path) -> None:
    m = write_csv(audio_root / "m.csv", ["path", "caption", "split"],
                  [["a.wav", "x", "test"], ["a.wav", "y", ""], ["c.wav", "z", ""], ["c.wav", "w", "train"]])
    assert [(it.item_id, it.split) for it in load_manifest(m).items] == [("a.wav", "test"), ("c.wav", "train")]


# ------------------------------------------------------------------------------------------ MusicCaps / SDD
MC_HEADER = ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
             "is_balanced_subset", "is_audioset_eval"]


def _musiccaps(tmp_path: Path) -> tuple[Path, Path]:
    audio = tmp_path / "mc_audio"
    for name in ("ev1.wav", "tr1.wav", "ev2.flac"):
        write_wav(audio / name)
    c = write_csv(tmp_path / "mc.csv", MC_HEADER, [
        ["ev1", "30", "40", "", "[]", "eval one", "1", "False", "True"],
        ["tr1", "0", "10", "", "[]", "train one", "1", "False", "False"],
        ["ev2", "5", "15", "", "[]", "eval two", "1", "False", "true"],
    ])
    return c, audio


def test_musiccaps_split_filter_and_clip_layout(tmp_path: Path) -> None:
    c, audio = _musiccaps(tmp_path)
    ev = load_musiccaps(c, audio, split="eval")
    assert ev.name == "musiccaps-eval"
    assert [(it.item_id, it.split) for it in ev.items] == [("ev1", "eval"), ("ev2", "eval")]
    tr = load_musiccaps(c, audio, split="train")
    assert [(it.item_id, it.split) for it in tr.items] == [("tr1", "train")]
    # trimmed (default): each file is the clip, items cover it whole; full: the CSV's segment
    assert [(it.start_s, it.end_s) for it in load_musiccaps(c, audio).items] == [(None, None)] * 3
    full = load_musiccaps(c, audio, clip_layout="full")
    assert [(it.start_s, it.end_s) for it in full.items] == [(30.0, 40.0), (0.0, 10.0), (5.0, 15.0)]


SDD_HEADER = ["caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id", "album_id",
              "path", "duration"]


def test_song_describer_float_ids_blank_captions_and_the_padded_folder(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    write_wav(audio / "00" / "1051200.2min.mp3")  # NN = 1051200 % 100 = 00, zero-padded
    write_wav(audio / "07" / "1000007.2min.mp3")
    c = write_csv(tmp_path / "sdd.csv", SDD_HEADER, [
        [1, "1051200.0", "a caption", "True", 0, 1, 1, "", 120],  # no path: only the NN/ folder finds it
        [2, "1051200", "  ", "True", 0, 1, 1, "", 120],  # a blank crowd-sourced caption: dropped
        [3, "1000007", "another", "True", 0, 1, 1, "", 120],
    ])
    ds = load_song_describer(c, audio)
    assert [(it.item_id, it.captions) for it in ds.items] == [("1051200", ("a caption",)), ("1000007", ("another",))]
    assert ds.items[0].audio_path == audio / "00" / "1051200.2min.mp3"
    assert ds.items[1].audio_path == audio / "07" / "1000007.2min.mp3"
    assert ds.missing == ()


def test_dataset_hash_covers_every_field(audio_root: Path) -> None:
    base = write_csv(audio_root / "m.csv", ["id", "path", "caption", "start_s", "end_s"],
                     [["x", "a.wav", "cap", "0", "10"]])
    h = dataset_hash(load_manifest(base))
    for row in (["y", "a.wav", "cap", "0", "10"], ["x", "c.wav", "cap", "0", "10"], ["x", "a.wav", "cap2", "0", "10"],
                ["x", "a.wav", "cap", "1", "10"], ["x", "a.wav", "cap", "0", "11"]):
        other = write_csv(audio_root / "o.csv", ["id", "path", "caption", "start_s", "end_s"], [row])
        assert dataset_hash(load_manifest(other)) != h, row
    same = write_csv(audio_root / "s.csv", ["id", "path", "caption", "start_s", "end_s"],
                     [["x", "a.wav", "cap", "0", "10"]])
    assert dataset_hash(load_manifest(same)) == h


def test_an_empty_vector_string_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('vector,relevant\n"[]",t1\n')
    with pytest.raises(UsageError, match=r"line 2: column 'vector' must be a flat, non-empty list"):
        load_queries(path)


def test_a_kind_outside_part_and_whole_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"query": "x", "relevant": "t1", "kind": "part"}) + "\n"
                    + json.dumps({"query": "y", "relevant": "t1", "kind": "halfway"}) + "\n")
    with pytest.raises(UsageError, match=r"row 2: column 'kind' must be"):
        load_queries(path)


def test_an_error_in_a_row_spanning_lines_names_the_line_it_starts_on(audio_root: Path) -> None:
    m = write_csv(audio_root / "nl.csv", ["path", "caption", "start_s", "end_s"],
                  [["a.wav", "fine", "1", "2"], ["c.wav", "two\nlines", "soon", "2"]])
    with pytest.raises(UsageError, match=r"nl\.csv: line 3: column 'start_s'"):
        load_manifest(m)
