"""APScheduler 3.x runs the timers; the database decides whether a timer may page.

Each replica has its own BackgroundScheduler with an in-memory job store (the
APScheduler FAQ: a job store must never be shared between schedulers). Two kinds
of jobs:

- one ``date`` job per due step at its due time. The job only hands the step to
  this replica's claimer thread, which claims every step handed to it meanwhile
  in one transaction (``fire_many``) and sends each claim on the paging threads.
  The replica that fired the previous step schedules the next one at once; the
  others learn of it from
- the ``poll`` job, every AIA_ESCALATION_POLL_SECONDS: it beats this replica's
  heartbeat, reads the steps due soon and schedules locally the ones this
  replica is first choice for (a stable hash over the live replicas) at their
  due time, and those it is second choice for TAKEOVER_SECONDS later as a
  backup: each step has two timers in the whole deployment, not one per
  replica, and a first choice that died is covered within half a second. Every
  replica also schedules, at once, any step already overdue by more than
  TAKEOVER_SECONDS (both choices dead, or behind). Whoever claims first wins;
  the others find a newer version and do nothing. After a restart the overdue
  steps are scheduled at once.
- the ``retry`` job sends email/webhook pages whose retry time came, and pages
  whose claim holder died (lease over).
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from bot.escalation.service import EscalationService

log = logging.getLogger(__name__)
# The second-choice replica tries a step this much after its due time; a step overdue by
# more than this is tried by every replica's poll.
TAKEOVER_SECONDS = 0.5
# Most steps one claiming transaction takes at once.
CLAIM_BATCH = 200


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
        # Steps whose timer went off, waiting for the claimer thread (None: stop).
        self._due: queue.SimpleQueue[tuple[str, int] | None] = queue.SimpleQueue()
        self._claimer = threading.Thread(target=self._claim_loop, name="aia-escalation-claimer", daemon=True)

    def start(self) -> None:
        self.service.schedule_hook = self.schedule
        try:
            self.service.heartbeat()
        except Exception as exc:  # noqa: BLE001 - the poll beats again shortly
            log.warning("escalation heartbeat failed: %s", type(exc).__name__)
        self._claimer.start()
        self.scheduler.start()
        now = datetime.now(UTC)
        self.scheduler.add_job(self.poll, "interval", seconds=self.poll_seconds, id="poll", next_run_time=now,
                               executor="control")
        self.scheduler.add_job(self.retry, "interval", seconds=max(0.5, self.poll_seconds / 2), id="retry",
                               next_run_time=now, executor="control")

    def stop(self) -> None:
        self.service.schedule_hook = None
        self.scheduler.shutdown(wait=False)
        self._due.put(None)
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
        """The step's timer: hand the step to the claimer and return at once.

        Returning at once matters: APScheduler skips a job whose previous run with the same
        id is still going ("maximum number of running instances"), and a step tried again
        shortly reuses its id.
        """
        with self._known_lock:
            self._known.discard(f"{escalation_id}:{version}")
        self._due.put((escalation_id, version))

    def _claim_loop(self) -> None:
        """Claims the steps whose timers went off, in batches: whatever came due while the
        previous batch was in the database goes into the next, so a burst costs a few
        transactions instead of one per step."""
        while True:
            first = self._due.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < CLAIM_BATCH:
                try:
                    step = self._due.get_nowait()
                except queue.Empty:
                    break
                if step is None:
                    self._due.put(None)  # stop after this batch
                    break
                batch.append(step)
            try:
                self.service.fire_many(batch)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the claimer; the poll retries
                log.exception("escalation: claiming %d due steps failed; the next poll retries", len(batch))

    def poll(self) -> None:
        try:
            self.service.heartbeat()
            live = self.service.live_replicas()
            due = self.service.due_steps(horizon_seconds=self.poll_seconds * 1.5 + 0.5)
        except Exception as exc:  # noqa: BLE001 - database down: try again at the next poll
            log.warning("escalation poll failed: %s", type(exc).__name__)
            return
        me = self.service.replica
        overdue = self.service.clock() - timedelta(seconds=TAKEOVER_SECONDS)
        for escalation_id, version, at in due:
            choice = self._choice(escalation_id, me, live)
            if choice == 0 or at <= overdue:
                self.schedule(escalation_id, version, at)
            elif choice == 1:
                self.schedule(escalation_id, version, at + timedelta(seconds=TAKEOVER_SECONDS))

    @staticmethod
    def _choice(escalation_id: str, me: str, live: list[str]) -> int:
        """0 if this replica is the step's first choice, 1 if second, 2 otherwise.

        A stable hash of the escalation over the live replicas picks the first choice, the
        next replica in the list is the second: the steps spread evenly, each is normally
        tried once, and the backup covers a first choice that died within TAKEOVER_SECONDS,
        long before its heartbeat is missed. A replica that does not see itself among the
        live ones (its heartbeat failed) holds every timer rather than none.
        """
        if me not in live:
            return 0
        first = zlib.crc32(escalation_id.encode()) % len(live)
        return min(2, (live.index(me) - first) % len(live))

    def retry(self) -> None:
        try:
            self.service.retry_pages()
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("escalation page retry failed: %s", type(exc).__name__)
