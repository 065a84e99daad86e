"""The exact path (int8 scan + proven bound + float32 re-score) against naive brute force, and the index
defaults that `bench query-speed` tunes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize
from songseek.engine.query import scan as scan_mod
from songseek.engine.query import search as search_mod
from songseek.engine.query.candidates import ExactPolicy, best_per_track, rows_to_rescore, top_tracks
from songseek.engine.query.search import Library, SearchOptions
from songseek.engine.storage import index as faiss_index
from songseek.engine.storage.manifest import Manifest
from songseek.engine.storage.store import TrackRecord
from songseek.engine.storage.writer import LibraryWriter

DIM = 24


def _build(root: Path, factory: str, n_tracks: int = 150, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((6, DIM)))
    info = EncoderInfo(name="precomputed", checkpoint="", dim=DIM, sample_rate=0)
    tracks = []
    with LibraryWriter(root, Manifest(encoder=info, window_s=10.0, hop_s=10.0, index_factory=factory)) as w:
        for t in range(n_tracks):
            n = int(rng.integers(1, 30))
            v = l2_normalize(centres[t % 6] + 0.7 * rng.standard_normal((n, DIM)))
            tracks.append(v)
            starts = np.arange(n) * 10.0
            w.add_track(TrackRecord(track_id=f"t{t:04d}", path=f"{t}.wav"), v, starts, starts + 10)
            if t % 50 == 49:
                w.commit()  # several shards
        w.commit()
        w.update_index(factory)
    return tracks


INT8_ALWAYS = ExactPolicy(fp32_frames=0)  # use the int8 copy even at these tiny sizes


def _open(root: Path, policy: ExactPolicy = ExactPolicy()) -> Library:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Library.open(root, policy=policy)


def _naive(lib: Library, q: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Best frame per live track in float64, best first (ties: lower track row)."""
    best = []
    for s, c in zip(lib.track_column("frame_start"), lib.track_column("frame_count")):
        vecs = lib.store.rows(int(s), int(s + c)).astype(np.float64)
        best.append((vecs @ q.astype(np.float64)).max())
    b = np.asarray(best)
    order = np.lexsort((np.arange(len(b)), -b))[:want]
    return order, b[order]


@pytest.mark.parametrize("factory", ["IVF4,Flat", "Flat"])
def test_exact_candidates_equal_naive_brute_force(tmp_path: Path, factory: str) -> None:
    _build(tmp_path / "lib", factory)
    lib = _open(tmp_path / "lib", ExactPolicy(fp32_frames=0, build_after=2))  # int8 from the second query on
    rng = np.random.default_rng(1)
    for _ in range(12):
        q = l2_normalize(rng.standard_normal(DIM))
        for want in (5, 40):
            rows, scores = lib.exact_candidates(q, want, None)
            ref_rows, ref_scores = _naive(lib, q, want)
            np.testing.assert_array_equal(rows, ref_rows)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    if factory == "Flat":
        assert lib.int8_copy is None  # a flat float32 index is exact already
    else:
        assert isinstance(lib.int8_copy, scan_mod.Int8Scanner) and lib.int8_copy.ntotal == lib.store.n_rows
        # the first query ran float32 (no copy yet); every later one was answered by the int8 pass
        assert lib.exact_counts == {"int8": 23, "float32": 1}


def test_exact_path_falls_back_to_float32_when_the_bound_is_too_loose(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _build(tmp_path / "lib", "IVF4,Flat")
    lib = _open(tmp_path / "lib", INT8_ALWAYS)
    scanner = lib.int8_scanner()
    assert scanner is not None
    scores = scanner.scores
    calls: list[float] = []

    def loose(q: np.ndarray) -> tuple[np.ndarray, float]:
        approx, _ = scores(q)
        calls.append(10.0)
        return approx, 10.0  # every frame is within the bound of the top: no int8 result can be used

    monkeypatch.setattr(scanner, "scores", loose)
    q = l2_normalize(np.random.default_rng(2).standard_normal(DIM))
    rows, scores_ = lib.exact_candidates(q, 20, None)
    assert lib.exact_counts == {"int8": 0, "float32": 1}  # fell back instead of re-scoring
    ref_rows, ref_scores = _naive(lib, q, 20)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores_, ref_scores, atol=1e-5)
    assert calls


