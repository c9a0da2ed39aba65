"""Escalation procedures: page, oncall, ack, resolve, snooze, escalate, timeline.

Slash commands carry no thread, so the commands that act on one escalation take
its id (shown on the card in the thread, e.g. ``E7K3Q2X``) or, without one, act
on the only open escalation of the channel; with several open they list them.
The card's buttons pass the id, so clicks are never ambiguous.

Who may do what: silencing paging is a write. ``page``, ``snooze``,
``resolve`` and ``escalate`` need the operator role. ``ack`` needs the operator role
*or* being one of the people paged for that escalation (a viewer in the paged on-call
group may say "I have it", nobody else may stop the timers). The person who used
break-glass cannot acknowledge, snooze or resolve the break-glass review escalation
their own bypass started: someone else has to look at what they did.
"""

from __future__ import annotations

import re
from typing import Any

from bot.errors import PageFailed, UserError
from bot.mrkdwn import escape_mrkdwn
from bot.ports import EscalationPort, clock, mention, status_line
from bot.registry import Param, Procedure, ProcedureContext, RiskClass
from bot.results import Fields, Result, Status, Table, Text
from bot.roles import Role
from bot.validators import duration, format_duration

RUNBOOK = ("Contacts & Escalation › On-Call Procedures", "Contacts & Escalation › Communication Channels")
_ID = re.compile(r"^E?[2-9A-HJ-NP-Z]{6}$", re.IGNORECASE)


def escalation_id(text: str) -> str:
    if not _ID.fullmatch(text.strip()):
        raise ValueError("an escalation id looks like E7K3Q2X (it is on the card in the thread)")
    text = text.strip().upper()
    return text if text.startswith("E") and len(text) == 7 else "E" + text


def _service(ctx: ProcedureContext) -> EscalationPort:
    service = ctx.backends.escalation
    if service is None:
        raise UserError("Escalation is not running in this bot.", "It needs `aia-bot serve` or the console.")
    return service


