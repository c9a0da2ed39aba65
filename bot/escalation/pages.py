"""What a step pages and what the thread says about it: plain functions, no database."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.escalation_policy import EscalationPolicy
from bot.ports import clock, mention
from bot.validators import format_duration

# Pages are sent in this order within a step, so a slow SMTP server never delays Slack.
KIND_ORDER = {"slack_thread": 0, "slack_dm": 1, "webhook": 2, "email": 3}
_WHY = {
    "start": "",
    "resume": "the snooze is over",
    "new_alerts": "new alerts joined the acknowledged group",
}


@dataclass(frozen=True)
class Incident:
    """What a page needs to know about its escalation (read with the claim, never again)."""

    id: str
    title: str
    severity: str | None
    channel_id: str
    thread_ts: str | None
    card_ts: str | None
    status: str


@dataclass(frozen=True)
class Page:
    """One claimed page: a row of ``escalation_deliveries``."""

    id: int
    key: str
    kind: str  # slack_thread | slack_dm | webhook | email
    target: str
    level: int
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class StepPlan:
    """A step being paged: the level, why, how late, and what comes after it."""

    level: int
    seq: int
    reason: str
    actor: str
    late: float
    due: datetime
    next_level: int | None
    next_due: datetime | None


def step_pages(incident: Incident, policy: EscalationPolicy, step: StepPlan,
               late_after: float) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The step's pages as (kind, key, target, payload), thread mention first."""
    spec = policy.level(step.level)
    base = {"level": step.level, "level_name": spec.name, "title": incident.title, "reason": step.reason,
            "late": round(step.late, 3), "seq": step.seq, "severity": incident.severity or "critical"}

    def page(kind: str, key: str, target: str, extra: dict[str, Any] | None = None) -> tuple[str, str, str, dict[str, Any]]:
        return kind, f"s{step.seq}:{key}", target, {**base, **extra} if extra else base

    pages = [page("slack_thread", "thread", incident.channel_id, {"text": thread_text(policy, step, late_after)})]
    pages += [page("slack_dm", f"dm:{p}", p) for p in spec.notify]
    if spec.webhook:
        pages.append(page("webhook", "webhook", spec.webhook, {"action": "trigger"}))
    pages += [page("email", f"email:{a}", a) for a in spec.email]
    return pages


def thread_text(policy: EscalationPolicy, step: StepPlan, late_after: float) -> str:
    spec = policy.level(step.level)
    targets = [mention(p) for p in spec.notify]
    if spec.email:
        targets.append("email " + ", ".join(spec.email))
    if spec.webhook:
        targets.append("phone line (webhook)")
    if step.reason == "timer":
        why = f"nobody acknowledged level {step.level - 1} in time" if step.level > 1 else "the chain starts again"
    elif step.reason == "escalate_now":
        why = f"{mention(step.actor)} escalated now"
    else:
        why = _WHY.get(step.reason, "")
    text = f":rotating_light: *Paging level {step.level} · {spec.name}*: {' '.join(targets)}"
    if why:
        text += f"\n_{why}_"
    if step.late >= late_after:
        text += (f"\n:alarm_clock: This page is *{format_duration(step.late)} late*: it was due at {clock(step.due)} "
                 "and no replica was running then.")
    if step.next_level and step.next_due:
        text += f"\nNext: level {step.next_level} {policy.level(step.next_level).name} at {clock(step.next_due)} unless acknowledged."
    else:
        text += "\nThis is the last page of the chain: nobody else will be paged."
    return text


def paged_detail(policy: EscalationPolicy, level: int, reason: str) -> str:
    spec = policy.level(level)
    return f"level {level} {spec.name} ({reason}): {targets_text(spec.notify, spec.email, spec.webhook, plain=True)}"


def targets_text(notify: list[str], email: list[str], webhook: str | None, plain: bool = False) -> str:
    parts = [p if plain else mention(p) for p in notify]
    parts += email
    if webhook:
        parts.append("phone line (webhook)")
    return ", ".join(parts) if plain else " ".join(parts)


def channel_label(kind: str) -> str:
    return {"email": "Email page", "webhook": "Phone-line webhook", "slack_dm": "Slack DM",
            "slack_thread": "Thread page"}.get(kind, kind)


def target_label(kind: str, target: str) -> str:
    # A webhook URL may carry a token in its path: show only its host.
    if kind == "webhook":
        return urllib.parse.urlsplit(target).netloc or "the webhook"
    if kind == "slack_dm":
        return mention(target)
    return target


def email_body(incident: Incident, payload: dict[str, Any]) -> str:
    lines = [
        f"You are paged: level {payload['level']} ({payload['level_name']}) of the AIA escalation policy.",
        "",
        f"Incident:   {incident.title}",
        f"Severity:   {incident.severity or 'critical'}",
        f"Escalation: {incident.id}",
        f"Slack:      channel {incident.channel_id}, thread {incident.thread_ts or '-'}",
    ]
    if payload.get("late"):
        lines.append(f"Late by:    {format_duration(float(payload['late']))} (the bot was not running at the due time)")
    lines += ["", "Acknowledge in the Slack thread (button) or with `/aia ack " + incident.id + "`."]
    return "\n".join(lines) + "\n"
