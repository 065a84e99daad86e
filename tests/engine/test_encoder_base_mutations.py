"""encoders.base details the other tests left open (found by a mutation sweep): ``l2_normalize`` against a
plain loop (zero rows stay zero, float32 out, rows not columns) and EncoderInfo's defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest

from songseek.engine.encoders.base import EncoderInfo, l2_normalize, unit_rows


def test_l2_normalize_matches_a_plain_loop() -> None:
    x = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1e-3, -2e-3, 2e-3], [-5.0, 0.0, 12.0]], dtype=np.float64)
    got = l2_normalize(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    for row, out in zip(x.tolist(), got.tolist(), strict=True):
        norm = math.sqrt(sum(v * v for v in row))
        want = [v / norm for v in row] if norm > 0 else [0.0] * len(row)
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 2.0])), [0.0, 1.0])  # one vector: its own norm
    assert not np.isnan(l2_normalize(np.zeros((2, 4), np.float32))).any()


def test_encoder_info_defaults() -> None:
    info = EncoderInfo("demo", "bundled:demo-v1", 128, 16000)
    defaults = (info.checkpoint_sha256, info.random_weights, info.native_window_s, info.text_max_tokens)
    assert defaults == ("", False, 0.0, 0)


@pytest.mark.parametrize("scale", [1.0, 1e300, 1e-170, 1e-310])
def test_unit_rows_keeps_each_rows_direction_at_any_magnitude(scale: float) -> None:
    rows = np.random.default_rng(8).standard_normal((5, 7))
    got = unit_rows(rows * scale)
    want = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows.tolist()]  # the unscaled rows
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(want), rtol=1e-6, atol=1e-7)