def test_exact_candidates_with_a_filter_equal_naive_brute_force(tmp_path: Path) -> None:
    _build(tmp_path / "lib", "IVF4,Flat")
    lib = _open(tmp_path / "lib", INT8_ALWAYS)
    lib.int8_scanner()
    allowed = np.arange(0, lib.n_tracks, 3)
    rng = np.random.default_rng(6)
    for _ in range(6):
        q = l2_normalize(rng.standard_normal(DIM))
        rows, scores = lib.exact_candidates(q, 15, allowed)
        ref_rows, ref_scores = _naive(lib, q, lib.n_tracks)
        keep = np.isin(ref_rows, allowed)
        np.testing.assert_array_equal(rows, ref_rows[keep][:15])
        np.testing.assert_allclose(scores, ref_scores[keep][:15], atol=1e-5)
    assert isinstance(lib.int8_copy, scan_mod.Int8Scanner)


def test_exact_candidates_skip_dead_frames(tmp_path: Path) -> None:
    tracks = _build(tmp_path / "lib", "IVF4,Flat")
    with LibraryWriter(tmp_path / "lib") as w:  # removed tracks leave their frames behind, dead
        for t in range(0, 150, 4):
            w.remove_track(f"t{t:04d}")
        w.commit()
    lib = _open(tmp_path / "lib", INT8_ALWAYS)
    assert (lib.frame_owner < 0).sum() == sum(len(tracks[t]) for t in range(0, 150, 4))
    scanner = lib.int8_scanner()
    assert scanner is not None
    rng = np.random.default_rng(11)
    for t in (0, 8, 9):  # queries equal to a dead frame, whose own score would be the top one
        q = tracks[t][0] if t % 4 == 0 else l2_normalize(rng.standard_normal(DIM))
        approx, margin = scanner.scores(q.astype(np.float32))
        assert rows_to_rescore(approx, margin, lib.frame_owner, 25, lib.first_frames(25)) is not None
        rows, scores = lib.exact_candidates(q.astype(np.float32), 25, None)
        ref_rows, ref_scores = _naive(lib, q, 25)
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize("subset_frames", [ExactPolicy().subset_frames, 0])
def test_filtered_search_equals_naive_brute_force_over_the_subset(tmp_path: Path, subset_frames: int) -> None:
    """Small filters score only their tracks' frames (runs of neighbours, across shards and the gaps that
    removed tracks leave); broad ones under --exact mask the full exact scan. Both must be exact."""
    _build(tmp_path / "lib", "IVF4,Flat")
    with LibraryWriter(tmp_path / "lib") as w:
        for t in range(3, 150, 10):
            w.remove_track(f"t{t:04d}")
        w.commit()
    lib = _open(tmp_path / "lib", ExactPolicy(subset_frames=subset_frames))
    rng = np.random.default_rng(14)
    n = lib.n_tracks
    for allowed in (np.arange(n), np.arange(0, n, 2), np.r_[0:40, 60:n], np.array([5]), np.zeros(0, np.int64)):
        q = l2_normalize(rng.standard_normal(DIM)).astype(np.float32)
        ref_rows, ref_scores = _naive(lib, q, n)
        keep = np.isin(ref_rows, allowed)
        opts = SearchOptions(k=10, candidates=30, exact=True)
        rows, scores = lib.candidates(q, opts, allowed)
        np.testing.assert_array_equal(rows, ref_rows[keep][:30])
        np.testing.assert_allclose(scores, ref_scores[keep][:30], atol=1e-5)


