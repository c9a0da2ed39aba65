"""Workers start when a burst of Slack requests has been acked, and never wait longer than the hold."""

from __future__ import annotations

import threading
import time

from handlers.ack_first import AckFirst


def test_a_worker_starts_at_once_when_no_request_came_lately() -> None:
    acks = AckFirst(quiet_seconds=0.05, hold_seconds=5)
    started = time.monotonic()
    assert acks.wait() is True
    assert time.monotonic() - started < 0.5


def test_a_worker_waits_until_the_burst_is_over() -> None:
    acks = AckFirst(quiet_seconds=0.3, hold_seconds=10)
    waited: list[float] = []
    stop = threading.Event()

    def burst() -> None:  # a request every 0.1 s for 1 s, as an event loop acking a burst
        end = time.monotonic() + 1.0
        while time.monotonic() < end and not stop.is_set():
            acks.arrived()
            time.sleep(0.1)

    sender = threading.Thread(target=burst)
    sender.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert acks.wait() is True
    waited.append(time.monotonic() - started)
    stop.set()
    sender.join()
    # Not before the burst ended (~0.95 s from here) plus the quiet time.
    assert 1.0 <= waited[0] < 5


def test_a_steady_stream_of_requests_delays_a_worker_by_the_hold_at_most() -> None:
    acks = AckFirst(quiet_seconds=0.3, hold_seconds=0.4)
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            acks.arrived()
            time.sleep(0.05)

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        started = time.monotonic()
        assert acks.wait() is False
        assert 0.35 <= time.monotonic() - started < 2
    finally:
        stop.set()
        sender.join()
