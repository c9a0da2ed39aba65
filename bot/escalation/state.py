"""The escalation state machine: statuses, and the transitions people and alert groups make.

An escalation is ``active`` (timers run), ``snoozed`` (paused until a time, then the same
level is paged again), ``acknowledged`` (timers stopped) or ``resolved`` (final):

    active ──ack──▶ acknowledged ──resolve──▶ resolved
      │  ▲             │   │                     ▲
    snooze└─timer/     │   └─new alerts (policy)─┘ (back to active)
      ▼    escalate    │
    snoozed ───────────┘ (ack, resolve, escalate now from any open status)

Each transition is a compare-and-set on the row: it names the statuses it may start from,
and the row's new values. Firing a step (a timer, or "escalate now") is the claim in
claims.py: it moves the row to ``active`` with the next step planned by :func:`plan_after`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.escalation_policy import EscalationPolicy
from bot.ports import EscalationStatus as Status

# Statuses in which a timer may page (the row has a next step).
FIRING: tuple[str, ...] = (Status.ACTIVE.value, Status.SNOOZED.value)
# Statuses a person can still act on.
OPEN: tuple[str, ...] = (*FIRING, Status.ACKNOWLEDGED.value)
BOT_ACTOR = "aia-bot"
_NO_NEXT_STEP = {"next_due_at": None, "next_level": None, "next_reason": None, "snoozed_until": None}


@dataclass(frozen=True)
class Transition:
    """A change of status: allowed only from ``allowed``; sets ``values`` on the row."""

    verb: str  # what the person asked, for the refusal: "cannot snooze now: it is resolved"
    allowed: tuple[str, ...]
    values: dict[str, Any]
    # Pending retries of earlier pages stop: nobody needs them any more, and a webhook
    # trigger retried after a resolve would open a new phone-line incident.
    cancels_retries: bool = True


def acknowledge(actor: str, now: datetime) -> Transition:
    return Transition("acknowledge", FIRING, {"status": Status.ACKNOWLEDGED.value, "acknowledged_by": actor,
                                              "acknowledged_at": now, **_NO_NEXT_STEP})


def resolve(actor: str, now: datetime) -> Transition:
    return Transition("resolve", OPEN, {"status": Status.RESOLVED.value, "resolved_by": actor, "resolved_at": now,
                                        **_NO_NEXT_STEP})


def snooze(level: int, until: datetime) -> Transition:
    # From acknowledged too: "remind me in an hour" pages the current level again then.
    return Transition("snooze", OPEN, {"status": Status.SNOOZED.value, "snoozed_until": until, "next_due_at": until,
                                       "next_level": level, "next_reason": "resume"})


def repage(level: int, now: datetime) -> Transition:
    """New alerts joined an acknowledged group and the policy says to page again."""
    return Transition("re-page", (Status.ACKNOWLEDGED.value,), {"status": Status.ACTIVE.value, "next_level": level,
                                                                "next_reason": "new_alerts", "next_due_at": now},
                      cancels_retries=False)


def plan_after(policy: EscalationPolicy, level: int, cycle: int, base: datetime) -> tuple[int | None, int, datetime | None]:
    """After paging ``level``: the next level, its chain round, and when it is due.

    ``base`` is the paged step's *due* time, not the time it fired: after an outage the
    steps catch up in order instead of drifting by the outage's length.
    """
    wait = timedelta(seconds=policy.level(level).wait)
    if level < len(policy.levels):
        return level + 1, cycle, base + wait
    if cycle < policy.repeat:
        return 1, cycle + 1, base + wait
    return None, cycle, None


@functools.lru_cache(maxsize=64)
def policy_of(snapshot: str) -> EscalationPolicy:
    """Escalations started under one configuration share its snapshot: parse it once."""
    return EscalationPolicy.model_validate_json(snapshot)


def level_name(snapshot: str, level: int) -> str:
    policy = policy_of(snapshot)
    return policy.level(level).name if 1 <= level <= len(policy.levels) else ""


def utcnow() -> datetime:
    return datetime.now(UTC)
