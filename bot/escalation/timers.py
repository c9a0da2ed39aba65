"""APScheduler 3.x holds the timers; one job per due-time bucket, not one per step.

Each replica has its own BackgroundScheduler with an in-memory job store (the APScheduler
FAQ: a job store must never be shared between schedulers). A step is put in the bucket of
its due time rounded *up* to BUCKET_SECONDS; the bucket's single ``date`` job hands all its
steps to the claimer queue (``due``) at once. Under a burst of due steps that is a few jobs
a second instead of one per step: adding and running an APScheduler job (a Job object, a
signature check, a trigger, an executor hand-off) cost more CPU than claiming the step.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

# A step fires at most this much after its due time because of the bucket (the rest of its
# lateness is claiming and sending).
BUCKET_SECONDS = 0.1
Step = tuple[str, int]


class StepTimers:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 jobstore: BaseJobStore | None = None) -> None:
        """``jobstore``: an in-memory store unless given (one per scheduler, never shared)."""
        # Due times are on the engine's clock; APScheduler runs on the machine's. A timer
        # goes off when the engine's clock reaches the due time (tests move that clock).
        self.clock = clock
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            jobstores={"default": jobstore if jobstore is not None else MemoryJobStore()},
            # Poll, retry and heartbeat run on their own threads: a burst of due steps must
            # not delay the heartbeat, or the others would take this replica for dead.
            executors={"default": ThreadPoolExecutor(max_workers=2), "control": ThreadPoolExecutor(max_workers=3)},
            # misfire_grace_time=None: a step that is late (busy process, restart) still fires,
            # late, and says so; it is never silently skipped.
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        )
        # Steps whose timer went off, for the claimer (None: stop).
        self.due: queue.SimpleQueue[Step | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Steps waiting in a bucket: every poll sees the same due steps again, and must not
        # schedule them twice. One entry per (escalation, version): a job for an older
        # version finds the row changed and does nothing.
        self._known: set[Step] = set()
        self._buckets: dict[int, list[Step]] = {}

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            # The jobs go first, while the scheduler still runs. APScheduler 3.x marks itself
            # stopped before it takes its job-store lock, so a date job it had just run would
            # then be looked for among the pending jobs, not in its store, and its thread
            # would log a JobLookupError traceback at every such shutdown.
            self.scheduler.remove_all_jobs()
            self.scheduler.shutdown(wait=False)
        self.due.put(None)

    def every(self, seconds: float, fn: Callable[[], Any], name: str) -> None:
        """A control job (poll, retry), on threads the step burst cannot take."""
        self.scheduler.add_job(fn, "interval", seconds=seconds, id=name, next_run_time=datetime.now(UTC),
                               executor="control")

    def schedule(self, escalation_id: str, version: int, at: datetime) -> None:
        step = (escalation_id, version)
        if step in self._known:  # the poll sees every waiting step again (checked again below)
            return
        at = datetime.now(UTC) + (at - self.clock())
        bucket = math.ceil(at.timestamp() / BUCKET_SECONDS)
        with self._lock:
            if step in self._known:
                return
            self._known.add(step)
            waiting = self._buckets.get(bucket)
            if waiting is not None:
                waiting.append(step)
                return
            self._buckets[bucket] = [step]
        self.scheduler.add_job(self._ring, "date", run_date=datetime.fromtimestamp(bucket * BUCKET_SECONDS, UTC),
                               args=[bucket])

    def _ring(self, bucket: int) -> None:
        """The bucket's job: hand its steps to the claimer and return at once (a job still
        running when the next bucket comes due would make APScheduler skip that one)."""
        with self._lock:
            steps = self._buckets.pop(bucket, [])
            self._known.difference_update(steps)
        for step in steps:
            self.due.put(step)

    def waiting(self) -> int:
        with self._lock:
            return len(self._known)
