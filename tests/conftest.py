"""Shared fixtures: seeded vector libraries and the location of ../shared/data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-data tests skipped")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray with 2 CPUs for every Ray test of the session; yields its address (for a second driver)."""
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]' (or '.[dev]')")
    pytest.importorskip("ray.data", reason="ray.data is not installed: pip install -e '.[ray]' (or '.[dev]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
