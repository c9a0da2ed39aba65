"""How alert messages look is the entry points' business (handlers/render_alerts.py builds
Block Kit); the core only needs this interface, and a plain-text fallback so a process
without the Slack renderer (a script, a test) still says something sensible."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from bot.alerts.store import GroupView
from bot.outbox import OutMessage, Upload
from bot.results import Image, Result
from bot.validators import duration_text


class AlertRenderer(Protocol):
    def parent(self, group: GroupView) -> OutMessage: ...

    def context(self, result: Result, group: GroupView) -> OutMessage: ...

    def storm(self, waiting: int, critical: int, posted: int, started: float | None) -> OutMessage: ...


def lasted(group: GroupView) -> str:
    end = group.resolved_at or datetime.now(UTC)
    return duration_text((end - group.opened_at).total_seconds())


class PlainRenderer:
    def parent(self, group: GroupView) -> OutMessage:
        state = f"RESOLVED after {lasted(group)}" if not group.firing else "FIRING"
        return OutMessage(text=f"[{state}] {group.severity} {group.title}: {group.firing_count} firing, "
                               f"{group.resolved_count} resolved")

    def context(self, result: Result, group: GroupView) -> OutMessage:
        uploads = [Upload(p.filename, p.png, p.title) for p in result.parts if isinstance(p, Image)]
        commands = ", ".join(f"/aia {a.command}" for a in result.actions)
        return OutMessage(text=f"{result.title}. Runbook steps: {commands or 'none'}", uploads=uploads)

    def storm(self, waiting: int, critical: int, posted: int, started: float | None) -> OutMessage:
        if waiting == 0:
            return OutMessage(text=f"Alert storm over: {posted} alert groups posted.")
        return OutMessage(text=f"Alert storm: {waiting} alert groups waiting ({critical} critical).")
