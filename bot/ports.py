"""What procedures may ask of the alert and escalation services, declared below both.

Procedures sit under the services in the import layers (pyproject.toml, import-linter), so
``/aia alerts``, ``/aia page``, ``/aia ack``... cannot import them. They see these narrow
interfaces instead; the composition root (bot/core.py) hands the real services to
:class:`bot.context.Backends` when it builds it. The escalation's read model (its view and
the one-line status) lives here too, because procedures show it and the escalation
package renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from bot.escalation_policy import EscalationPolicy
from bot.store.models import Escalation, EscalationDelivery


class EscalationStatus(StrEnum):
    """``escalations.status``: the escalation engine's states (bot/escalation/state.py moves
    between them)."""

    ACTIVE = "active"
    SNOOZED = "snoozed"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertStatus(StrEnum):
    """Alertmanager's alert and group status; ``alert_groups.status`` and ``alerts.status``
    store these. Declared here because the escalation timeline reads alert rows too."""

    FIRING = "firing"
    RESOLVED = "resolved"


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
    status: EscalationStatus
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
        return self.status != EscalationStatus.RESOLVED

    def level_name(self, number: int | None) -> str:
        if not number or number > len(self.levels):
            return "-"
        return self.levels[number - 1].name


def status_line(view: EscalationView) -> str:
    """One line of truth about where the escalation stands (mrkdwn)."""
    if view.status == EscalationStatus.RESOLVED:
        who = f" by {mention(view.resolved_by)}" if view.resolved_by else ""
        return f"Resolved{who} at {clock(view.resolved_at)}"
    if view.status == EscalationStatus.ACKNOWLEDGED:
        return (
            f"Acknowledged by {mention(view.acknowledged_by)} at {clock(view.acknowledged_at)}; "
            f"timers stopped (level {view.current_level} {view.level_name(view.current_level)} was paged last)"
        )
    if view.status == EscalationStatus.SNOOZED:
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


class SlackPaging(Protocol):
    """The Slack side of paging that procedures use; both raise :class:`bot.errors.PageFailed`."""

    def members(self, principal: str) -> list[str]: ...

    def upload(self, channel: str, thread_ts: str | None, filename: str, content: str, title: str) -> None: ...


class EscalationChange(Protocol):
    """What a person's action did, for the procedure's answer."""

    @property
    def view(self) -> EscalationView: ...

    @property
    def text(self) -> str: ...


class EscalationPort(Protocol):
    """The escalation service as the escalation procedures see it (bot/escalation/service.py)."""

    @property
    def slack(self) -> SlackPaging: ...

    def require_policy(self) -> EscalationPolicy: ...

    def start(self, level: int, title: str, source: str, actor: str, channel_id: str) -> EscalationView: ...

    def open_escalations(self) -> list[EscalationView]: ...

    def find(self, channel_id: str | None, ref: str | None) -> Escalation: ...

    def get(self, escalation_id: str) -> Escalation | None: ...

    def view(self, row: Escalation) -> EscalationView: ...

    def pages_of(self, escalation_id: str) -> list[EscalationDelivery]: ...

    def timeline(self, escalation_id: str) -> tuple[str, int]:
        """The incident timeline as Markdown, and its number of entries."""
        ...

    def acknowledge(self, escalation_id: str, actor: str) -> EscalationChange: ...

    def resolve(self, escalation_id: str, actor: str) -> EscalationChange: ...

    def snooze(self, escalation_id: str, actor: str, seconds: float) -> EscalationChange: ...

    def escalate_now(self, escalation_id: str, actor: str) -> EscalationChange: ...


class FiringGroup(Protocol):
    """An open alert group as ``/aia alerts`` lists it."""

    @property
    def title(self) -> str: ...

    @property
    def severity(self) -> str: ...

    @property
    def firing_count(self) -> int: ...

    @property
    def resolved_count(self) -> int: ...

    @property
    def opened_at(self) -> datetime: ...

    @property
    def permalink(self) -> str | None: ...


class AlertsPort(Protocol):
    """The alert groups as ``/aia alerts`` reads them (bot/alerts/store.py)."""

    def open_groups(self) -> Sequence[FiringGroup]: ...
