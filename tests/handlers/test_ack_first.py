"""Work starts once a burst of Slack requests has been acked, and never waits longer than the hold.

The gate runs on a real event loop and hands work to a real thread pool; the tests note when
each piece of work started, on the loop's clock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from handlers.ack_first import AckFirst


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=True)


class Started:
    """Records, from the worker threads, when each piece of work began (time.monotonic)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> None:
        with self._lock:
            self.at[name] = time.monotonic()
            self.threads.add(threading.current_thread().name)


def test_lone_request_starts_after_the_quiet_time_on_a_worker(pool: ThreadPoolExecutor) -> None:
    started = Started()

    async def scenario() -> float:
        acks = AckFirst(pool, quiet_seconds=0.05, hold_seconds=5)
        submitted = time.monotonic()
        acks.submit(started, "one")
        await asyncio.sleep(0.5)
        return submitted

    submitted = asyncio.run(scenario())
    assert "one" in started.at
    assert 0.04 <= started.at["one"] - submitted < 0.4
    assert threading.main_thread().name not in started.threads


def test_nothing_starts_until_the_burst_is_over(pool: ThreadPoolExecutor) -> None:
    started = Started()

    async def scenario() -> float:
        acks = AckFirst(pool, quiet_seconds=0.3, hold_seconds=10)
        for i in range(10):  # a request every 0.1 s for 1 s, as an event loop acking a burst
            acks.arrived()
            acks.submit(started, f"r{i}")
            await asyncio.sleep(0.1)
            assert not started.at, "work started while requests were still arriving"
        last = time.monotonic() - 0.1
        await asyncio.sleep(0.8)
        return last

    last = asyncio.run(scenario())
    assert sorted(started.at) == sorted(f"r{i}" for i in range(10))
    # All of it, together, after the last request plus the quiet time.
    assert min(started.at.values()) >= last + 0.25


def test_requests_noted_by_the_route_hold_queued_work_too(pool: ThreadPoolExecutor) -> None:
    """The route notes a request before Bolt has checked it: queued work waits for those too."""
    started = Started()

    async def scenario() -> None:
        acks = AckFirst(pool, quiet_seconds=0.2, hold_seconds=10)
        acks.submit(started, "first")
        for _ in range(5):
            await asyncio.sleep(0.1)
            acks.arrived()
            assert not started.at
        await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert set(started.at) == {"first"}


def test_a_steady_stream_of_requests_delays_work_by_the_hold_at_most(pool: ThreadPoolExecutor) -> None:
    started = Started()

    async def scenario() -> float:
        acks = AckFirst(pool, quiet_seconds=0.3, hold_seconds=0.4)
        submitted = time.monotonic()
        acks.submit(started, "held")
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # never quiet for 0.3 s
            acks.arrived()
            await asyncio.sleep(0.05)
        return submitted

    submitted = asyncio.run(scenario())
    assert 0.35 <= started.at["held"] - submitted < 1.0


def test_a_failing_piece_of_work_does_not_stop_the_others(pool: ThreadPoolExecutor) -> None:
    started = Started()

    def boom(name: str) -> None:
        raise RuntimeError(name)

    async def scenario() -> None:
        acks = AckFirst(pool, quiet_seconds=0.02, hold_seconds=1)
        acks.submit(boom, "bad")
        acks.submit(started, "good")
        await asyncio.sleep(0.3)
        acks.submit(started, "later")
        await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert set(started.at) == {"good", "later"}
