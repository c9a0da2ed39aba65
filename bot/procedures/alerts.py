"""`/aia alerts`: what is firing now, grouped as in Slack, with links to the threads."""

from __future__ import annotations

import functools
from typing import Any

from bot.alerts.render import duration_text
from bot.alerts.store import AlertStore, GroupView
from bot.context import ProcedureContext
from bot.registry import Procedure, RiskClass
from bot.results import Result, Status, Text

SECTION = "Monitoring & Alerting › Setting Up Alerts"
ICON = {"critical": ":red_circle:", "error": ":red_circle:", "warning": ":large_orange_circle:"}
LINES_PER_PART = 15


@functools.lru_cache(maxsize=4)
def _own_store(database_url: str) -> AlertStore:
    # A process without the alert service (the console, a script) reads the same tables.
    from bot.store.db import make_engine, make_sessionmaker

    return AlertStore(make_sessionmaker(make_engine(database_url)))


def _line(group: GroupView, escape: Any) -> str:
    from datetime import UTC, datetime

    since = (datetime.now(UTC) - group.opened_at).total_seconds()
    counts = f"{group.firing_count} firing" + (f", {group.resolved_count} resolved" if group.resolved_count else "")
    where = f"<{group.permalink}|thread>" if group.permalink else "_thread not posted yet_"
    return (f"{ICON.get(group.severity, ':large_blue_circle:')} *{escape(group.title)[:200]}* · {group.severity} · "
            f"{counts} · since {group.opened_at.strftime('%H:%M')} UTC ({duration_text(since)}) · {where}")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def alerts(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service = ctx.backends.alerts
    store = service.store if service is not None else _own_store(ctx.settings.database_url)
    groups = store.open_groups()
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
    lines = [_line(g, _escape) for g in groups]
    for start in range(0, len(lines), LINES_PER_PART):
        result.add(Text("\n".join(lines[start:start + LINES_PER_PART])))
    return result


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