def page(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service = _service(ctx)
    policy = service.require_policy()
    words = str(args.get("text") or "").split(maxsplit=1)
    usage = "Usage: `/aia page LEVEL MESSAGE`, e.g. `/aia page 2 API returns 500s since 03:10`"
    if len(words) < 2:
        raise UserError("Say which level to page and why.", usage)
    level = policy.find_level(words[0])
    if level is None:
        raise UserError(f"There is no level `{words[0][:30]}`; the levels are {policy.describe_levels()}.", usage)
    channel = ctx.caller.channel_id or ctx.settings.aia_alert_channel
    # The page's text is shown in cards, threads and DMs: stored escaped, so no <!channel> or
    # disguised link can ride along wherever it is placed.
    message = escape_mrkdwn(words[1][:300])
    view = service.start(level, message, "manual", ctx.caller.user_id, channel)
    spec = policy.level(level)
    return Result(
        title=f"Paging level {level} · {spec.name}",
        status=Status.CRITICAL,
        parts=[Text(f"Escalation `{view.id}` started by {mention(ctx.caller.user_id)}: {message}\n"
                    "Its card, with Acknowledge / Escalate now / Snooze / Resolve, is in the channel; "
                    "pages and answers go into the card's thread.")],
        summary=f"escalation {view.id} started at level {level}",
    )


def oncall(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service = _service(ctx)
    policy = service.require_policy()
    rows = []
    for number, level in enumerate(policy.levels, start=1):
        people = []
        for principal in level.notify:
            if principal.startswith("S"):
                try:
                    members = service.slack.members(principal)
                    shown = ", ".join(mention(m) for m in members) or "nobody"
                except PageFailed:
                    shown = "members unknown"
                people.append(f"{mention(principal)} ({shown})")
            else:
                people.append(mention(principal))
        channels = []
        if level.email:
            channels.append("email " + ", ".join(level.email))
        if level.webhook:
            channels.append("phone line (webhook)")
        rows.append((f"*{number} · {level.name}* · then wait {format_duration(level.wait)}",
                     " ".join(people) + ("\n" + "; ".join(channels) if channels else "")))
    starts = ", ".join(policy.start_on.severity) or "no alerts (manual pages only)"
    parts: list[Any] = [
        Fields(rows),
        Text(f"Alert groups with severity {starts} start an escalation at level {policy.first_level}; "
             f"the chain runs {policy.repeat + 1} time{'s' if policy.repeat else ''}; "
             f"break-glass pages level {policy.break_glass}."),
    ]
    open_ones = service.open_escalations()
    if open_ones:
        parts.append(Table(["ID", "STATUS", "LEVEL", "WHAT"],
                           [[v.id, v.status, str(v.current_level), v.title[:60]] for v in open_ones],
                           title="Open escalations"))
    return Result(title="On call now", parts=parts, summary=f"{len(policy.levels)} levels, {len(open_ones)} open")


def _target(ctx: ProcedureContext, args: dict[str, Any]) -> tuple[EscalationPort, str]:
    service = _service(ctx)
    row = service.find(ctx.caller.channel_id, args.get("id"))
    return service, row.id


def _paged_people(service: EscalationPort, esc_id: str) -> set[str]:
    """Slack users this escalation has paged so far (user groups expanded now)."""
    people: set[str] = set()
    for delivery in service.pages_of(esc_id):
        if delivery.kind != "slack_dm" or delivery.status not in ("sent", "sending", "pending", "failed"):
            continue
        try:
            people.update(service.slack.members(delivery.target))
        except PageFailed:
            continue  # an unreadable group grants nothing
    return people


def _not_the_break_glass_user(service: EscalationPort, esc_id: str, user_id: str, verb: str) -> None:
    row = service.get(esc_id)
    if row is not None and row.source == "break_glass" and row.created_by == user_id:
        raise UserError(f"You used break-glass, so you cannot {verb} its review escalation `{esc_id}`: "
                        "another person has to look at what ran.")


def ack(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service, esc_id = _target(ctx, args)
    _not_the_break_glass_user(service, esc_id, ctx.caller.user_id, "acknowledge")
    if (ctx.role is None or ctx.role < Role.OPERATOR) and ctx.caller.user_id not in _paged_people(service, esc_id):
        raise UserError(f"Only an operator or someone this escalation paged can acknowledge `{esc_id}`; "
                        "you were not paged for it.")
    change = service.acknowledge(esc_id, ctx.caller.user_id)
    return Result(title=f"Acknowledged {esc_id}", status=Status.OK, parts=[Text(change.text)],
                  summary=f"{esc_id} acknowledged at level {change.view.current_level}")


def resolve(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service, esc_id = _target(ctx, args)
    _not_the_break_glass_user(service, esc_id, ctx.caller.user_id, "resolve")
    change = service.resolve(esc_id, ctx.caller.user_id)
    return Result(title=f"Resolved {esc_id}", status=Status.OK, parts=[Text(change.text)], summary=f"{esc_id} resolved")


def snooze(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service, esc_id = _target(ctx, args)
    _not_the_break_glass_user(service, esc_id, ctx.caller.user_id, "snooze")
    seconds = int(args["duration"])
    change = service.snooze(esc_id, ctx.caller.user_id, seconds)
    return Result(title=f"Snoozed {esc_id}", status=Status.INFO, parts=[Text(change.text)],
                  summary=f"{esc_id} snoozed {format_duration(seconds)}")


def escalate(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service, esc_id = _target(ctx, args)
    change = service.escalate_now(esc_id, ctx.caller.user_id)
    return Result(title=f"Escalating {esc_id}", status=Status.WARNING, parts=[Text(change.text)],
                  summary=f"{esc_id} escalated to level {change.view.current_level}")


def timeline(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    service, esc_id = _target(ctx, args)
    markdown, count = service.timeline(esc_id)
    row = service.get(esc_id)
    assert row is not None
    filename = f"timeline-{esc_id}.md"
    try:
        service.slack.upload(row.channel_id, row.thread_ts, filename, markdown, f"Incident timeline {esc_id}")
        where = "uploaded to the escalation's thread"
    except PageFailed as exc:
        where = f"not uploaded ({exc.message})"
    view = service.view(row)
    return Result(
        title=f"Timeline of {esc_id}",
        parts=[Text(f"`{filename}`: {count} entries, {where}.\n{status_line(view)}; started {clock(view.created_at)}.")],
        summary=f"timeline of {esc_id}: {count} entries",
    )


_ID_PARAM = Param("id", "positional", "escalation id from the card; default: the only open one here",
                  metavar="ID", convert=escalation_id)

PROCEDURES = [
    Procedure(
        name="page",
        kube=(),  # no Kubernetes
        summary="Page a level of the escalation policy now (manual escalation)",
        risk=RiskClass.WRITE,
        runbook=RUNBOOK,
        run=page,
        params=(Param("text", "rest", "the level (number or name), then what is wrong",
                      metavar="LEVEL MESSAGE", required=True),),
        examples=("/aia page 1 API answers 500 since 03:10", "/aia page devops-team database unreachable"),
    ),
    Procedure(
        name="oncall",
        kube=(),  # no Kubernetes
        summary="The escalation policy, who each level pages now, and the open escalations",
        risk=RiskClass.READ,
        runbook=RUNBOOK,
        run=oncall,
    ),
    Procedure(
        name="ack",
        kube=(),  # no Kubernetes
        summary="Acknowledge an escalation: its timers stop (operators, or the people it paged)",
        risk=RiskClass.READ,
        runbook=RUNBOOK,
        run=ack,
        params=(_ID_PARAM,),
        examples=("/aia ack", "/aia ack E7K3Q2X"),
    ),
    Procedure(
        name="resolve",
        kube=(),  # no Kubernetes
        summary="Resolve an escalation: nobody else is paged",
        risk=RiskClass.WRITE,
        runbook=RUNBOOK,
        run=resolve,
        params=(_ID_PARAM,),
    ),
    Procedure(
        name="snooze",
        kube=(),  # no Kubernetes
        summary="Pause an escalation; the current level is paged again afterwards",
        risk=RiskClass.WRITE,
        runbook=RUNBOOK,
        run=snooze,
        params=(Param("duration", "positional", "30m, 1h, 4h (at most 1d)", metavar="DURATION", required=True,
                      convert=duration(86400)), _ID_PARAM),
        examples=("/aia snooze 30m", "/aia snooze 1h E7K3Q2X"),
    ),
    Procedure(
        name="escalate",
        kube=(),  # no Kubernetes
        summary="Page the next level now instead of waiting",
        risk=RiskClass.WRITE,
        runbook=RUNBOOK,
        run=escalate,
        params=(_ID_PARAM,),
    ),
    Procedure(
        name="timeline",
        kube=(),  # no Kubernetes
        summary="Upload the incident timeline (alerts, pages, acks, procedures, approvals) as Markdown",
        risk=RiskClass.READ,
        runbook=RUNBOOK,
        run=timeline,
        params=(_ID_PARAM,),
    ),
]
