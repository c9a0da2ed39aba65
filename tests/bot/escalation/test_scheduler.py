"""Which replica holds which timer: pure logic of the poll, without a database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.escalation.scheduler import TAKEOVER_SECONDS, EscalationScheduler

LIVE = ["pod-a:1:aaaa", "pod-b:1:bbbb", "pod-c:1:cccc"]


def test_each_step_has_one_first_and_one_second_choice() -> None:
    ids = [f"E{i:06d}" for i in range(3000)]
    for esc_id in ids:
        choices = sorted(EscalationScheduler._choice(esc_id, me, LIVE) for me in LIVE)
        assert choices == [0, 1, 2]
    # The first choices spread over the replicas (a stable hash, not all on one).
    firsts = Counter(next(me for me in LIVE if EscalationScheduler._choice(e, me, LIVE) == 0) for e in ids)
    assert set(firsts) == set(LIVE) and min(firsts.values()) > 800


def test_two_replicas_hold_every_step_and_a_lost_heartbeat_holds_all() -> None:
    two = LIVE[:2]
    assert all(sorted(EscalationScheduler._choice(f"E{i}", me, two) for me in two) == [0, 1] for i in range(100))
    assert all(EscalationScheduler._choice(f"E{i}", "pod-z:9:zzzz", LIVE) == 0 for i in range(100))


class _FakeService:
    """Just what poll() reads: the steps due soon and the live replicas."""

    def __init__(self, me: str, due: list[tuple[str, int, datetime]], now: datetime) -> None:
        self.replica = me
        self._due = due
        self._now = now

    def heartbeat(self) -> None:
        pass

    def live_replicas(self) -> list[str]:
        return LIVE

    def due_steps(self, horizon_seconds: float, limit: int = 20000) -> list[tuple[str, int, datetime]]:
        until = self._now + timedelta(seconds=horizon_seconds)
        return [step for step in self._due if step[2] <= until][:limit]

    def clock(self) -> datetime:
        return self._now


def _scheduler(me: str, due: list[tuple[str, int, datetime]], now: datetime,
               scheduled: dict[str, datetime]) -> Any:
    sched: Any = EscalationScheduler.__new__(EscalationScheduler)
    sched.service = _FakeService(me, due, now)
    sched.poll_seconds = 2.0
    sched._live = []
    sched.schedule = lambda esc_id, version, at: scheduled.__setitem__(esc_id, at)
    return sched


def test_poll_schedules_own_steps_and_anyones_overdue_steps_but_no_backups() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    soon, overdue = now + timedelta(seconds=1), now - timedelta(seconds=2)
    ids = [f"E{i:06d}" for i in range(60)]
    me = LIVE[1]
    due = [(e, 3, soon) for e in ids[:30]] + [(e, 3, overdue) for e in ids[30:]]
    scheduled: dict[str, datetime] = {}
    _scheduler(me, due, now, scheduled).poll()
    for esc_id in ids[:30]:
        choice = EscalationScheduler._choice(esc_id, me, LIVE)
        # One timer per step in the deployment: the first choice's. The second choice only
        # sweeps for what its first choice left (below).
        assert scheduled.get(esc_id) == (soon if choice == 0 else None), (esc_id, choice)
    # Overdue steps: whoever's they are, this replica tries them now.
    assert all(scheduled[e] == overdue for e in ids[30:])


def test_the_takeover_sweep_claims_what_a_first_choice_left_and_only_that() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    ids = [f"E{i:06d}" for i in range(90)]
    me = LIVE[1]
    left = now - timedelta(seconds=TAKEOVER_SECONDS + 0.1)  # its first choice did not claim it
    fresh = now - timedelta(seconds=TAKEOVER_SECONDS / 2)  # its first choice still has time
    due = [(e, 3, left) for e in ids[:60]] + [(e, 3, fresh) for e in ids[60:]]
    scheduled: dict[str, datetime] = {}
    sched = _scheduler(me, due, now, scheduled)
    sched.takeover()
    assert scheduled == {}  # before the first poll it knows no replicas: the poll covers overdue steps
    sched._live = LIVE
    sched.takeover()
    mine = {e for e in ids[:60] if EscalationScheduler._choice(e, me, LIVE) <= 1}
    assert set(scheduled) == mine and 0 < len(mine) < 60
    assert all(scheduled[e] == left for e in mine)
