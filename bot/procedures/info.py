"""Procedures about the bot and the system: help, endpoints, audit."""

from __future__ import annotations

from typing import Any

from bot.errors import UserError
from bot.registry import Param, Procedure, ProcedureContext, RiskClass
from bot.results import Fields, Result, Status, Table, Text
from bot.validators import bounded_int


def help_(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    topic = (args.get("procedure") or "").strip().lower()
    role = ctx.role
    allowed = [p for p in ctx.registry.all() if p.public or (role is not None and role >= p.required_role)]
    if topic:
        proc = ctx.registry.match(topic.split())
        if proc is None or proc.name != topic:
            raise UserError(f"There is no procedure `{topic[:40]}`.", "Type `/aia help` for the list.")
        if proc not in allowed:
            raise UserError(
                f"`/aia {proc.name}` needs the {proc.required_role.label} role.",
                "Type `/aia help` for what you may run.",
            )
        lines = [f"`{proc.syntax}`", proc.summary, f"*Risk:* {proc.risk.value} · *Runbook:* {'; '.join(proc.runbook)}"]
        for param in proc.params:
            lines.append(f"• `{param.display.strip('[]')}` — {param.help}")
        if proc.examples:
            lines.append("*Examples:* " + "  ".join(f"`{e}`" for e in proc.examples))
        return Result(title=f"/aia {proc.name}", parts=[Text("\n".join(lines))], summary=proc.name)
    rows = [[f"/aia {p.name}", p.risk.value, p.summary] for p in allowed]
    who = f"your role: {role.label}" if role else "you have no role yet: ask an admin"
    return Result(
        title=f"AIA runbook bot · {who}",
        parts=[
            Table(["COMMAND", "RISK", "WHAT IT DOES"], rows),
            Text("`/aia help PROCEDURE` shows its syntax and examples."),
        ],
        summary=f"{len(rows)} procedures listed",
    )


def endpoints(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    s = ctx.settings
    return Result(
        title="AIA service endpoints",
        parts=[
            Fields(
                [
                    ("API", s.aia_api_url),
                    ("Frontend", s.aia_frontend_url),
                    ("Grafana", s.aia_grafana_url),
                    ("Namespace", s.aia_namespace),
                    ("Cloud SQL", f"{s.gcp_project}:{s.cloudsql_instance}"),
                ]
            )
        ],
        summary="endpoints listed",
    )


def audit(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    limit = args.get("n") or 10
    entries = ctx.audit.recent(limit)
    rows = [
        [
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            f"<@{e.actor}>" if e.actor[:1] in "UW" else e.actor,
            e.action,
            e.outcome,
            (e.arguments if e.arguments not in ("{}", "") else "")[:80],
        ]
        for e in entries
    ]
    return Result(
        title=f"Last {len(rows)} audited actions",
        status=Status.INFO,
        parts=[Table(["WHEN (UTC)", "WHO", "WHAT", "RESULT", "ARGUMENTS"], rows, empty_text="nothing audited yet")],
        summary=f"{len(rows)} entries",
    )


PROCEDURES = [
    Procedure(
        name="help",
        kube=(),  # no Kubernetes
        summary="What you may run here, or the syntax of one procedure",
        risk=RiskClass.READ,
        runbook=(),
        run=help_,
        params=(Param("procedure", "rest", "a procedure name", metavar="PROCEDURE"),),
        public=True,
    ),
    Procedure(
        name="endpoints",
        kube=(),  # no Kubernetes
        summary="API, frontend and Grafana addresses",
        risk=RiskClass.READ,
        runbook=("Access & Authentication › Service Endpoints", "Monitoring & Alerting › Grafana Access"),
        run=endpoints,
    ),
    Procedure(
        name="audit",
        kube=(),  # no Kubernetes
        summary="The last N audited actions (default 10)",
        risk=RiskClass.READ,
        runbook=(),
        run=audit,
        params=(Param("n", "positional", "how many, 1 to 100", metavar="N", convert=bounded_int(1, 100)),),
    ),
]
