"""The escalation engine's background service: timers, the claimer, the poll and retries.

- Timers (timers.py, APScheduler 3.x): each due step waits in a 0.1 s bucket; the bucket's
  job hands its steps to this replica's claimer thread, which claims every step handed to it
  meanwhile in one transaction (``fire_many``) and sends each claim on the paging threads.
  The replica that fired a step schedules the next one at once; the others learn of it from
- the ``poll`` job, every AIA_ESCALATION_POLL_SECONDS: it beats this replica's heartbeat,
  reads the steps due soon and schedules locally the ones this replica is first choice for
  (a stable hash over the live replicas) at their due time: one timer per step in the whole
  deployment, not one per replica. Every replica also schedules, at once, any step already
  overdue by more than TAKEOVER_SECONDS (both choices dead, or behind). Whoever claims first
  wins; the others find a newer version and do nothing. After a restart the overdue steps
  are scheduled at once.
- the ``takeover`` job, every TAKEOVER_SWEEP_SECONDS: one indexed read of the steps overdue
  by more than TAKEOVER_SECONDS, which is empty while the first choices keep up; this
  replica claims those it is second choice for, so a first choice that died is covered
  within TAKEOVER_SECONDS + TAKEOVER_SWEEP_SECONDS. (A backup timer per step did the same,
  but cost every step a second, empty claim on another replica.)
- the ``retry`` job sends email/webhook pages whose retry time came, and pages whose claim
  holder died (lease over, or heartbeat missed).
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.escalation.service import EscalationService

log = logging.getLogger(__name__)
# The second-choice replica tries a step this much after its due time; a step overdue by
# more than this is tried by every replica's poll.
TAKEOVER_SECONDS = 0.5
# How often the second choices look for steps their first choice left.
TAKEOVER_SWEEP_SECONDS = 0.25
# Most overdue steps one sweep reads (a backlog is the poll's, in order).
TAKEOVER_BATCH = 500
# Most steps one claiming transaction takes at once.
CLAIM_BATCH = 200


class EscalationScheduler:
    name = "escalation-scheduler"

    def __init__(self, service: EscalationService, poll_seconds: float, workers: int | None = None) -> None:
        """``workers`` is accepted for older callers; the paging threads are the service's
        (AIA_ESCALATION_WORKERS), and one claimer thread per replica is by design."""
        self.service = service
        self.poll_seconds = poll_seconds
        self._claimer = threading.Thread(target=self._claim_loop, name="aia-escalation-claimer", daemon=True)
        # The live replicas as the last poll saw them (the sweep between polls uses them).
        self._live: list[str] = []

    def start(self) -> None:
        try:
            self.service.heartbeat()
        except Exception as exc:  # noqa: BLE001 - the poll beats again shortly
            log.warning("escalation heartbeat failed: %s", type(exc).__name__)
        self._claimer.start()
        timers = self.service.timers
        timers.start()
        timers.every(self.poll_seconds, self.poll, "poll")
        timers.every(TAKEOVER_SWEEP_SECONDS, self.takeover, "takeover")
        timers.every(max(0.5, self.poll_seconds / 2), self.retry, "retry")

    def stop(self) -> None:
        self.service.timers.stop()
        self.service.close()

    def schedule(self, escalation_id: str, version: int, at: datetime) -> None:
        self.service.timers.schedule(escalation_id, version, at)

    def _claim_loop(self) -> None:
        """Claims the steps whose timers went off, in batches: whatever came due while the
        previous batch was in the database goes into the next, so a burst costs a few
        transactions instead of one per step."""
        due = self.service.timers.due
        while True:
            first = due.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < CLAIM_BATCH:
                try:
                    step = due.get_nowait()
                except queue.Empty:
                    break
                if step is None:
                    due.put(None)  # stop after this batch
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
        self._live = live
        me = self.service.replica
        overdue = self.service.clock() - timedelta(seconds=TAKEOVER_SECONDS)
        for escalation_id, version, at in due:
            if at <= overdue or self._choice(escalation_id, me, live) == 0:
                self.schedule(escalation_id, version, at)

    def takeover(self) -> None:
        """Claim the steps overdue by more than TAKEOVER_SECONDS that this replica is second
        (or first) choice for: their first choice died, or is behind."""
        if not self._live:
            return  # no poll yet: the first poll schedules every overdue step anyway
        try:
            overdue = self.service.due_steps(horizon_seconds=-TAKEOVER_SECONDS, limit=TAKEOVER_BATCH)
        except Exception as exc:  # noqa: BLE001 - database down: the next sweep tries again
            log.warning("escalation takeover sweep failed: %s", type(exc).__name__)
            return
        me = self.service.replica
        for escalation_id, version, at in overdue:
            if self._choice(escalation_id, me, self._live) <= 1:
                self.schedule(escalation_id, version, at)

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
