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

    def due_steps(self, horizon_seconds: float) -> list[tuple[str, int, datetime]]:
        return self._due

    def clock(self) -> datetime:
        return self._now


def test_poll_schedules_own_steps_backups_later_and_anyones_overdue_steps() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    soon, overdue = now + timedelta(seconds=1), now - timedelta(seconds=2)
    ids = [f"E{i:06d}" for i in range(60)]
    me = LIVE[1]
    due = [(e, 3, soon) for e in ids[:30]] + [(e, 3, overdue) for e in ids[30:]]
    scheduled: dict[str, datetime] = {}
    sched: Any = EscalationScheduler.__new__(EscalationScheduler)
    sched.service = _FakeService(me, due, now)
    sched.poll_seconds = 2.0
    sched.schedule = lambda esc_id, version, at: scheduled.__setitem__(esc_id, at)
    sched.poll()
    for esc_id in ids[:30]:
        choice = EscalationScheduler._choice(esc_id, me, LIVE)
        expected = {0: soon, 1: soon + timedelta(seconds=TAKEOVER_SECONDS), 2: None}[choice]
        assert scheduled.get(esc_id) == expected, (esc_id, choice)
    # Overdue steps: whoever's they are, this replica tries them now.
    assert all(scheduled[e] == overdue for e in ids[30:])
