"""Acks before answers: a burst of Slack requests is acked before its procedures start.

Slack gives an ack 3 seconds and the person who typed the command is watching; an answer can
start a few milliseconds later. Both run in one process, and a worker that starts a procedure
(parsing, roles, the first Kubernetes request) takes the GIL from the event loop while it is
still acking the rest of a burst. Even a worker that only wakes up to wait costs the loop a
thread switch and a GIL hand-off per request.

So the event loop keeps the work itself: each request's work is queued here, on the loop,
and handed to the worker pool in one go once no request has arrived for QUIET_SECONDS (the
burst is over), and at most HOLD_SECONDS after the oldest was queued: a steady stream of
requests delays answers by that much at worst. No thread is woken while a burst is acked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

QUIET_SECONDS = 0.02
HOLD_SECONDS = 0.2


class AckFirst:
    """Every method runs on the event loop (one thread): no locks."""

    def __init__(self, executor: Executor, quiet_seconds: float = QUIET_SECONDS,
                 hold_seconds: float = HOLD_SECONDS) -> None:
        self.executor = executor
        self.quiet_seconds = quiet_seconds
        self.hold_seconds = hold_seconds
        self._last_request = float("-inf")
        self._queued: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._oldest = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def arrived(self) -> None:
        """A Slack request came in (the HTTP route calls this before Bolt checks it)."""
        self._last_request = asyncio.get_running_loop().time()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the pool once the requests have gone quiet."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._last_request = max(self._last_request, now)
        if not self._queued:
            self._oldest = now
        self._queued.append((fn, args))
        if self._timer is None:
            self._timer = loop.call_at(self._due(), self._check)

    def _due(self) -> float:
        return min(self._last_request + self.quiet_seconds, self._oldest + self.hold_seconds)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._due()
        if loop.time() < due:  # a request came meanwhile: wait for quiet again (or the hold)
            self._timer = loop.call_at(due, self._check)
            return
        self._timer = None
        queued, self._queued = self._queued, []
        for fn, args in queued:
            future = loop.run_in_executor(self.executor, fn, *args)
            future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # never "exception was never retrieved"
