"""Shared fixtures: seeded vector libraries and the location of ../shared/data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw from a seed fixed per test (house rule: seeded data), so a CI run cannot meet an example no
# earlier run met; HYPOTHESIS_PROFILE=explore draws fresh examples each run, to hunt for new ones locally.
settings.register_profile("seeded", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present (a user's clone): real-data tests skipped")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _onnx_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Exported ONNX text towers go to a temporary folder, never the user's ~/.cache."""
    old = os.environ.get("SONGSEEK_CACHE_DIR")
    os.environ["SONGSEEK_CACHE_DIR"] = str(tmp_path_factory.mktemp("songseek-cache"))
    yield
    if old is None:
        os.environ.pop("SONGSEEK_CACHE_DIR", None)
    else:
        os.environ["SONGSEEK_CACHE_DIR"] = old


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
