"""``compare`` against a naive reference written from the docstrings with plain loops, on synthetic
fingerprints (random +1/-1 bits, bands, loudness and silence masks) built to reach the edges: a match at the
very end of B, B exactly one block long, more than 16 blocks (the FFT batches), blocks half silent, a cut
(two lags), lags one frame apart, marginal agreements, tracks of equal length."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from songseek.engine.analysis.fingerprint import FRAME_S, Fingerprint, FingerprintMatch, compare

NBITS, NBANDS = 32, 33


def _naive_compare(a: Fingerprint, b: Fingerprint, block: int = 64) -> FingerprintMatch:
    if len(a.bits) > len(b.bits):  # the shorter is A; equal lengths keep the order given
        a, b = b, a
    block = min(block, max(16, len(a.bits) // 2))
    A, B = a.bits.astype(np.float64), b.bits.astype(np.float64)
    n_blocks, nb, nbits = len(A) // block, len(B), A.shape[1]
    lags, agree = [0] * n_blocks, [-math.inf] * n_blocks
    totals: dict[int, float] = {}
    mode = 0
    if n_blocks and nb >= block:
        windows = sliding_window_view(B, (block, nbits))[:, 0]  # (positions, block, bits)
        for k in range(n_blocks):
            corr = np.einsum("tb,ptb->p", A[k * block:(k + 1) * block], windows) / (block * nbits)
            for p, c in enumerate(corr.tolist()):
                totals[p - k * block] = totals.get(p - k * block, 0.0) + c
            p = int(np.argmax(corr))
            lags[k], agree[k] = p - k * block, float(corr[p])
        mode = max(sorted(totals), key=lambda lag: totals[lag])  # the first (smallest) lag among equals
    blk_active = [a.active[k * block:(k + 1) * block].mean() >= 0.5 for k in range(n_blocks)]
    found = [agree[k] >= 0.3 and blk_active[k] for k in range(n_blocks)]
    if not any(blk_active) or not any(found):
        return FingerprintMatch(0.0, 0.0, 0.0, 0.0, max([0.0, *agree]), 0.0, 0.0, 0.0)

    def agreement_at(k: int, lag: int) -> float:
        p = k * block + lag
        if p < 0 or p + block > nb:
            return -math.inf
        return float((A[k * block:(k + 1) * block] * B[p:p + block]).sum()) / (block * nbits)

    at_mode = [found[k] and agreement_at(k, mode) >= 0.3 and agreement_at(k, mode) >= 0.5 * agree[k]
               for k in range(n_blocks)]
    lag_of = [mode if at_mode[k] else lags[k] for k in range(n_blocks)]
    n_found = sum(found)
    one_lag = sum(at_mode) / n_found
    others = [lag_of[k] for k in range(n_blocks) if found[k] and not at_mode[k]]
    near = max((sum(1 for u in others if abs(u - v) <= 1) for v in others), default=0)
    pairs = [(k * block + t, k * block + t + lag_of[k]) for k in range(n_blocks) if found[k] for t in range(block)]
    pairs = [(f, g) for f, g in pairs if a.active[f] and b.active[g]]
    band_db = dynamics_db = timbre_db = level_corr = 0.0

    def spread(v: np.ndarray) -> float:
        q75, q25 = np.percentile(v, [75, 25])
        return float((q75 - q25) / 1.349)

    def loudness(bands: np.ndarray) -> float:
        return 10.0 * math.log10(sum(10.0 ** (float(v) / 10.0) for v in bands) + 1e-10)

    if len(pairs) >= block // 4:
        d = np.array([a.bands[f].astype(np.float64) - b.bands[g] for f, g in pairs])
        per_band = np.median(d, axis=0)
        band_db = abs(float(per_band[:11].mean()) - float(per_band[-11:].mean()))
        dynamics_db = spread(np.array([loudness(a.bands[f]) - loudness(b.bands[g]) for f, g in pairs]))
        rest = d - per_band
        rest = rest - np.median(rest, axis=1)[:, None]
        timbre_db = float(np.median([spread(rest[:, j]) for j in range(rest.shape[1])]))
        if a.loud is not None and b.loud is not None:
            la = np.array([float(a.loud[f]) for f, _ in pairs])
            lb = np.array([float(b.loud[g]) for _, g in pairs])
            dd, mm = la - lb, (la + lb) / 2
            if len(dd) >= 2 and dd.std() >= 1e-6 and mm.std() >= 1e-6:
                level_corr = float(np.mean((dd - dd.mean()) * (mm - mm.mean())) / (dd.std() * mm.std()))
    n = len(A)
    prod = [float(A[i] @ B[i + mode]) / nbits if 0 <= i + mode < nb else 0.0 for i in range(n)]
    covered = 0
    for i in range(n):
        lo = min(max(i - 8, 0), n)
        window = prod[lo:min(lo + 16, n)]
        covered += bool(a.active[i]) and sum(window) / len(window) >= 0.3
    return FingerprintMatch(
        coverage=n_found / sum(blk_active), one_lag=one_lag, two_lags=min(one_lag + near / n_found, 1.0),
        lag_s=mode * FRAME_S, agreement=float(np.mean([agree[k] for k in range(n_blocks) if found[k]])),
        band_db=band_db, dynamics_db=dynamics_db, matched_s=n_found * block * FRAME_S,
        lag_cover=covered / max(int(a.active.sum()), 1), timbre_db=timbre_db, level_corr=level_corr)


def _noisy(bits: np.ndarray, flip: float, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(bits.shape) < flip, -bits, bits)


def _fp(bits: np.ndarray, rng: np.random.Generator, active: np.ndarray | None = None,
        loud: np.ndarray | None = None) -> Fingerprint:
    n = len(bits)
    bands = (rng.normal(-30.0, 6.0, (n, NBANDS)) + rng.normal(0.0, 3.0, (n, 1))).astype(np.float32)
    return Fingerprint(bits.astype(np.float32), bands, np.ones(n, bool) if active is None else active,
                       rng.normal(-20.0, 4.0, n).astype(np.float32) if loud is None else loud)


def _random_bits(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sign(rng.standard_normal((n, NBITS)))


def _edit(seed: int) -> tuple[Fingerprint, Fingerprint]:
    """A (23 blocks, so two FFT batches) made of B's frames at several lags, with noise: a long part at one
    lag, a part after a cut, parts one frame apart (lags counted within a frame of each other), a marginal
    stretch (flips that leave agreement ~0.3), unrelated frames; silence in both, one block of A half
    silent."""
    rng = np.random.default_rng(seed)
    tb = 2600 + int(rng.integers(0, 64))
    bb = _random_bits(tb, rng)
    s = int(rng.integers(100, 300))
    flip_marginal = float(rng.uniform(0.3, 0.4))
    parts = [
        _noisy(bb[s:s + 640], 0.1, rng),                      # blocks 0-9 at lag s
        _noisy(bb[s + 900:s + 1028], 0.05, rng),             # 10-11: after a 260-frame cut
        _noisy(bb[s + 1100:s + 1164], 0.15, rng),            # 12: lag s + 332
        _noisy(bb[s + 1165:s + 1229], 0.15, rng),            # 13: one frame further
        _noisy(bb[s + 1300:s + 1556], flip_marginal, rng),   # 14-17: marginal
        _random_bits(192, rng),                              # 18-20: unrelated
        _noisy(bb[s + 1677:s + 1805], 0.2, rng),             # 21-22: lag s + 333 too
    ]
    ab = np.concatenate(parts)
    active_a = np.ones(len(ab), bool)
    active_a[64 * 3 + 32:64 * 4] = False                    # block 3: exactly half active
    active_a[64 * 5 + 20:64 * 6] = False                    # block 5: mostly silent
    active_b = np.ones(tb, bool)
    gaps = rng.integers(0, tb - 60, 6)
    for g in gaps:
        active_b[g:g + int(rng.integers(10, 60))] = False
    return _fp(ab, rng, active_a), _fp(bb, rng, active_b)


def _assert_same(got: FingerprintMatch, want: FingerprintMatch) -> None:
    for field in FingerprintMatch.__dataclass_fields__:
        g, w = getattr(got, field), getattr(want, field)
        assert g == pytest.approx(w, rel=1e-6, abs=1e-9), (field, g, w)


@pytest.mark.parametrize("seed", range(5))
def test_an_edited_copy_matches_the_naive_compare(seed: int) -> None:
    a, b = _edit(seed)
    want = _naive_compare(a, b)
    assert 0 < want.one_lag < 1 and want.coverage < 1 and want.level_corr != 0  # the edges are reached
    _assert_same(compare(a, b), want)
    _assert_same(compare(b, a), want)  # the longer given first: the shorter is still A


@pytest.mark.parametrize("seed", range(4))
def test_a_copy_trimmed_at_the_start_ends_on_bs_last_frame(seed: int) -> None:
    """A = the last 20 blocks of B (noisy): its last block lies on B's last frames at the one lag."""
    rng = np.random.default_rng(50 + seed)
    bb = _random_bits(1500 + seed, rng)
    a, b = _fp(_noisy(bb[-1280:], 0.3, rng), rng), _fp(bb, rng)
    want = _naive_compare(a, b)
    assert want.lag_s == pytest.approx((len(bb) - 1280) * FRAME_S) and want.one_lag == 1.0
    _assert_same(compare(a, b), want)


