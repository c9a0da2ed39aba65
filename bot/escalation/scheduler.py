"""APScheduler 3.x runs the timers; the database decides whether a timer may page.

Each replica has its own BackgroundScheduler with an in-memory job store (the
APScheduler FAQ: a job store must never be shared between schedulers). Two kinds
of jobs:

- one ``date`` job per due step, ``fire(id, version)`` at the due time. The
  replica that fired the previous step schedules the next one at once; the
  others learn of it from
- the ``poll`` job, every AIA_ESCALATION_POLL_SECONDS: it beats this replica's
  heartbeat, reads the steps due soon and schedules them locally. So every live
  replica holds a timer for every due step: the step's first-choice replica (a
  stable hash over the live replicas) at the due time, the others 0.5 s later as
  a backup. Whichever runs first claims the row; the others find a newer version
  and do nothing. A replica that died holding timers is therefore covered by the
  others at most 0.5 s late, and after a restart the overdue steps are scheduled
  at once.
- the ``retry`` job sends email/webhook pages whose retry time came, and pages
  whose claim holder died (lease over).
"""

from __future__ import annotations

import logging
import threading
import zlib
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from bot.escalation.service import EscalationService

log = logging.getLogger(__name__)
# How much later than the first-choice replica the other replicas try a due step.
TAKEOVER_SECONDS = 0.5


class EscalationScheduler:
    name = "escalation-scheduler"

    def __init__(self, service: EscalationService, poll_seconds: float, workers: int) -> None:
        self.service = service
        self.poll_seconds = poll_seconds
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            # Poll, retry and heartbeat run on their own threads: a burst of due steps must
            # not delay the heartbeat, or the others would take this replica for dead.
            executors={"default": ThreadPoolExecutor(max_workers=workers), "control": ThreadPoolExecutor(max_workers=3)},
            # misfire_grace_time=None: a step that is late (busy process, restart) still fires,
            # late, and says so; it is never silently skipped.
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        )
        # Job ids scheduled and not run yet: every poll sees the same due steps again, and
        # asking APScheduler (which builds a job to refuse it) would cost more than the timer.
        self._known: set[str] = set()
        self._known_lock = threading.Lock()

    def start(self) -> None:
        self.service.schedule_hook = self.schedule
        try:
            self.service.heartbeat()
        except Exception as exc:  # noqa: BLE001 - the poll beats again shortly
            log.warning("escalation heartbeat failed: %s", type(exc).__name__)
        self.scheduler.start()
        now = datetime.now(UTC)
        self.scheduler.add_job(self.poll, "interval", seconds=self.poll_seconds, id="poll", next_run_time=now,
                               executor="control")
        self.scheduler.add_job(self.retry, "interval", seconds=max(0.5, self.poll_seconds / 2), id="retry",
                               next_run_time=now, executor="control")

    def stop(self) -> None:
        self.service.schedule_hook = None
        self.scheduler.shutdown(wait=False)
        self.service.close()

    def schedule(self, escalation_id: str, version: int, at: datetime) -> None:
        # One job id per (escalation, version): scheduling the same step twice is a no-op,
        # and a job for an older version finds the row changed and does nothing.
        job_id = f"{escalation_id}:{version}"
        with self._known_lock:
            if job_id in self._known:
                return
            self._known.add(job_id)
        try:
            self.scheduler.add_job(
                self._fire, "date", run_date=at, args=[escalation_id, version], id=job_id, replace_existing=False,
            )
        except ConflictingIdError:
            pass

    def _fire(self, escalation_id: str, version: int) -> None:
        with self._known_lock:
            self._known.discard(f"{escalation_id}:{version}")
        try:
            self.service.fire(escalation_id, version)
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the job thread; the poll retries
            log.exception("escalation %s: firing version %s failed; the next poll retries", escalation_id, version)

    def poll(self) -> None:
        try:
            self.service.heartbeat()
            live = self.service.live_replicas()
            due = self.service.due_steps(horizon_seconds=self.poll_seconds * 1.5 + 0.5)
        except Exception as exc:  # noqa: BLE001 - database down: try again at the next poll
            log.warning("escalation poll failed: %s", type(exc).__name__)
            return
        me = self.service.replica
        for escalation_id, version, at in due:
            self.schedule(escalation_id, version, at + timedelta(seconds=self._backup_delay(escalation_id, me, live)))

    @staticmethod
    def _backup_delay(escalation_id: str, me: str, live: list[str]) -> float:
        """0 for the step's first-choice replica; TAKEOVER_SECONDS for the others.

        The first choice is a stable hash of the escalation over the live replicas, so
        each step is normally attempted once instead of once per replica; the others
        hold a backup timer slightly later, which finds the step fired and does nothing
        unless the first choice died.
        """
        if me not in live:
            return 0.0
        first = live[zlib.crc32(escalation_id.encode()) % len(live)]
        return 0.0 if first == me else TAKEOVER_SECONDS

    def retry(self) -> None:
        try:
            self.service.retry_pages()
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("escalation page retry failed: %s", type(exc).__name__)