def test_the_int8_copy_is_built_when_enough_exact_queries_pay_for_it(tmp_path: Path) -> None:
    _build(tmp_path / "lib", "IVF4,Flat")
    lib = _open(tmp_path / "lib", INT8_ALWAYS)
    rng = np.random.default_rng(10)
    after = INT8_ALWAYS.build_after
    opts = SearchOptions(k=5, candidates=10, exact=True)
    for _ in range(after - 1):  # one at a time: float32 until build_after queries were asked
        lib.search_vectors(l2_normalize(rng.standard_normal((1, DIM))), opts)
        assert lib.int8_copy is None
    lib.search_vectors(l2_normalize(rng.standard_normal((1, DIM))), opts)
    assert isinstance(lib.int8_copy, scan_mod.Int8Scanner)

    batch = _open(tmp_path / "lib", INT8_ALWAYS)  # a batch that large builds it before its first query
    hits = batch.search_vectors(l2_normalize(rng.standard_normal((after, DIM))), opts)
    assert isinstance(batch.int8_copy, scan_mod.Int8Scanner) and len(hits) == after
    few = _open(tmp_path / "lib", INT8_ALWAYS)
    few.search_vectors(l2_normalize(rng.standard_normal((after - 1, DIM))), opts)
    assert few.int8_copy is None
    flat_root = tmp_path / "flat"
    _build(flat_root, "Flat")
    flat = _open(flat_root, INT8_ALWAYS)  # a flat float32 index is exact: never a copy
    flat.search_vectors(l2_normalize(rng.standard_normal((after, DIM))), opts)
    assert flat.int8_copy is None


def test_no_int8_copy_when_memory_is_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    _build(tmp_path / "lib", "IVF4,Flat")
    lib = _open(tmp_path / "lib", INT8_ALWAYS)
    need = lib.store.n_rows * (scan_mod.PAD + 8)
    monkeypatch.setattr(scan_mod, "available_memory", lambda: 2 * need - 2)
    with caplog.at_level("WARNING"):
        assert lib.int8_scanner() is None
    assert "memory available" in caplog.text
    q = l2_normalize(np.random.default_rng(13).standard_normal(DIM))
    rows, scores = lib.exact_candidates(q, 10, None)  # float32 instead
    np.testing.assert_array_equal(rows, _naive(lib, q, 10)[0])
    monkeypatch.setattr(scan_mod, "available_memory", lambda: 2 * need)
    assert scan_mod.build_scanner(lib.store.shards()) is not None
    free = scan_mod.available_memory()
    assert free is None or free > 0


def test_threads_sharing_a_library_build_the_int8_copy_once(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _build(tmp_path / "lib", "IVF4,Flat")
    lib = _open(tmp_path / "lib", ExactPolicy(fp32_frames=0, build_after=1))
    builds: list[int] = []
    build = search_mod.build_scanner

    def counting(shards: list[np.ndarray]) -> scan_mod.Int8Scanner | None:
        builds.append(1)
        return build(shards)

    monkeypatch.setattr(search_mod, "build_scanner", counting)
    qs = l2_normalize(np.random.default_rng(12).standard_normal((8, DIM))).astype(np.float32)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda q: lib.exact_candidates(q, 12, None), qs))
    assert builds == [1]
    for q, (rows, scores) in zip(qs, got):
        ref_rows, ref_scores = _naive(lib, q, 12)
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_exact_search_results_match_the_default_path_on_a_flat_library(tmp_path: Path) -> None:
    _build(tmp_path / "lib", "Flat")
    lib = _open(tmp_path / "lib")
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = l2_normalize(rng.standard_normal((1, DIM)))
        a = lib.search_vectors(q, SearchOptions(k=10, candidates=30))[0]
        e = lib.search_vectors(q, SearchOptions(k=10, candidates=30, exact=True))[0]
        assert [h.track_id for h in a] == [h.track_id for h in e]
        assert [h.score for h in a] == pytest.approx([h.score for h in e])


