"""What the thread shows, as plain data: renderers (handlers/render_escalation.py) draw it.

The core cannot import handlers/, yet its timers post into Slack; so the service
holds an :class:`EscalationRenderer`, a plain-text one by default, and the Slack
front end installs its Block Kit renderer at start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.escalation.channels import SlackMessageOut
from bot.escalation.state import Status, policy_of
from bot.timeutil import assume_utc
from bot.validators import format_duration

# Action ids of the card's buttons; the value of each button is the escalation id.
ACTION_PREFIX = "aia_esc"
SNOOZE_CHOICES = (("30m", 1800), ("1h", 3600), ("4h", 14400))


@dataclass(frozen=True)
class LevelView:
    number: int
    name: str
    targets: str  # mrkdwn: mentions, emails, "phone (webhook)"
    wait: str


@dataclass(frozen=True)
class EscalationView:
    id: str
    title: str
    source: str
    severity: str | None
    status: Status
    current_level: int  # 0 = nobody paged yet
    levels: tuple[LevelView, ...]
    created_by: str
    created_at: datetime
    next_level: int | None
    next_due_at: datetime | None
    snoozed_until: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    cycle: int
    repeat: int

    @property
    def is_open(self) -> bool:
        return self.status != Status.RESOLVED

    def level_name(self, number: int | None) -> str:
        if not number or number > len(self.levels):
            return "-"
        return self.levels[number - 1].name


class EscalationRenderer(Protocol):
    def card(self, view: EscalationView) -> SlackMessageOut: ...

    def note(self, text: str, tone: str) -> SlackMessageOut: ...


def status_line(view: EscalationView) -> str:
    """One line of truth about where the escalation stands (mrkdwn)."""
    if view.status == Status.RESOLVED:
        who = f" by {mention(view.resolved_by)}" if view.resolved_by else ""
        return f"Resolved{who} at {clock(view.resolved_at)}"
    if view.status == Status.ACKNOWLEDGED:
        return (
            f"Acknowledged by {mention(view.acknowledged_by)} at {clock(view.acknowledged_at)}; "
            f"timers stopped (level {view.current_level} {view.level_name(view.current_level)} was paged last)"
        )
    if view.status == Status.SNOOZED:
        return (
            f"Snoozed until {clock(view.snoozed_until)}; then level {view.next_level} "
            f"{view.level_name(view.next_level)} is paged again"
        )
    paged = (
        f"level {view.current_level} {view.level_name(view.current_level)} paged"
        if view.current_level else "paging"
    )
    if view.next_level and view.next_due_at:
        return f"Open: {paged}; level {view.next_level} {view.level_name(view.next_level)} at {clock(view.next_due_at)} unless acknowledged"
    return f"Open: {paged}; the chain has run out, nobody else will be paged"


def mention(principal: str | None) -> str:
    if not principal:
        return "someone"
    if principal.startswith("S"):
        return f"<!subteam^{principal}>"
    if principal[:1] in "UW":
        return f"<@{principal}>"
    return principal


def clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S UTC") if at else "-"


class PlainRenderer:
    """Text-only messages: used when no Slack front end is running (console, tests)."""

    def card(self, view: EscalationView) -> SlackMessageOut:
        return SlackMessageOut(text=f"Escalation {view.id}: {view.title} · {status_line(view)}")

    def note(self, text: str, tone: str) -> SlackMessageOut:
        return SlackMessageOut(text=text)


def view_of(row: Any, now: Callable[[], datetime]) -> EscalationView:
    """The view of an escalation row (an ORM object or a Core row: same attribute names)."""
    policy = policy_of(row.policy)
    levels = tuple(
        LevelView(i, level.name, _targets(level.notify, level.email, level.webhook), format_duration(level.wait))
        for i, level in enumerate(policy.levels, start=1)
    )
    return EscalationView(
        id=row.id, title=row.title, source=row.source, severity=row.severity, status=Status(row.status),
        current_level=row.current_level, levels=levels, created_by=row.created_by,
        created_at=assume_utc(row.created_at) or now(), next_level=row.next_level,
        next_due_at=assume_utc(row.next_due_at), snoozed_until=assume_utc(row.snoozed_until),
        acknowledged_by=row.acknowledged_by, acknowledged_at=assume_utc(row.acknowledged_at),
        resolved_by=row.resolved_by, resolved_at=assume_utc(row.resolved_at), cycle=row.cycle, repeat=policy.repeat,
    )


def _targets(notify: list[str], email: list[str], webhook: str | None) -> str:
    parts = [mention(p) for p in notify] + list(email)
    if webhook:
        parts.append("phone line (webhook)")
    return " ".join(parts)

