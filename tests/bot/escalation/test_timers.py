"""APScheduler buckets: each step is handed to the claimer once, at or after its due time."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler

from bot.escalation.timers import BUCKET_SECONDS, StepTimers


@pytest.fixture
def timers() -> Iterator[StepTimers]:
    timers = StepTimers()
    timers.start()
    yield timers
    timers.stop()


def _take(timers: StepTimers, count: int, timeout: float = 5) -> list[tuple[tuple[str, int], float]]:
    got = []
    for _ in range(count):
        step = timers.due.get(timeout=timeout)
        assert step is not None
        got.append((step, time.time()))
    return got


def test_steps_come_due_in_buckets_never_early_and_once(timers: StepTimers) -> None:
    now = datetime.now(UTC)
    dues = {("E1", 1): now + timedelta(seconds=0.35), ("E2", 1): now + timedelta(seconds=0.36),
            ("E3", 4): now + timedelta(seconds=0.7), ("E4", 2): now - timedelta(seconds=3)}
    for (esc_id, version), at in dues.items():
        timers.schedule(esc_id, version, at)
        timers.schedule(esc_id, version, at)  # every poll sees the step again: still one timer
    assert timers.waiting() == 4
    got = _take(timers, 4)
    assert [step for step, _ in got][0] == ("E4", 2)  # overdue: at once
    for step, at in got[1:]:
        assert at >= dues[step].timestamp() - 0.01, step  # never before its due time
        assert at <= dues[step].timestamp() + BUCKET_SECONDS + 1.0, step  # (a busy machine: 1 s)
    with pytest.raises(queue.Empty):
        timers.due.get(timeout=0.5)
    assert timers.waiting() == 0


def test_a_step_added_to_a_bucket_that_already_rang_is_not_lost(timers: StepTimers) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    timers.schedule("E1", 1, past)
    assert _take(timers, 1)[0][0] == ("E1", 1)
    timers.schedule("E2", 1, past)  # same bucket, after its job ran
    timers.schedule("E1", 1, past)  # fired already: may be scheduled again (a retry "later")
    assert sorted(step for step, _ in _take(timers, 2)) == [("E1", 1), ("E2", 1)]


class _StoreThatStallsUntilStopped(MemoryJobStore):
    """Holds the scheduler's thread inside its job-store lock until the scheduler says it is
    stopped (or 2 s pass): the moment a shutdown races with a date job that has just run."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = threading.Event()
        self.stalled = threading.Event()

    def get_due_jobs(self, now: datetime) -> list[Job]:
        due = super().get_due_jobs(now)
        if due and self.armed.is_set():
            self.stalled.set()
            deadline = time.monotonic() + 2
            while self._scheduler.state != STATE_STOPPED and time.monotonic() < deadline:
                time.sleep(0.01)
        return due

    def start(self, scheduler: BaseScheduler, alias: str) -> None:
        super().start(scheduler, alias)
        self._scheduler = scheduler


def test_stopping_while_a_bucket_rings_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    store = _StoreThatStallsUntilStopped()
    timers = StepTimers(jobstore=store)
    timers.start()
    store.armed.set()
    failures: list[str] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_type.__name__)
    try:
        with caplog.at_level(logging.ERROR, logger="apscheduler"):
            timers.schedule("esc-stop", 1, datetime.now(UTC))
            assert store.stalled.wait(5)
            timers.stop()
            thread = timers.scheduler._thread  # noqa: SLF001 - to wait for its last round
            if thread is not None:
                thread.join(5)
    finally:
        threading.excepthook = previous_hook
    assert failures == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