def _hard_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Rows that stress a per-row int8 code: Gaussian, one spike, tiny and huge norms, near-binary, zero."""
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v[::7] = 0.0
    v[::7, rng.integers(0, dim)] = 1.0                      # one component: error 0
    v[1::7, 0] *= 50.0                                      # one outlier dimension: coarse scale
    v[2::7] *= 1e-6                                         # tiny rows
    v[3::7] = np.sign(v[3::7]) * 0.5                        # ±0.5 everywhere
    v[4::7] *= 40.0                                         # norms far above 1
    v[5:6] = 0.0                                            # a zero row (when there is a sixth)
    return v


@pytest.mark.parametrize("dim", [7, 24, 100, 512])
def test_int8_scores_are_within_their_bound_of_float64(dim: int) -> None:
    rng = np.random.default_rng(dim)
    shards = [_hard_rows(rng, n, dim) for n in (300, 1, 901)]
    allv = np.concatenate(shards).astype(np.float64)
    scanner = scan_mod.Int8Scanner(shards, batch=256)
    assert scanner.ntotal == 1202 and scanner.width % scan_mod.PAD == 0
    assert scanner.nbytes == 1202 * (scanner.width + 2)
    unit = l2_normalize(rng.standard_normal(dim)).astype(np.float32)
    for q in (unit, 3.0 * unit, allv[1].astype(np.float32), -allv[3].astype(np.float32)):
        approx, margin = scanner.scores(q)
        err = np.abs(approx.astype(np.float64) - allv @ q.astype(np.float64))
        assert err.max() <= margin
    assert scanner.check(shards) is None


def test_int8_bound_is_tight_enough_to_be_useful_on_unit_vectors() -> None:
    rng = np.random.default_rng(8)
    v = l2_normalize(rng.standard_normal((4000, 512))).astype(np.float32)
    scanner = scan_mod.Int8Scanner([v])
    q = l2_normalize(rng.standard_normal(512)).astype(np.float32)
    approx, margin = scanner.scores(q)
    err = np.abs(approx.astype(np.float64) - v.astype(np.float64) @ q)
    # measured: bound ≈ 0.021 (mostly ‖q‖·max‖v − v̂‖ ≈ 0.013), real errors below 0.005
    assert err.max() < margin < 0.03
    assert 0.005 < scanner.max_err < 0.02


def test_a_kernel_that_breaks_its_bound_turns_the_int8_pass_off(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _build(tmp_path / "lib", "IVF4,Flat")
    lib = _open(tmp_path / "lib", INT8_ALWAYS)
    real = scan_mod.Int8Scanner.scores

    def off_by_a_bit(self: scan_mod.Int8Scanner, q: np.ndarray) -> tuple[np.ndarray, float]:
        approx, margin = real(self, q)
        return approx + 2 * margin, margin  # what a miscompiled kernel (or one reading past rows) looks like

    monkeypatch.setattr(scan_mod.Int8Scanner, "scores", off_by_a_bit)
    assert lib.exact_scanner(upcoming=INT8_ALWAYS.build_after) is None and lib.int8_copy is None
    assert lib.int8_scanner() is None  # the failed check is remembered: no second build
    q = l2_normalize(np.random.default_rng(9).standard_normal(DIM))
    rows, scores = lib.exact_candidates(q, 10, None)  # float32 brute force instead
    ref_rows, ref_scores = _naive(lib, q, 10)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_index_defaults() -> None:
    assert faiss_index.auto_factory(faiss_index.IVF_THRESHOLD - 1, 512) == "Flat"
    big = faiss_index.auto_factory(1_000_000, 512)
    assert big.startswith("IVF") and big.endswith(",SQfp16")
    nlist = faiss_index.ivf_nlist(big)
    assert nlist & (nlist - 1) == 0  # a power of two
    assert faiss_index.default_nprobe("Flat") == 1
    assert faiss_index.default_nprobe("IVF1024,SQfp16") == max(faiss_index.MIN_NPROBE,
                                                               round(1024 * faiss_index.NPROBE_FRACTION))
    assert faiss_index.default_nprobe("IVF4,Flat") == 4  # never more lists than there are
    # small libraries probe enough lists to scan about MIN_SCAN_FRAMES frames
    assert faiss_index.default_nprobe("IVF256,SQfp16", 50_000) == int(np.ceil(256 * faiss_index.MIN_SCAN_FRAMES
                                                                               / 50_000))
    assert faiss_index.default_nprobe("IVF1024,SQfp16", 1_000_000) == 32
    assert faiss_index.ivf_nlist("HNSW32") == 0 and faiss_index.training_sample([np.zeros((3, 4))], "Flat") is None


def test_set_nprobe_reaches_cpu_ivf_and_indices_with_their_own_nprobe() -> None:
    import faiss

    ivf = faiss.index_factory(16, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    faiss_index.set_nprobe(ivf, 3)
    assert faiss.extract_index_ivf(ivf).nprobe == 3

    class GpuLike(faiss.IndexFlatIP):  # a GpuIndexIVF* as extract_index_ivf sees it: an Index, no CPU IVF
        nprobe = 1

    gpu = GpuLike(16)
    faiss_index.set_nprobe(gpu, 7)
    assert gpu.nprobe == 7
    faiss_index.set_nprobe(faiss.IndexFlatIP(16), 5)  # no nprobe at all: nothing to set, no error


@pytest.mark.parametrize("adversary", ["worst", "random"])
def test_rows_to_rescore_proves_the_answer_under_errors_at_the_bound(adversary: str) -> None:
    """The proof step alone, with int8 errors as large as the bound allows (real int8 errors sit far inside
    it, so the libraries above never test the 2m margins): "worst" reads the true best frame of each true top
    track m low and every other frame m high; "random" adds +-m at random. Re-scoring the returned rows must
    give brute force's top tracks (a naive loop over every frame) whenever a proof is returned."""
    rng = np.random.default_rng(21 if adversary == "worst" else 22)
    proofs = 0
    for _ in range(25):
        n_tracks = int(rng.integers(60, 400))
        owner = np.repeat(np.arange(n_tracks), rng.integers(1, 20, size=n_tracks))
        owner[rng.random(len(owner)) < 0.05] = -1  # dead frames of removed tracks
        exact = rng.standard_normal(len(owner)).astype(np.float32)
        m = float(rng.choice([0.005, 0.02, 0.05]))
        want = int(rng.integers(1, 30))
        best: dict[int, tuple[float, int]] = {}  # naive: each live track's best frame
        for row, (t, s) in enumerate(zip(owner.tolist(), exact.tolist())):
            if t >= 0 and (t not in best or s > best[t][0]):
                best[t] = (s, row)
        top = sorted(best, key=lambda t: -best[t][0])[:want]
        if adversary == "worst":
            err = np.full(len(owner), m)
            err[[best[t][1] for t in top]] = -m
        else:
            err = rng.choice([-m, m], size=len(owner))
        approx = (exact.astype(np.float64) + err).astype(np.float32)
        bound = float(np.abs(approx.astype(np.float64) - exact).max())  # m, up to float32 rounding
        rows = rows_to_rescore(approx, bound, owner, want, max(4 * want, 256))
        if rows is None:
            continue
        proofs += 1
        got: dict[int, float] = {}
        for row in rows.tolist():
            if owner[row] >= 0:
                got[int(owner[row])] = max(got.get(int(owner[row]), -np.inf), float(exact[row]))
        ranked = sorted(got, key=lambda t: -got[t])[:want]
        assert ranked == top and [got[t] for t in ranked] == [best[t][0] for t in top]
    assert proofs >= 15


