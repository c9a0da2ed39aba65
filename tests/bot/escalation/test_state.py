"""The state machine's transitions and step planning, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.escalation import state
from bot.escalation.state import FIRING, OPEN, Status
from bot.escalation_policy import EscalationPolicy

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
POLICY = EscalationPolicy.model_validate({"repeat": 1, "levels": [
    {"name": "on-call", "notify": ["U0OPS01"], "wait": "5m"},
    {"name": "devops", "notify": ["U0ADM01"], "wait": "10m"},
]})


def test_statuses_and_the_sets_timers_and_people_act_on() -> None:
    assert [s.value for s in Status] == ["active", "snoozed", "acknowledged", "resolved"]
    assert set(FIRING) == {"active", "snoozed"} and set(OPEN) == {"active", "snoozed", "acknowledged"}
    assert Status.RESOLVED not in OPEN


@pytest.mark.parametrize(("transition", "allowed", "status"), [
    (state.acknowledge("U1", NOW), FIRING, "acknowledged"),
    (state.resolve("U1", NOW), OPEN, "resolved"),
    (state.snooze(2, NOW), OPEN, "snoozed"),
    (state.repage(2, NOW), ("acknowledged",), "active"),
])
def test_each_transition_says_where_it_may_start_and_what_it_sets(
    transition: state.Transition, allowed: tuple[str, ...], status: str
) -> None:
    assert transition.allowed == allowed and transition.values["status"] == status


def test_stopping_transitions_clear_the_next_step_and_cancel_retries() -> None:
    for transition in (state.acknowledge("U1", NOW), state.resolve("U1", NOW)):
        assert transition.values["next_due_at"] is None and transition.values["next_level"] is None
        assert transition.cancels_retries
    snoozed = state.snooze(2, NOW + timedelta(hours=1))
    assert snoozed.values["next_due_at"] == NOW + timedelta(hours=1) and snoozed.values["next_reason"] == "resume"
    # New alerts re-page: earlier pages' retries are still wanted.
    assert not state.repage(1, NOW).cancels_retries


def test_plan_after_walks_the_chain_repeats_it_then_stops() -> None:
    assert state.plan_after(POLICY, 1, 0, NOW) == (2, 0, NOW + timedelta(minutes=5))
    # The last level: the chain runs again (repeat: 1) after the last level's wait...
    assert state.plan_after(POLICY, 2, 0, NOW) == (1, 1, NOW + timedelta(minutes=10))
    # ...and not a third time.
    assert state.plan_after(POLICY, 2, 1, NOW) == (None, 1, None)


def test_policy_snapshots_are_parsed_once() -> None:
    snapshot = POLICY.model_dump_json()
    assert state.policy_of(snapshot) is state.policy_of(snapshot)
    assert state.level_name(snapshot, 2) == "devops" and state.level_name(snapshot, 3) == ""
