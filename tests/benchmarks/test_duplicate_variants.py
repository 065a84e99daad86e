"""The benchmark's audio variants: a cut stays inside the music, and a cut that leaves a trimmed copy is seen."""

from __future__ import annotations

import numpy as np

from songseek.benchmarks.duplicate_variants import audible_span, cut_section, trim_residual_db

SR = 8000


def test_a_cut_removes_music_and_not_the_silence_after_it() -> None:
    """A 5 s clip whose music ends at 3 s (the seed-9 trumpet clip, by shape): the cut lies inside the
    music, so the variant is an edit, not the music ending early (a trimmed copy)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([0.3 * rng.standard_normal(3 * SR), 1e-5 * rng.standard_normal(2 * SR)]).astype(np.float32)
    assert audible_span(x, SR) == (0, 3 * SR)
    y, sr = cut_section(0.55, 10.0)(x, SR)
    assert sr == SR and len(x) - len(y) == 3 * SR // 5          # a fifth of the music, not of the clip
    a = int(0.55 * 3 * SR)
    assert np.array_equal(y[:a], x[:a]) and np.array_equal(y[a:], x[a + 3 * SR // 5:])
    assert trim_residual_db(x, y) > -10.0                       # music on both sides of the cut: an edit
    whole = rng.standard_normal(10 * SR).astype(np.float32)     # audible throughout: cut as before
    assert audible_span(whole, SR) == (0, len(whole))
    assert np.array_equal(cut_section(0.3, 1.0)(whole, SR)[0], np.concatenate([whole[:3 * SR], whole[4 * SR:]]))


def test_a_loop_cut_by_whole_periods_is_a_trimmed_copy() -> None:
    rng = np.random.default_rng(1)
    loop = np.tile(rng.standard_normal(2 * SR).astype(np.float32), 10)   # a 2 s bar, 10 times
    whole_bars, _ = cut_section(0.4, 4.0)(loop, SR)                      # 4 s: two whole bars
    part_bar, _ = cut_section(0.4, 3.0)(loop, SR)                        # 3 s: one and a half
    assert trim_residual_db(loop, whole_bars) < -30.0 < trim_residual_db(loop, part_bar)
    assert trim_residual_db(loop, loop[SR:]) < -30.0                     # a trim itself