def test_tracks_of_equal_length_measure_the_lag_from_the_first() -> None:
    """duplicates.py turns ``lag_s`` into B's offset from A by which track is shorter, the first one when
    they are equally long: compare must then keep the order it was given."""
    rng = np.random.default_rng(7)
    bb = _random_bits(900, rng)
    a = _fp(np.concatenate([_random_bits(100, rng), bb[:800]]), rng)  # B frame = A frame - 100
    b = _fp(bb, rng)
    m = compare(a, b)
    assert m.lag_s == pytest.approx(-100 * FRAME_S) and m.coverage > 0.8
    _assert_same(m, _naive_compare(a, b))
    assert compare(b, a).lag_s == pytest.approx(100 * FRAME_S)


def test_a_track_one_block_long_is_found_in_one_as_long() -> None:
    rng = np.random.default_rng(8)
    bits = _random_bits(16, rng)
    a, b = _fp(_noisy(bits, 0.1, rng), rng), _fp(bits, rng)
    m = compare(a, b)
    assert m.coverage == 1.0 and m.lag_s == 0.0 and m.matched_s == pytest.approx(16 * FRAME_S)
    _assert_same(m, _naive_compare(a, b))


def test_a_constant_loudness_difference_has_no_level_correlation() -> None:
    rng = np.random.default_rng(9)
    bb = _random_bits(700, rng)
    a = _fp(_noisy(bb[100:612], 0.1, rng), rng, loud=np.full(512, -20.0, np.float32))
    b = _fp(bb, rng, loud=np.full(700, -26.0, np.float32))
    m = compare(a, b)
    assert m.coverage == 1.0 and m.level_corr == 0.0
    _assert_same(m, _naive_compare(a, b))