def test_rows_to_rescore_keeps_frames_exactly_2m_below() -> None:
    """Near-ties placed by hand where only the full 2m margins hold: track 0's best frame (1.0) reads m low
    and track 1's best (1.0 - m/100) reads m high, so the int8 leader is track 1; track 0's second frame
    (1.0 - m/100 as well) reads m high and hides its best frame. Brute force says track 0 at 1.0."""
    m = 0.01
    exact = np.array([1.0, 1.0 - m / 100, 1.0 - m / 100] + [-5.0] * 200, np.float32)
    owner = np.array([0, 0, 1] + list(range(2, 202)), np.int64)
    approx = exact + np.array([-m, m, m] + [0.0] * 200, np.float32)
    bound = float(np.abs(approx.astype(np.float64) - exact).max())
    rows = rows_to_rescore(approx, bound, owner, 1, 256)
    assert rows is not None and 0 in rows.tolist()  # the frame that decides the answer is re-scored
    assert owner[rows[np.argmax(exact[rows])]] == 0


def test_exact_policy_defaults_are_the_documented_ones() -> None:
    """The numbers ExactPolicy's docstring argues for (16 exact queries: the ski-rental rule)."""
    assert ExactPolicy() == ExactPolicy(subset_frames=200_000, fp32_frames=50_000, build_after=16, where_cache=32)


