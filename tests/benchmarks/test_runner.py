"""benchmarks/runner.py against naive references computed straight from the vectors with numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from songseek.benchmarks.datasets import DatasetItem, Subset, load_manifest, load_queries
from songseek.benchmarks.metrics import metrics_ci, per_query_values
from songseek.benchmarks.runner import (
    QueryRanks,
    audio_to_text,
    evaluate_dataset,
    evaluate_queries,
    mode_result,
    paired_difference,
    search_plan,
    spans_without_windows,
    subset_queries,
    text_to_audio,
)
from songseek.engine.encoders.fake import FakeEncoder
from songseek.engine.errors import UsageError
from songseek.engine.query.fusion import FusionParams
from songseek.engine.query.search import Library
from songseek.indexers.pipeline import IndexConfig
from tests.benchmarks.runner_helpers import engine_order, naive_track_scores, open_quiet, track_frames
from tests.rerank_reference import naive_scores

MODES = ["fusion", "mean", "max", "none"]
KS = (1, 5, 10, 20, 100)


def _naive_metrics(ranked: list[list[str]], relevant: list[set[str]], n: int) -> dict[str, float]:
    """R@K / mAP@10 / MedR / MeanR by loops: first rank, AP@10 divided by the number of relevant tracks."""
    first, aps = [], []
    for order, rel in zip(ranked, relevant):
        pos = [i + 1 for i, t in enumerate(order) if t in rel]
        first.append(pos[0] if pos else n)
        hits, ap = 0, 0.0
        for i, t in enumerate(order[:10]):
            if t in rel:
                hits += 1
                ap += hits / (i + 1)
        aps.append(ap / len(rel))
    r = np.array(first, dtype=float)
    out = {f"R@{k}": float(np.mean(r <= k)) for k in KS}
    out.update({"mAP@10": float(np.mean(aps)), "MedR": float(np.median(r)), "MeanR": float(np.mean(r))})
    return out


def _queries(table: pa.Table, n: int, seed: int) -> tuple[np.ndarray, list[list[str]]]:
    rng = np.random.default_rng(seed)
    ids = sorted(set(table.column("track_id").to_pylist()))
    vecs = rng.standard_normal((n, 16)).astype(np.float32)
    rel = [list(rng.choice(ids, size=int(rng.integers(1, 4)), replace=False)) for _ in range(n)]
    return vecs, rel


def test_queries_file_matches_naive_reference(vec_lib: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, table = vec_lib
    vecs, rel = _queries(table, 25, seed=11)
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"vector": vecs.tolist(), "relevant": rel}), path)
    run = evaluate_queries(open_quiet(root), load_queries(path), MODES)
    frames = track_frames(table)
    for mode in MODES:
        ranked = [engine_order(naive_track_scores(frames, q, mode)) for q in vecs]
        want = _naive_metrics(ranked, [set(r) for r in rel], len(frames))
        got = run.results["text_to_audio"][mode].metrics
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (mode, key)
    out = run.to_json()
    assert set(out) == {*MODES, "settings"}
    assert out["settings"]["query_kind"] == "vector" and out["settings"]["misses"]["text_to_audio"]["fusion"] == 0
    assert out["settings"]["tracks"] == 40 and out["settings"]["ties_audio_to_text"] == "pessimistic"


def test_candidate_cut_misses_get_the_worst_rank(vec_lib: tuple[Path, pa.Table]) -> None:
    root, table = vec_lib
    lib = open_quiet(root)
    vecs, rel = _queries(table, 30, seed=5)
    rel = [r[:1] for r in rel]
    plan = search_plan(lib.n_tracks, ks=(1, 5), candidates=3)  # the engine widens to k = 10
    assert not plan.exhaustive and plan.candidates == 10
    res, misses = text_to_audio(lib, vecs, rel, ["mean"], FusionParams(), ks=(1, 5), plan=plan)
    frames = track_frames(table)
    want_ranks = []
    for q, r in zip(vecs, rel):
        cands = engine_order(naive_track_scores(frames, q, "max"))[:10]
        mean = naive_track_scores({t: frames[t] for t in cands}, q, "mean")
        order = engine_order(mean)
        want_ranks.append(order.index(r[0]) + 1 if r[0] in order else 40)
    assert res["mean"].ranks is not None
    assert res["mean"].ranks.tolist() == want_ranks
    assert misses["mean"] == sum(w == 40 for w in want_ranks) > 0


def test_text_queries_need_the_library_encoder(vec_lib: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, _ = vec_lib
    path = tmp_path / "q.csv"
    path.write_text("query,relevant\nsoft piano,t0001\n")
    with pytest.raises(UsageError, match="precomputed"):
        evaluate_queries(open_quiet(root), load_queries(path), ["mean"])
    path.write_text('vector,relevant\n"[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]",nope\n')
    with pytest.raises(UsageError, match="none of its relevant ids"):
        evaluate_queries(open_quiet(root), load_queries(path), ["mean"])


def test_bootstrap_intervals_and_subsets(vec_lib: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, table = vec_lib
    vecs, rel = _queries(table, 20, seed=2)
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i:02d}", "vector": v.tolist(), "relevant": r}) + "\n"
                            for i, (v, r) in enumerate(zip(vecs, rel))))
    qs = load_queries(path)
    a, b = subset_queries(qs, 8, seed=4), subset_queries(qs, 8, seed=4)
    assert [q.query_id for q in a.queries] == [q.query_id for q in b.queries]
    assert [q.query_id for q in subset_queries(qs, 8, seed=5).queries] != [q.query_id for q in a.queries]
    whole = subset_queries(qs, 100, seed=4)
    assert whole.queries == qs.queries and whole.subset == Subset(requested=100, size=20, seed=4, population=20)
    run = evaluate_queries(open_quiet(root), a, ["max"], ci=True)
    # the settings say how to draw the same queries again: same seed, same ranks
    recorded = run.to_json()["settings"]["subset"]
    assert recorded == {"requested": 8, "size": 8, "seed": 4, "population": 20}
    redrawn = subset_queries(load_queries(path), recorded["requested"], recorded["seed"])
    again = evaluate_queries(open_quiet(root), redrawn, ["max"])
    first, second = run.results["text_to_audio"]["max"].ranks, again.results["text_to_audio"]["max"].ranks
    assert first is not None and second is not None and first.tolist() == second.tolist()
    assert evaluate_queries(open_quiet(root), qs, ["max"]).settings["subset"] is None
    r = run.results["text_to_audio"]["max"]
    assert r.n_queries == 8 and r.ci is not None
    for key in ("R@1", "R@10", "mAP@10", "MedR"):
        lo, hi = r.ci[key]
        assert lo <= r.metrics[key] <= hi
    assert "ci" in run.to_json()["max"]


def test_worker_processes_give_the_same_ranks(vec_lib: tuple[Path, pa.Table]) -> None:
    root, table = vec_lib
    lib = open_quiet(root)
    vecs, rel = _queries(table, 40, seed=9)  # two blocks of queries
    one, _ = text_to_audio(lib, vecs, rel, ["fusion", "none"], FusionParams())
    two, _ = text_to_audio(lib, vecs, rel, ["fusion", "none"], FusionParams(), workers=2)
    for mode in ("fusion", "none"):
        assert one[mode].metrics == two[mode].metrics
        np.testing.assert_array_equal(one[mode].ranks, two[mode].ranks)


def test_paired_difference_matches_direct_computation() -> None:
    rng = np.random.default_rng(0)
    ra, rb = rng.integers(1, 30, 50), rng.integers(1, 30, 50)

    def qr(r: np.ndarray) -> QueryRanks:
        ap = np.where(r <= 10, 1.0 / r, 0.0)
        return QueryRanks(r, np.ones(50, bool), ap, np.zeros(50), np.zeros(50))

    d = paired_difference(qr(ra), qr(rb), ks=(1, 10))
    assert d["R@10"]["diff"] == pytest.approx(np.mean(ra <= 10) - np.mean(rb <= 10))
    assert d["MedR"]["diff"] == pytest.approx(np.median(ra) - np.median(rb))
    lo, hi = d["mAP@10"]["ci"]
    assert lo <= d["mAP@10"]["diff"] <= hi
    same = paired_difference(qr(ra), qr(ra), ks=(1,))
    assert same["R@1"]["ci"] == [0.0, 0.0]
    # the query bootstrap written plainly: same draws, same interval
    idx = np.random.default_rng(0).integers(0, 50, size=(1000, 50))
    for name, stat in (("R@10", np.mean), ("MedR", np.median)):
        va, vb = per_query_values(ra, (1, 10))[name], per_query_values(rb, (1, 10))[name]
        want = np.quantile(stat(va[idx], axis=1) - stat(vb[idx], axis=1), [0.025, 0.975])
        assert d[name]["ci"] == pytest.approx(list(want)), name
    # by track: five queries per track drawn together, so the interval is wider
    tracks = np.repeat(np.arange(10), 5)
    clustered = paired_difference(qr(np.repeat(ra[:10], 5)), qr(np.repeat(rb[:10], 5)), ks=(10,), groups=tracks)
    plain = paired_difference(qr(np.repeat(ra[:10], 5)), qr(np.repeat(rb[:10], 5)), ks=(10,))
    width = [r["R@10"]["ci"][1] - r["R@10"]["ci"][0] for r in (clustered, plain)]
    assert width[0] > width[1]


# ----------------------------------------------------------------------------------- dataset, fake encoder
def _write_dataset(root: Path) -> Path:
    sf = pytest.importorskip("soundfile")
    sr = 16000
    rng = np.random.default_rng(1)
    for i, (freq, dur) in enumerate([(220, 12.0), (440, 25.0), (880, 7.0), (1760, 31.0)]):
        t = np.arange(int(dur * sr)) / sr
        x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
        if i == 3:  # a noise burst in 20-30 s: the segment item below
            x[20 * sr : 30 * sr] = 0.5 * rng.standard_normal(10 * sr)
        sf.write(root / f"a{i}.wav", x.astype(np.float32), sr)
    rows = [
        ("a0.wav", "low hum drone", "", ""),
        ("a0.wav", "deep bass tone", "", ""),
        ("a1.wav", "middle pitched beep tone", "", ""),
        ("a2.wav", "high whistle", "", ""),
        ("a3.wav", "very high squeal", "0", "20"),
        ("a3.wav", "loud noise burst", "20", "30"),
    ]
    manifest = root / "manifest.csv"
    manifest.write_text("path,caption,start_s,end_s\n" + "".join(f"{p},{c},{s},{e}\n" for p, c, s, e in rows))
    return manifest


def test_dataset_both_directions_match_naive_reference(tmp_path: Path) -> None:
    manifest = _write_dataset(tmp_path)
    data = load_manifest(manifest)
    enc = FakeEncoder()
    run = evaluate_dataset(data, tmp_path / "lib", enc, ["mean", "max", "fusion"], IndexConfig(window_s=5.0))
    with pytest.warns(UserWarning, match="RANDOM weights"):
        lib = Library.open(tmp_path / "lib", encoder=enc)
    tracks = lib.tracks.to_pylist()
    by_path = {Path(t["path"]).name: t for t in tracks}
    texts = [c for it in data.items for c in it.captions]
    caps = enc.embed_text(texts)
    owner = [Path(it.audio_path).name for it in data.items for _ in it.captions]
    item_caps, i = [], 0
    for it in data.items:
        item_caps.append(set(range(i, i + len(it.captions))))
        i += len(it.captions)

    def frames_of(it: DatasetItem) -> np.ndarray:
        t = by_path[Path(it.audio_path).name]
        f = lib.store.vectors(t["frame_start"], t["frame_count"])
        s = lib.store.start_s[t["frame_start"] : t["frame_start"] + t["frame_count"]]
        e = lib.store.end_s[t["frame_start"] : t["frame_start"] + t["frame_count"]]
        if it.start_s is not None and it.end_s is not None:
            keep = (np.minimum(e, it.end_s) - np.maximum(s, it.start_s)) > 0
            f = f[keep]
        return f

    def pool(rows: list[np.ndarray], mode: str) -> list[float]:
        """One query's candidates, on the query's own scale (naive_scores standardises over them)."""
        if mode == "mean":
            return [float(r.astype(np.float64).mean()) for r in rows]
        return [float(x) for x in naive_scores(mode, [list(r) for r in rows], FusionParams())]

    for mode in ("mean", "max", "fusion"):
        # audio→text: each item ranks all captions; first rank with pessimistic ties
        ranks = []
        for it, rel in zip(data.items, item_caps):
            f = frames_of(it)
            sc = np.array(pool([f @ c for c in caps], mode))
            best = max(sc[j] for j in rel)
            ranks.append(1 + sum(1 for j in range(len(sc)) if sc[j] > best or (sc[j] == best and j not in rel)))
        got = run.results["audio_to_text"][mode]
        assert got.ranks is not None and got.ranks.tolist() == ranks, mode
        assert got.metrics["MedR"] == float(np.median(ranks))
        # text→audio: each caption ranks the 4 tracks (engine order)
        whole = {Path(t["path"]).name: lib.store.vectors(t["frame_start"], t["frame_count"]) for t in tracks}
        t2a = []
        for c, own in zip(caps, owner):
            scores = dict(zip(whole, pool([f @ c for f in whole.values()], mode), strict=True))
            order = sorted(scores, key=lambda n: (-np.float32(scores[n]), by_path[n]["track_id"]))
            t2a.append(order.index(own) + 1)
        t2a_ranks = run.results["text_to_audio"][mode].ranks
        assert t2a_ranks is not None and t2a_ranks.tolist() == t2a, mode
    out = run.to_json()
    assert set(out) == {"mean", "max", "fusion", "audio_to_text", "settings"}
    assert set(out["audio_to_text"]) == {"mean", "max", "fusion"}
    assert "IoU>=0.5" in out["fusion"]  # the two segment items carry spans
    s = out["settings"]
    assert s["encoder"] == "fake" and s["dataset"] == "manifest" and len(s["dataset_hash"]) == 64
    assert s["items_evaluated"] == 5 and s["captions"] == 6 and s["window_s"] == 5.0
    again = evaluate_dataset(data, tmp_path / "lib", enc, ["mean"], IndexConfig(window_s=5.0))  # reuses
    assert "unchanged 4" in again.settings["index_run"]
    assert again.results["audio_to_text"]["mean"].metrics == run.results["audio_to_text"]["mean"].metrics


def test_span_past_the_audio_is_a_miss_not_the_whole_track(vec_lib: tuple[Path, pa.Table]) -> None:
    # Each track's relevant caption is its own first window: scored with the whole track it ranks first.
    # A span past the end of the audio has no window to score with; it used to fall back to the whole
    # track (rank 1 here), now every caption ties at 0 and pessimistic ties give the worst rank.
    root, table = vec_lib
    lib = open_quiet(root)
    frames = track_frames(table)
    ids = list(frames)[:6]
    caps = np.stack([frames[t][0] for t in ids])
    end = max(float(e) for e in table.column("end_s").to_pylist())
    queries = [(t, None) for t in ids[:3]] + [(t, (end + 10.0, end + 20.0)) for t in ids[3:]]
    relevant = [[i] for i in range(6)]
    res = audio_to_text(lib, caps, queries, relevant, ["max", "mean"], FusionParams())
    assert res["max"].ranks is not None and res["max"].ranks.tolist() == [1, 1, 1, 6, 6, 6]
    assert res["mean"].ranks is not None and res["mean"].ranks[3:].tolist() == [6, 6, 6]
    assert spans_without_windows(lib, queries) == 3
    inside = [(ids[0], (0.0, end))]  # a span that reaches the audio is not counted
    assert spans_without_windows(lib, inside) == 0


def test_dataset_settings_count_spans_without_windows(tmp_path: Path) -> None:
    manifest = _write_dataset(tmp_path)  # a2.wav lasts 7 s
    manifest.write_text(manifest.read_text() + "a2.wav,a silent ghost,40,50\n")
    run = evaluate_dataset(load_manifest(manifest), tmp_path / "lib", FakeEncoder(), ["mean"],
                           IndexConfig(window_s=5.0))
    assert run.to_json()["settings"]["spans_without_windows"] == {"audio_to_text": 1}


def test_queries_whose_track_was_not_returned_count_as_iou_zero() -> None:
    # Four queries with spans; query 2's relevant track was not returned (no segment, NaN): IoU 0, kept.
    qr = QueryRanks(np.array([1, 2, 40, 1]), np.array([True, True, False, True]), np.array([1.0, 0.5, 0.0, 1.0]),
                    np.array([0.0, 10.0, np.nan, 30.0]), np.array([10.0, 20.0, np.nan, 40.0]))
    spans = np.array([[0.0, 10.0], [15.0, 20.0], [0.0, 10.0], [np.nan, np.nan]])  # query 3: no span
    m = mode_result(qr, 40, ks=(1, 10), spans=spans).metrics
    ious = [1.0, 5.0 / 10.0, 0.0]  # naive: overlap / union per query with a span
    assert m["mIoU"] == pytest.approx(sum(ious) / 3)
    assert m["IoU>=0.5"] == pytest.approx(2 / 3) and m["R@1&IoU>=0.5"] == pytest.approx(1 / 3)


def test_dataset_intervals_resample_tracks_not_captions(tmp_path: Path) -> None:
    # text→audio: 6 captions of 4 tracks; audio→text: 5 items of 4 tracks (a3 has two spans). Each draw
    # takes a track with all its captions / items; the settings say so, and the intervals equal a cluster
    # bootstrap over exactly those per-caption / per-item values with the tracks as clusters.
    run = evaluate_dataset(load_manifest(_write_dataset(tmp_path)), tmp_path / "lib", FakeEncoder(), ["mean"],
                           IndexConfig(window_s=5.0), ci=True)
    note = run.settings["ci"]
    assert "over tracks" in note and "all of its captions" in note and "all of its items" in note
    clusters = {"text_to_audio": [0, 0, 1, 2, 3, 3], "audio_to_text": [0, 1, 2, 3, 3]}
    for direction, groups in clusters.items():
        r = run.results[direction]["mean"]
        assert r.ranks is not None and r.ci is not None and len(r.ranks) == len(groups)
        for k in (1, 5):
            hits = {f"R@{k}": (r.ranks <= k).astype(np.float64)}
            assert r.ci[f"R@{k}"] == pytest.approx(metrics_ci(hits, groups=groups)[f"R@{k}"]), (direction, k)


def test_dataset_settings_count_library_tracks_that_are_not_in_the_dataset(tmp_path: Path) -> None:
    # A reused library (e.g. a full run before a --subset run at the default path) holds tracks the dataset
    # does not name: every one is an extra text→audio candidate, so the settings must say how many.
    from songseek.benchmarks.datasets import subset

    data = load_manifest(_write_dataset(tmp_path))  # 5 items of 4 files
    full = evaluate_dataset(data, tmp_path / "lib", FakeEncoder(), ["mean"], IndexConfig(window_s=5.0))
    assert full.settings["distractor_tracks"] == 0
    part = subset(data, 2, seed=0)
    files = {it.audio_path for it in part.items}
    run = evaluate_dataset(part, tmp_path / "lib", FakeEncoder(), ["mean"], IndexConfig(window_s=5.0))
    assert run.settings["tracks"] == 4
    assert run.settings["distractor_tracks"] == 4 - len(files)
    assert run.results["text_to_audio"]["mean"].n_candidates == 4
