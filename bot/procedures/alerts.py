"""`/aia alerts`: what is firing now, grouped as in Slack, with links to the threads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.errors import BackendUnavailable, UserError
from bot.mrkdwn import escape_mrkdwn
from bot.ports import FiringGroup
from bot.registry import Procedure, ProcedureContext, RiskClass
from bot.results import Result, Status, Table, Text
from bot.validators import format_duration

SECTION = "Monitoring & Alerting › Setting Up Alerts"
ICON = {"critical": ":red_circle:", "error": ":red_circle:", "warning": ":large_orange_circle:"}
LINES_PER_PART = 15


def _line(group: FiringGroup) -> str:
    since = (datetime.now(UTC) - group.opened_at).total_seconds()
    counts = f"{group.firing_count} firing" + (f", {group.resolved_count} resolved" if group.resolved_count else "")
    where = f"<{group.permalink}|thread>" if group.permalink else "_thread not posted yet_"
    return (f"{ICON.get(group.severity, ':large_blue_circle:')} *{escape_mrkdwn(group.title)[:200]}* · {group.severity} · "
            f"{counts} · since {group.opened_at.strftime('%H:%M')} UTC ({format_duration(since)}) · {where}")


def alerts(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    store = ctx.backends.alerts
    if store is None:
        raise UserError("Alert threads are not kept in this bot.", "It needs `aia-bot serve` or the console.")
    groups = store.open_groups()
    if not groups and ctx.settings.alertmanager_webhook_token is None:
        # No Alertmanager can deliver here, so an empty table says nothing about health.
        return _without_alertmanager(ctx)
    if not groups:
        return Result(title="Firing alerts", status=Status.OK, parts=[Text("Nothing is firing.")],
                      summary="nothing firing")
    firing = sum(g.firing_count for g in groups)
    worst = min(groups, key=lambda g: 0 if g.severity == "critical" else 1)
    result = Result(
        title=f"Firing alerts · {len(groups)} groups, {firing} alerts",
        status=Status.CRITICAL if worst.severity == "critical" else Status.WARNING,
        summary=f"{len(groups)} groups, {firing} alerts firing",
    )
    lines = [_line(g) for g in groups]
    for start in range(0, len(lines), LINES_PER_PART):
        result.add(Text("\n".join(lines[start:start + LINES_PER_PART])))
    return result


NOT_CONNECTED = ("Alertmanager is not connected to this bot (ALERTMANAGER_WEBHOOK_TOKEN is not set), "
                 "so there are no alert threads")


def _without_alertmanager(ctx: ProcedureContext) -> Result:
    """What Prometheus says fires, or plainly that nobody here knows."""
    if not ctx.settings.prometheus_url:
        return Result(
            title="Firing alerts: unknown", status=Status.WARNING, summary="alerts unknown: no Alertmanager or Prometheus",
            parts=[Text(f"{NOT_CONNECTED}, and no Prometheus either (PROMETHEUS_URL is not set): the bot cannot "
                        "know what fires. Point Alertmanager's webhook at `POST /alertmanager` with that "
                        "token, or set PROMETHEUS_URL.")],
        )
    try:
        firing = ctx.prometheus.firing_alerts()
    except BackendUnavailable as exc:
        return Result(title="Firing alerts: unknown", status=Status.WARNING, summary="alerts unknown",
                      parts=[Text(f"{NOT_CONNECTED}, and {exc}")])
    note = Text(f"From Prometheus. {NOT_CONNECTED}.")
    if not firing:
        return Result(title="Firing alerts", status=Status.OK, summary="nothing firing (Prometheus)",
                      parts=[Text("Nothing is firing."), note])
    rows = [[a["metric"].get("alertname", "?"), a["metric"].get("severity", "-"),
             ", ".join(f"{k}={v}" for k, v in sorted(a["metric"].items())
                       if k not in {"__name__", "alertname", "alertstate", "severity"})[:120] or "-"]
            for a in firing]
    critical = any(a["metric"].get("severity") == "critical" for a in firing)
    counted = f"{len(firing)} alert{'s' if len(firing) != 1 else ''}"
    return Result(title=f"Firing alerts · {counted}", summary=f"{counted} firing (Prometheus)",
                  status=Status.CRITICAL if critical else Status.WARNING,
                  parts=[Table(["ALERT", "SEVERITY", "LABELS"], rows), note])


PROCEDURES = [
    Procedure(
        name="alerts",
        kube=(),  # no Kubernetes
        summary="What is firing now, grouped as in the alert threads, with links to them",
        risk=RiskClass.READ,
        runbook=(SECTION, "Monitoring & Alerting › Key Metrics to Monitor"),
        run=alerts,
    ),
]
