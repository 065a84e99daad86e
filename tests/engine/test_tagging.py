"""Zero-shot tags against naive references on seeded, planted libraries (fake encoder: text embeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from songseek.engine.analysis.tagging import (
    BUILTIN_SETS,
    DEFAULT_TEMPERATURE,
    LabelSet,
    aggregate_windows,
    label_slug,
    label_vectors,
    load_label_set,
    normalise,
    parse_labels,
    tag_library,
    tag_sets,
    track_window_scores,
)
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import QueryError, UsageError
from songseek.engine.query.filters import filter_track_ids
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.search import Library
from songseek.engine.query.sql import run_sql
from tests.analysis_helpers import build_library, noisy_copies
from tests.rerank_reference import naive_scores

ENC = FakeEncoder()
GENRES = ("jazz", "rock", "hip hop", "classical")


def test_label_slug() -> None:
    assert label_slug("Hip Hop") == "hip_hop"
    assert label_slug(" R&B ") == "r_b"
    with pytest.raises(UsageError):
        label_slug("&&")


@pytest.mark.parametrize("label, slug", [
    ("İstanbul pop", "istanbul_pop"),   # 'İ'.lower() is 'i' + U+0307: once slugged 'i_stanbul_pop'
    ("Straße", "strasse"), ("STRASSE", "strasse"), ("ẞ-Beat", "ss_beat"),  # casefold, not lower
    ("Caf\u00e9", "cafe"), ("Cafe\u0301", "cafe"),  # composed and combining accent: one slug
    ("\u212apop", "kpop"), ("\ufb01lm score", "film_score"),  # Kelvin sign, 'fi' ligature (NFKD)
    ("Øresund", "oresund"), ("Işık", "isik"),
])
def test_label_slug_folds_case_and_accents_the_unicode_way(label: str, slug: str) -> None:
    assert label_slug(label) == slug


def test_a_label_without_latin_letters_is_refused_in_one_line() -> None:
    for label in ("Рок", "\u0301"):
        with pytest.raises(UsageError, match="no Latin letter or digit") as err:
            label_slug(label)
        assert "\n" not in str(err.value)


def test_tag_macro_finds_the_column_of_any_spelling_of_a_unicode_label(tmp_path: Path) -> None:
    """The tagger names the column and tag('...') looks it up: both must slug a label the same way."""
    n = 6
    labels = ("İstanbul pop", "Straße", "Café")
    cols = {f"tag_{label_slug(lb)}": [(i + k) % n / n for i in range(n)] for k, lb in enumerate(labels)}
    tables = {"tracks": pa.table({"track_id": [f"t{i}" for i in range(n)]}),
              "tags": pa.table({"track_id": [f"t{i}" for i in range(n)], **cols})}
    for k, spellings in enumerate((["İstanbul pop", "İSTANBUL POP", "istanbul pop"],
                                   ["Straße", "STRASSE", "strasse"], ["Caf\u00e9", "Cafe\u0301", "CAFÉ"])):
        want = sorted(f"t{i}" for i in range(n) if (i + k) % n / n > 0.5)
        for spelling in spellings:
            assert sorted(filter_track_ids(tables, f"tag('{spelling}') > 0.5")) == want, spelling
    with pytest.raises(QueryError, match="unknown tag"):
        filter_track_ids(tables, "tag('Рок') > 0.5")


def test_parse_labels_refuses_two_spellings_of_one_unicode_label() -> None:
    with pytest.raises(UsageError, match="share the column tag_strasse"):
        parse_labels("Straße\nStrasse\n", "f")
    with pytest.raises(UsageError, match="share the column tag_cafe"):
        parse_labels("Caf\u00e9\nCafe\u0301\n", "f")


def test_parse_labels_skips_comments_and_refuses_clashing_slugs() -> None:
    assert parse_labels("# c\njazz\n\nhip hop  # inline\n", "f") == ("jazz", "hip hop")
    with pytest.raises(UsageError, match="share the column"):
        parse_labels("hip hop\nhip-hop\n", "f")
    with pytest.raises(UsageError, match="no labels"):
        parse_labels("# nothing\n", "f")


@pytest.mark.parametrize("name", [*BUILTIN_SETS, "descriptors"])
def test_shipped_label_sets_load(name: str) -> None:
    s = load_label_set(name)
    assert len(s.labels) >= 10 and s.name == name
    assert s.multi_label == (name in ("moods", "instruments"))


def test_label_file_and_override(tmp_path: Path) -> None:
    f = tmp_path / "My Tags.txt"
    f.write_text("a\nb\n")
    s = load_label_set(str(f), multi_label=True)
    assert s == LabelSet("my_tags", ("a", "b"), True)
    with pytest.raises(UsageError):
        load_label_set(str(tmp_path / "missing.txt"))


def test_label_vectors_average_templates_then_renormalise() -> None:
    templates = ("A {label} track", "{label} music")
    got = label_vectors(ENC.embed_text, ["jazz", "rock"], templates)
    for i, lb in enumerate(["jazz", "rock"]):
        v = ENC.embed_text([t.replace("{label}", lb) for t in templates]).mean(axis=0)
        np.testing.assert_allclose(got[i], v / np.linalg.norm(v), atol=1e-6)
    with pytest.raises(UsageError, match="placeholder"):
        label_vectors(ENC.embed_text, ["jazz"], ["no placeholder"])


@pytest.mark.parametrize("how", ["mean", "max", "fusion"])
def test_aggregate_windows_matches_naive(how: str) -> None:
    rng = np.random.default_rng(0)
    lengths = np.array([1, 5, 9, 3])
    sims = rng.uniform(-1, 1, (4, 9, 3)).astype(np.float32)
    got = aggregate_windows(sims, lengths, how)
    for b, n in enumerate(lengths):
        for lab in range(3):
            row = sims[b, :n, lab]
            want = {"mean": row.mean(), "max": row.max(),
                    "fusion": naive_scores("fusion", [list(row)], FusionParams())[0]}[how]
            assert got[b, lab] == pytest.approx(want, abs=1e-6)


def test_normalise_softmax_and_sigmoid_match_naive() -> None:
    rng = np.random.default_rng(1)
    c = rng.uniform(-0.3, 0.5, (7, 4))
    tau = 0.05
    soft = normalise(c, "softmax", tau)
    for i in range(7):
        e = [np.exp(x / tau) for x in c[i]]
        np.testing.assert_allclose(soft[i], [x / sum(e) for x in e], rtol=1e-5)
    sig = normalise(c, "sigmoid", tau)
    med = np.median(c, axis=0)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-(c - med) / tau)), rtol=1e-5)
    with pytest.raises(UsageError):
        normalise(c, "softmax", 0.0)


def _genre_library(root: Path, per_genre: int = 6, seed: int = 0) -> tuple[Path, list[str]]:
    """Tracks whose windows lie near the prompt "A <genre> track" of their genre (truth returned)."""
    rng = np.random.default_rng(seed)
    centers = {g: ENC.embed_text([f"A {g} track"])[0] for g in GENRES}
    tracks, truth = [], []
    for i in range(per_genre * len(GENRES)):
        g = GENRES[i % len(GENRES)]
        tracks.append(noisy_copies(centers[g], int(rng.integers(1, 7)), 1.5, rng))
        truth.append(g)
    return build_library(root, tracks), truth


def test_track_window_scores_match_naive_loop(tmp_path: Path) -> None:
    root, _ = _genre_library(tmp_path / "lib")
    lib = Library.open(root)
    t = label_vectors(ENC.embed_text, GENRES)
    starts = lib.tracks.column("frame_start").to_numpy()
    counts = lib.tracks.column("frame_count").to_numpy()
    for how in ("mean", "max", "fusion"):
        got = track_window_scores(lib.store, starts, counts, t, how, batch_frames=7)  # forces many batches
        for r in range(len(starts)):
            sims = lib.store.vectors(int(starts[r]), int(counts[r])) @ t.T
            want = aggregate_windows(sims[None], np.array([counts[r]]), how)[0]
            np.testing.assert_allclose(got[r], want, atol=1e-6)


def test_tag_library_recovers_planted_genres_and_filters(tmp_path: Path) -> None:
    root, truth = _genre_library(tmp_path / "lib")
    labels = tmp_path / "genres.txt"
    labels.write_text("\n".join(GENRES))
    [res] = tag_library(root, [load_label_set(str(labels))])
    assert res.top_labels() == truth  # planted: every track nearest its own genre's prompt
    lib = Library.open(root)
    tags = lib.tables()["tags"]
    assert tags.column("top_genres").to_pylist() == truth
    np.testing.assert_allclose(np.stack([tags.column(f"tag_{label_slug(g)}").to_numpy() for g in GENRES], 1).sum(1),
                               1.0, atol=1e-5)  # softmax over the set
    # the stored numbers, naive: mean over a track's windows of cos(window, "A <genre> track"), then a
    # softmax over the set at the default temperature, written out by hand
    tau = tag_sets(tags)["genres"]["temperature"]
    assert tau == DEFAULT_TEMPERATURE
    prompts = [ENC.embed_text([f"A {g} track"])[0] for g in GENRES]
    for row, (start, count) in enumerate(zip(lib.tracks.column("frame_start").to_pylist(),
                                             lib.tracks.column("frame_count").to_pylist(), strict=True)):
        frames = lib.store.vectors(start, count).astype(np.float64)
        cos = [float(np.mean([f @ p / np.linalg.norm(p) for f in frames])) for p in prompts]
        e = [np.exp(c / tau) for c in cos]
        for g, x in zip(GENRES, e, strict=True):
            assert tags.column(f"tag_{label_slug(g)}")[row].as_py() == pytest.approx(x / sum(e), abs=1e-5)
    jazz = tags.column("tag_jazz").to_numpy()
    ids = tags.column("track_id").to_pylist()
    want = sorted(t for t, s in zip(ids, jazz) if s > 0.5)
    assert want and sorted(filter_track_ids(lib.tables(), "tag('jazz') > 0.5")) == want
    assert set(want) <= {t for t, g in zip(ids, truth) if g == "jazz"}
    assert tag_sets(tags)["genres"]["aggregate"] == "mean"


def test_tag_in_a_library_never_tagged_says_how_to_tag_it(tmp_path: Path) -> None:
    """Before: `--where "tag('jazz') > 0.3"` on an untagged library said "bad where predicate: Catalog Error:
    Scalar Function with name tag does not exist!. Columns: ..." (and `songseek sql` the same)."""
    root, _ = _genre_library(tmp_path / "lib", per_genre=1)
    lib = Library.open(root)
    want = "tag() needs zero-shot tags: run songseek tag --library LIB --labels ... first (docs/analysis.md)"
    for where in ("tag('jazz') > 0.3", "year > 1 OR tag('jazz', track_id) > 0"):
        with pytest.raises(QueryError) as err:
            filter_track_ids(lib.tables(), where)
        assert str(err.value) == want
    for query in ("SELECT path FROM tracks WHERE tag('jazz') > 0.3", "SELECT tag('jazz', t.track_id) FROM tracks t"):
        with pytest.raises(QueryError) as err:
            run_sql(lib, query)
        assert str(err.value) == want