def test_best_per_track_equals_a_naive_loop_with_ties_to_the_lower_row() -> None:
    """Scores on a coarse grid so tracks tie often: best frame per track, best first, ties to the lower row."""
    rng = np.random.default_rng(31)
    for _ in range(50):
        n = int(rng.integers(1, 80))
        owners = rng.integers(-1, 12, n).astype(np.int64)
        scores = (rng.integers(0, 4, n) / 4).astype(np.float32)
        want = int(rng.integers(1, 15))
        best: dict[int, float] = {}
        for t, s in zip(owners.tolist(), scores.tolist()):
            if t >= 0:
                best[t] = max(best.get(t, -np.inf), s)
        ref = sorted(best, key=lambda t: (-best[t], t))[:want]
        rows, got = best_per_track(owners, scores, want)
        assert rows.tolist() == ref and got.tolist() == [best[t] for t in ref]


def test_rows_to_rescore_returns_none_without_enough_live_tracks() -> None:
    owner = np.repeat(np.arange(5), 40).astype(np.int64)
    approx = np.random.default_rng(32).standard_normal(len(owner)).astype(np.float32)
    assert rows_to_rescore(approx.copy(), 0.01, owner, 6, 256) is None   # 5 live tracks, 6 wanted
    assert rows_to_rescore(approx.copy(), 0.01, np.full(len(owner), -1), 1, 256) is None  # none live


def test_rows_to_rescore_widens_a_threshold_that_covers_too_few_tracks() -> None:
    """One track per frame, the best frame on the 1/64 sample: the first guess (the sample's best) covers a
    single track, so for want=2 the threshold must be lowered, not given up on; the proof names the naive top 2."""
    rng = np.random.default_rng(33)
    exact = rng.standard_normal(64 * 100).astype(np.float32)
    exact[0] = 10.0
    owner = np.arange(len(exact), dtype=np.int64)
    rows = rows_to_rescore(exact.copy(), 1e-3, owner, 2, 64)
    assert rows is not None
    assert sorted(rows.tolist(), key=lambda r: -exact[r])[:2] == np.argsort(-exact)[:2].tolist()


def test_rows_to_rescore_marks_dead_frames_and_never_returns_them() -> None:
    """Frames of removed tracks (owner -1) are set to -inf in the caller's buffer and never re-scored, even
    where their int8 scores are the highest."""
    rng = np.random.default_rng(34)
    owner = np.repeat(np.arange(300), 4).astype(np.int64)
    owner[::3] = -1
    approx = rng.standard_normal(len(owner)).astype(np.float32)
    approx[owner < 0] += 5.0
    buf = approx.copy()
    rows = rows_to_rescore(buf, 0.01, owner, 3, 256)
    assert rows is not None and (owner[rows] >= 0).all()
    assert np.isneginf(buf[owner < 0]).all() and (buf[owner >= 0] == approx[owner >= 0]).all()


def test_int8_margin_equals_the_sum_of_its_documented_terms() -> None:
    """int8_margin against the docstring's five terms written out in float64 with plain loops."""
    rng = np.random.default_rng(35)
    for dim in (7, 64, 512):
        q = rng.standard_normal(dim).astype(np.float32)
        qb = (q * (1 + rng.uniform(-2.0 ** -8, 2.0 ** -8, dim))).astype(np.float32)
        max_err, max_norm = float(rng.uniform(0.001, 0.05)), float(rng.uniform(0.5, 3.0))
        qn = sum(float(x) ** 2 for x in q) ** 0.5
        qbn = sum(float(x) ** 2 for x in qb) ** 0.5
        dq = sum((float(a) - float(b)) ** 2 for a, b in zip(q, qb)) ** 0.5
        u = 2.0 ** -24
        g = dim * u / (1 - dim * u)
        terms = [qn * max_err, dq * max_norm, g * qbn * max_norm, 2.0 ** -8 * (1 + g) * qbn * max_norm,
                 g * qn * max_norm]
        ref = 1.01 * sum(terms) + 1e-6
        assert scan_mod.int8_margin(q, qb, max_err, max_norm, dim) == pytest.approx(ref, rel=1e-9, abs=0)


