"""benchmarks/int8_ranking.py: the matched-noise control and the spread of query vectors, against naive
references on seeded vectors."""

from __future__ import annotations

import numpy as np

from songseek.benchmarks.int8_ranking import matched_noise, row_cosines, spread


def test_matched_noise_sits_at_exactly_the_given_cosines() -> None:
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((50, 32)).astype(np.float32) * 3.0  # not unit: the control normalises
    want = rng.uniform(0.9, 0.99999, 50)
    got = matched_noise(ref, want, seed=1)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose((got.astype(np.float64) * unit).sum(axis=1), want, atol=2e-6)
    np.testing.assert_array_equal(got, matched_noise(ref, want, seed=1))  # seeded
    assert not np.array_equal(got, matched_noise(ref, want, seed=2))
    # the direction is random: two rows moved from the same reference do not move alike
    twin = matched_noise(np.repeat(ref[:1], 2, axis=0), np.array([0.95, 0.95]), seed=3)
    assert row_cosines(twin[:1], twin[1:])[0] < 0.99


def test_spread_is_the_median_off_diagonal_cosine() -> None:
    v = np.random.default_rng(0).standard_normal((9, 16)).astype(np.float32)
    naive = []
    for i in range(9):
        for j in range(9):
            if i != j:
                naive.append(float(v[i] @ v[j] / np.linalg.norm(v[i]) / np.linalg.norm(v[j])))
    assert abs(spread(v) - float(np.median(naive))) < 1e-6
    same = np.repeat(v[:1], 4, axis=0)
    assert abs(spread(same) - 1.0) < 1e-6