def test_a_second_set_keeps_the_first_sets_columns(tmp_path: Path) -> None:
    root, _ = _genre_library(tmp_path / "lib", per_genre=2)
    a, b = tmp_path / "genres.txt", tmp_path / "moods.txt"
    a.write_text("jazz\nrock\n")
    b.write_text("happy\nsad\n")
    tag_library(root, [load_label_set(str(a))])
    first = Library.open(root).tables()["tags"].column("tag_jazz")
    tag_library(root, [load_label_set(str(b), multi_label=True)], aggregate="max")
    tags = Library.open(root).tables()["tags"]
    assert {"tag_jazz", "tag_rock", "tag_happy", "tag_sad", "top_genres", "top_moods"} <= set(tags.column_names)
    assert tags.column("tag_jazz").equals(first)
    assert set(tag_sets(tags)) == {"genres", "moods"}
    assert tag_sets(tags)["moods"]["normalisation"] == "sigmoid"
    # the stored numbers, naive: the best window's cosine with "A <mood> track", then
    # sigmoid((c - median over the tracks) / tau)
    lib = Library.open(root)
    assert tags.column("track_id").to_pylist() == lib.tracks.column("track_id").to_pylist()
    best = []
    for start, count in zip(lib.tracks.column("frame_start").to_pylist(),
                            lib.tracks.column("frame_count").to_pylist(), strict=True):
        frames = lib.store.vectors(start, count).astype(np.float64)
        best.append([max(f @ ENC.embed_text([f"A {m} track"])[0] for f in frames) for m in ("happy", "sad")])
    c = np.array(best)
    want = 1 / (1 + np.exp(-(c - np.median(c, axis=0)) / DEFAULT_TEMPERATURE))
    got = np.stack([tags.column("tag_happy").to_numpy(), tags.column("tag_sad").to_numpy()], 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_label_belongs_to_the_set_tagged_last_and_retagging_drops_old_labels(tmp_path: Path) -> None:
    root, _ = _genre_library(tmp_path / "lib", per_genre=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    genres, mine, mine2 = tmp_path / "genres.txt", tmp_path / "a" / "mine.txt", tmp_path / "b" / "mine.txt"
    genres.write_text("jazz\nrock\nfolk\n")
    mine.write_text("jazz\nsad\n")
    mine2.write_text("happy\n")
    tag_library(root, [load_label_set(str(genres))])
    tag_library(root, [load_label_set(str(mine))])
    sets = tag_sets(Library.open(root).tables()["tags"])
    # tag_jazz is mine's softmax now: genres no longer claims it, and says who took it
    assert sets["genres"]["labels"] == ["rock", "folk"] and sets["genres"]["taken_by"] == {"jazz": "mine"}
    assert sets["mine"]["labels"] == ["jazz", "sad"]
    tags = Library.open(root).tables()["tags"]
    np.testing.assert_allclose(tags.column("tag_jazz").to_numpy() + tags.column("tag_sad").to_numpy(), 1.0,
                               atol=1e-5)
    tag_library(root, [load_label_set(str(mine2))])  # the set "mine" again, with other labels
    tags = Library.open(root).tables()["tags"]
    assert "tag_sad" not in tags.column_names and "tag_jazz" not in tags.column_names  # listed by no set now
    assert {"tag_rock", "tag_folk", "tag_happy", "top_genres", "top_mine"} <= set(tags.column_names)
    assert tag_sets(tags)["mine"]["labels"] == ["happy"]


def test_precomputed_library_cannot_be_tagged(tmp_path: Path) -> None:
    from songseek.engine.errors import QueryError

    rng = np.random.default_rng(0)
    root = build_library(tmp_path / "lib", [rng.standard_normal((2, 32))], encoder=None)
    with pytest.raises(QueryError, match="precomputed"):
        tag_library(root, [load_label_set("genres")])