def test_int8_scanner_errors_and_norms_bound_every_row() -> None:
    """max_err and max_norm against the stored codes decoded by hand: bounds over every row of every batch
    (zero rows included), and tight ones (within 1e-3)."""
    rng = np.random.default_rng(36)
    shards = [_hard_rows(rng, n, 24) for n in (300, 1, 901)]
    scanner = scan_mod.Int8Scanner(shards, batch=256)
    v = np.concatenate(shards).astype(np.float64)
    v_hat = scanner.codes[:, :24].numpy().astype(np.float64) * scanner.scales.float().numpy()[:, None]
    err = np.sqrt(((v - v_hat) ** 2).sum(axis=1)).max()
    norm = max(np.sqrt((v ** 2).sum(axis=1)).max(), np.sqrt((v_hat ** 2).sum(axis=1)).max())
    assert err <= scanner.max_err <= err * 1.001 + 1e-12
    assert norm <= scanner.max_norm <= norm * 1.001
    assert (scanner.codes[5].numpy() == 0).all()  # the zero row: all-zero codes, not NaN garbage


@pytest.mark.parametrize("offset", [1.5, "near_one"])
def test_check_refuses_a_kernel_that_breaks_its_bound(monkeypatch: pytest.MonkeyPatch, offset: float | str) -> None:
    """check() refuses any error past the margin (here 1.5 m, where real errors stay below m/4), including
    one that shows only at scores near +-1 (output rounding), which only stored rows as queries reach."""
    rng = np.random.default_rng(37)
    shards = [l2_normalize(rng.standard_normal((500, 64))).astype(np.float32)]
    scanner = scan_mod.Int8Scanner(shards)
    assert scanner.check(shards) is None
    real = scan_mod.Int8Scanner.scores

    def broken(self: scan_mod.Int8Scanner, q: np.ndarray) -> tuple[np.ndarray, float]:
        approx, margin = real(self, q)
        if offset == "near_one":
            return np.where(np.abs(approx) > 0.95, approx + 2 * margin, approx).astype(np.float32), margin
        return approx + float(offset) * margin, margin

    monkeypatch.setattr(scan_mod.Int8Scanner, "scores", broken)
    assert scanner.check(shards) is not None


def test_top_tracks_keeps_every_frame_tied_at_its_cut() -> None:
    """Tied frames straddling the top-kf cut: argpartition kept an arbitrary one, so a tie between tracks went
    to track 2 where brute force gives track 1 (the lower row)."""
    sims = np.r_[np.full(255, .9), .5, .5, np.full(100, .1)].astype(np.float32)
    owner = np.r_[np.zeros(255, int), 2, 1, np.arange(3, 103)].astype(np.int64)
    assert top_tracks(sims, owner, 2, 256)[0].tolist() == best_per_track(owner, sims, 2)[0].tolist() == [0, 1]
    rng = np.random.default_rng(5)
    for _ in range(200):  # coarse scores: ties everywhere, at every cut
        n = int(rng.integers(5, 400))
        sims = (rng.integers(0, 6, n) / 5).astype(np.float32)
        owner = rng.integers(0, 40, n).astype(np.int64)
        want, kf = int(rng.integers(1, 10)), int(rng.integers(1, n + 1))
        got, got_scores = top_tracks(sims, owner, want, kf)
        ref, ref_scores = best_per_track(owner, sims, want)
        assert got.tolist() == ref.tolist() and got_scores.tolist() == ref_scores.tolist()
