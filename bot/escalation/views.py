"""What the thread shows, as plain data: renderers (handlers/render_escalation.py) draw it.

The core cannot import handlers/, yet its timers post into Slack; so the service
holds an :class:`EscalationRenderer`: the Slack entry points hand their Block Kit one to
``build_core``, everything else (the console, tests) gets plain text.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from bot.escalation.channels import SlackMessageOut
from bot.escalation.state import Status, policy_of
from bot.ports import EscalationView, LevelView, mention, status_line
from bot.timeutil import assume_utc
from bot.validators import format_duration

# Action ids of the card's buttons; the value of each button is the escalation id.
ACTION_PREFIX = "aia_esc"
SNOOZE_CHOICES = (("30m", 1800), ("1h", 3600), ("4h", 14400))


class EscalationRenderer(Protocol):
    def card(self, view: EscalationView) -> SlackMessageOut: ...

    def note(self, text: str, tone: str) -> SlackMessageOut: ...


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

