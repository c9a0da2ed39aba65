"""Acks before answers: a burst of Slack requests is acked before its procedures start.

Slack gives an ack 3 seconds and the person who typed the command is watching; an answer can
start a few milliseconds later. Both run in one process, and a worker that starts a procedure
(parsing, roles, the first Kubernetes request) takes the GIL from the event loop while it is
still acking the rest of a burst. So the Slack route notes when each request arrives, and a
worker waits until none has arrived for QUIET_SECONDS (the burst is over), for at most
HOLD_SECONDS: a steady stream of requests delays answers by that much at worst.
"""

from __future__ import annotations

import threading
import time

QUIET_SECONDS = 0.02
HOLD_SECONDS = 0.2


class AckFirst:
    def __init__(self, quiet_seconds: float = QUIET_SECONDS, hold_seconds: float = HOLD_SECONDS) -> None:
        self.quiet_seconds = quiet_seconds
        self.hold_seconds = hold_seconds
        self._last_request = float("-inf")
        self._stop = threading.Event()  # never set: an interruptible sleep

    def arrived(self) -> None:
        """A Slack request came in (called on the event loop: one float store, no lock)."""
        self._last_request = time.monotonic()

    def wait(self) -> bool:
        """Block until no request arrived for ``quiet_seconds`` (at most ``hold_seconds``);
        True if the requests went quiet, False if the hold ran out first."""
        deadline = time.monotonic() + self.hold_seconds
        while True:
            now = time.monotonic()
            quiet_at = self._last_request + self.quiet_seconds
            if now >= quiet_at:
                return True
            if now >= deadline:
                return False
            self._stop.wait(min(quiet_at, deadline) - now)
