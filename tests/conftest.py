"""Shared fixtures: seeded vector libraries and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-data tests skipped")
    return SHARED_DATA
