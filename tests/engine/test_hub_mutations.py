"""_hub details the encoder tests left open (found by a mutation sweep): ``cache_first``'s order and when it
re-raises, ``hub_problem``'s precedence, what ``_probe`` makes of each failure, ``run_bounded``'s answer and
``hub_reachable``'s bound and memo. Fake loaders and sessions only: nothing touches the network."""

from __future__ import annotations

import functools
import threading
from typing import Any

import pytest

from songseek.engine.encoders import _hub


class _Miss(Exception):
    pass


def _loader(results: dict[bool, Any], calls: list[bool]) -> Any:
    def load(local: bool) -> Any:
        calls.append(local)
        value = results[local]
        if isinstance(value, Exception):
            raise value
        return value
    return load


def test_cache_first_tries_the_cache_then_the_hub_only_when_allowed_and_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    problems: list[str | None] = [None]
    monkeypatch.setattr(_hub, "hub_problem", lambda: problems[0])
    calls: list[bool] = []
    assert _hub.cache_first(_loader({True: "cached", False: "hub"}, calls), local_only=False) == "cached"
    assert calls == [True]  # a cache hit never asks the hub
    calls.clear()
    assert _hub.cache_first(_loader({True: _Miss("miss"), False: "hub"}, calls), local_only=False) == "hub"
    assert calls == [True, False]
    for local_only, problem in ((True, None), (False, "HF_HUB_OFFLINE is set"), (True, "x is unreachable")):
        calls.clear()
        problems[0] = problem
        miss = _Miss("the cache miss")
        with pytest.raises(_Miss) as err:
            _hub.cache_first(_loader({True: miss, False: "hub"}, calls), local_only=local_only)
        assert err.value is miss and calls == [True]  # the cache miss itself, no download attempt


def test_hub_problem_says_offline_first_and_never_probes_then(monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[int] = []
    reachable = [False]

    def hub_reachable() -> bool:
        probes.append(1)
        return reachable[0]

    monkeypatch.setattr(_hub, "hub_reachable", hub_reachable)
    monkeypatch.setattr(_hub, "endpoint", lambda: "https://hub.example")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _hub.hub_problem() == "HF_HUB_OFFLINE is set" and probes == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert _hub.hub_problem() == "https://hub.example is unreachable" and probes == [1]
    reachable[0] = True
    assert _hub.hub_problem() is None


class _Session:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.calls: list[tuple[str, float]] = []

    def head(self, url: str, timeout: float) -> object:
        self.calls.append((url, timeout))
        if self.error is not None:
            raise self.error
        return object()


@pytest.mark.parametrize(("error", "reachable"), [
    (None, True), (OSError("name or service not known"), False), (TimeoutError(), False),
    (RuntimeError("proxy"), False), (AttributeError("no head"), True), (TypeError("timeout"), True),
])
def test_probe_heads_the_endpoint_once_and_reads_each_failure(monkeypatch: pytest.MonkeyPatch,
                                                              error: BaseException | None, reachable: bool) -> None:
    import huggingface_hub.utils as hf_utils

    session = _Session(error)
    monkeypatch.setattr(hf_utils, "get_session", lambda: session)
    monkeypatch.setattr(_hub, "endpoint", lambda: "https://hub.example")
    assert _hub._probe() is reachable
    assert session.calls == [("https://hub.example", _hub.PROBE_TIMEOUT_S)]


def test_endpoint_is_huggingface_hubs(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "ENDPOINT", "https://mirror.example")
    assert _hub.endpoint() == "https://mirror.example"
    monkeypatch.delattr(hf_constants, "ENDPOINT")
    assert _hub.endpoint() == _hub.DEFAULT_ENDPOINT == "https://huggingface.co"


def test_run_bounded_answers_the_probes_truth_within_the_bound() -> None:
    assert _hub.run_bounded(lambda: 1, 5.0) is True  # type: ignore[arg-type,return-value]
    assert _hub.run_bounded(lambda: 0, 5.0) is False  # type: ignore[arg-type,return-value]
    assert _hub.run_bounded(lambda: False, 5.0) is False
    release = threading.Event()
    try:
        assert _hub.run_bounded(lambda: release.wait(5.0), 0.05) is False  # still running: unreachable
    finally:
        release.set()


def test_hub_reachable_bounds_the_probe_and_remembers_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, float]] = []

    def run_bounded(probe: Any, timeout_s: float) -> bool:
        seen.append((probe, timeout_s))
        return True

    monkeypatch.setattr(_hub, "run_bounded", run_bounded)
    fresh = functools.cache(_hub.hub_reachable.__wrapped__)
    monkeypatch.setattr(_hub, "hub_reachable", fresh)
    assert fresh() is True and fresh() is True
    assert seen == [(_hub._probe, _hub.PROBE_TIMEOUT_S + 1.0)]  # one probe per process, a second past its timeout