@pytest.mark.parametrize("both_active", [15, 16])
def test_the_band_statistics_need_a_quarter_block_of_frames_active_in_both(both_active: int) -> None:
    rng = np.random.default_rng(10)
    bb = _random_bits(400, rng)
    active_b = np.zeros(400, bool)
    active_b[100:100 + both_active] = True                   # silence in B but for these frames
    a, b = _fp(_noisy(bb[100:228], 0.1, rng), rng), _fp(bb, rng, active_b)
    m = compare(a, b)
    assert m.coverage == 1.0 and (m.band_db > 0) == (both_active >= 16)
    _assert_same(m, _naive_compare(a, b))


def test_a_block_that_agrees_at_the_one_lag_under_the_match_level_is_not_at_it() -> None:
    """Block 4 is B's frames 900.. (agreement ~0.45) mixed with a little of the frames at the one lag
    (~0.26): over half its own best, but under the 0.3 a match needs, so it stays at its own lag."""
    rng = np.random.default_rng(12)
    bb = _random_bits(1200, rng)
    ab = _noisy(bb[200:840], 0.1, rng)                       # the one lag: 200
    pick = rng.random((64, NBITS))
    ab[256:320] = np.where(pick < 0.45, bb[900:964], np.where(pick < 0.71, bb[456:520], _random_bits(64, rng)))
    own = float((ab[256:320] * bb[900:964]).mean())
    at_one = float((ab[256:320] * bb[456:520]).mean())
    assert 0.3 > at_one >= own / 2 and own >= 0.3             # the case is reached
    a, b = _fp(ab, rng), _fp(bb, rng)
    m = compare(a, b)
    assert m.one_lag == pytest.approx(9 / 10) and m.lag_s == pytest.approx(200 * FRAME_S)
    _assert_same(m, _naive_compare(a, b))


def test_unrelated_tracks_report_only_their_best_agreement() -> None:
    rng = np.random.default_rng(13)
    a, b = _fp(_random_bits(300, rng), rng), _fp(_random_bits(500, rng), rng)
    m = compare(a, b)
    assert m.coverage == 0.0 and 0.0 < m.agreement < 0.3
    _assert_same(m, _naive_compare(a, b))


def test_a_bar_repeated_elsewhere_in_b_is_counted_at_the_one_lag() -> None:
    """Block 2 of A is in B twice: exactly at frames 700.. and, with noise, at the one lag. Its own best is
    700; it agrees at the one lag well enough, so its frames are compared there (the band statistics)."""
    rng = np.random.default_rng(14)
    bb = _random_bits(1000, rng)
    ab = bb[100:612].copy()                                  # the one lag: 100
    bb[700:764] = ab[128:192]
    ab[128:192] = _noisy(ab[128:192], 0.08, rng)
    bb[228:292] = _noisy(bb[228:292], 0.08, rng)
    a, b = _fp(ab, rng), _fp(bb, rng)
    want = _naive_compare(a, b)
    assert want.one_lag == 1.0 and want.lag_s == pytest.approx(100 * FRAME_S)
    _assert_same(compare(a, b), want)
