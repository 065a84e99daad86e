"""A bounded thread pool: encoding and search run on ``workers`` threads with at most ``queue`` waiting.

Past that, ``run`` raises Busy at once (the app answers 503 with Retry-After), so an overloaded server
keeps its memory and answers fast instead of letting requests pile up until clients time out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the queue is full."""


class BoundedPool:
    def __init__(self, workers: int, queue: int) -> None:
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="songseek-serve")
        self._lock = threading.Lock()
        self._inflight = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    async def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._inflight >= self.capacity:
                raise Busy()
            self._inflight += 1
        try:
            future = self._executor.submit(fn)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._inflight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
