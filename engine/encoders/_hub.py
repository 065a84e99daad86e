"""Cache-first Hugging Face hub access that fails fast when the hub cannot be reached.

huggingface_hub retries a failed request five times with backoff (~25 s, a dozen log lines) before
transformers gives up, so a machine without network would wait and scroll before one useful error.
Here every load tries the local HF cache first; only on a cache miss is the hub endpoint probed once
(one HEAD, short timeout, no retries, remembered for the process) and the download attempted only when
it answered. With network the download path is the library's own, unchanged.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

from ._torch_util import offline

T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    """The hub URL huggingface_hub talks to (``HF_ENDPOINT``, default https://huggingface.co)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return DEFAULT_ENDPOINT
    return str(getattr(constants, "ENDPOINT", DEFAULT_ENDPOINT))


def _probe() -> bool:
    """One HEAD through huggingface_hub's own session, so its proxy and certificate settings apply."""
    try:
        from huggingface_hub import utils as hf_utils
    except ImportError:
        return True  # nothing to probe with: let the normal load decide
    try:
        hf_utils.get_session().head(endpoint(), timeout=PROBE_TIMEOUT_S)
    except (AttributeError, TypeError):  # a session API this code does not know: let the load decide
        return True
    except Exception:  # DNS failure, refused, timed out, proxy/TLS failure: no download would work either
        return False
    return True


def run_bounded(probe: Callable[[], bool], timeout_s: float) -> bool:
    """``probe()`` in a daemon thread; False when it raised or has not answered within ``timeout_s``
    (the thread is left to finish on its own: it holds nothing the caller needs)."""
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(bool(probe()))
        except Exception:
            result.append(False)

    thread = threading.Thread(target=run, name="songseek-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result) and result[0]


@functools.cache
def hub_reachable() -> bool:
    """True when the hub endpoint answers one HEAD request (any HTTP status) within PROBE_TIMEOUT_S.

    The request's timeout does not cover the name lookup (getaddrinfo blocks as long as the resolver
    does, 20 s or more on a broken one), so a probe still running a second past it counts as unreachable."""
    return run_bounded(_probe, PROBE_TIMEOUT_S + 1.0)


def hub_problem() -> str | None:
    """Why the hub cannot be used right now (a phrase for an error message), or None when it can."""
    if offline():
        return "HF_HUB_OFFLINE is set"
    if not hub_reachable():
        return f"{endpoint()} is unreachable"
    return None


def cache_first(load: Callable[[bool], T], local_only: bool) -> T:
    """``load(True)`` (cache / local files only); on failure ``load(False)`` when ``local_only`` is False
    and the hub is usable, else the cache miss is re-raised at once (no retries, no retry log lines)."""
    try:
        return load(True)
    except Exception:
        if local_only or hub_problem() is not None:
            raise
    return load(False)
