"""Pod logs, and the app-wide log search the runbook's security check meant to do."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.errors import UserError
from bot.procedures import kube_format as kf
from bot.redaction import redact
from bot.registry import Param, Procedure, ProcedureContext, RiskClass, can
from bot.results import Preformatted, Result, Status, Text
from bot.safe_regex import SafePattern
from bot.validators import bounded_int, container_name, duration, format_duration, k8s_name

# Bound what one command may pull from the API server and hold in memory.
TAIL_LINES = 5000
LIMIT_BYTES = 4 * 1024 * 1024
MAX_MATCHES = 2000
MAX_PODS = 100
USAGE = (
    "Usage: `/aia logs POD [--container C] [--previous] [--since 1h] [--grep REGEX] [--tail N]` "
    "or `/aia logs --app [--grep REGEX] [--since 1h] [--tail N]`"
)


def _pattern(args: dict[str, Any]) -> SafePattern | None:
    return SafePattern(args["grep"]) if args.get("grep") else None


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def logs(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    if args.get("app"):
        if args.get("pod"):
            raise UserError("Give either a POD or --app, not both.", USAGE)
        if args.get("previous") or args.get("container"):
            raise UserError("--previous and --container go with one POD, not with --app.", USAGE)
        return _app_logs(ctx, args)
    if not args.get("pod"):
        raise UserError("POD is missing.", USAGE)
    return _pod_logs(ctx, args)


def _pod_logs(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    name = args["pod"]
    pattern = _pattern(args)  # validate before calling the API
    tail = args.get("tail") or (TAIL_LINES if pattern else 200)
    text = ctx.kube.pod_log(
        name,
        container=args.get("container"),
        previous=bool(args.get("previous")),
        since_seconds=None if args.get("previous") else args.get("since"),
        tail_lines=tail,
        limit_bytes=LIMIT_BYTES,
    )
    lines = _lines(redact(text))
    which = "previous container's log" if args.get("previous") else f"last {format_duration(args['since'])}"
    title = f"Logs of {name}" + (f" [{args['container']}]" if args.get("container") else "") + f" · {which}"
    if pattern:
        total = len(lines)
        lines = list(pattern.filter(lines))[:MAX_MATCHES]
        title += f" · grep `{pattern.pattern}`"
        summary = f"{len(lines)} of {total} lines match"
    else:
        summary = f"{len(lines)} lines"
    result = Result(title=title, summary=summary)
    if not lines:
        result.add(Text("_No matching lines._" if pattern else "_The log is empty._"))
        result.status = Status.OK
    else:
        result.add(Preformatted("\n".join(lines), filename=f"{name}.log"))
    return result


def _app_logs(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    pattern = _pattern(args)
    since = args["since"]
    # As `kubectl logs --tail N | grep`: the last N lines of each container, then the pattern.
    tail = args.get("tail") or TAIL_LINES
    selector = ctx.settings.aia_app_selector or None
    pods = [p for p in ctx.kube.pods(selector=selector) if (p.get("status") or {}).get("phase") in ("Running", "Pending", "Failed")]
    pods = sorted(pods, key=kf.name_of)[:MAX_PODS]
    targets = [
        (kf.name_of(p), c.get("name"))
        for p in pods
        for c in (p.get("spec") or {}).get("containers") or []
    ]

    def fetch(target: tuple[str, str]) -> tuple[str, str, list[str], str | None]:
        pod, container = target
        try:
            text = ctx.kube.pod_log(pod, container=container, since_seconds=since,
                                    tail_lines=tail, limit_bytes=LIMIT_BYTES)
        except UserError as exc:  # a pod that vanished or has not started: say so, go on
            return pod, container, [], exc.message
        return pod, container, _lines(redact(text)), None

    # The API server answers each pod's log separately: ask for several at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        fetched = list(pool.map(fetch, targets))

    matches: list[str] = []
    skipped: list[str] = []
    scanned = 0
    for pod, container, lines, problem in fetched:
        if problem:
            skipped.append(f"{pod}/{container}")
            continue
        scanned += len(lines)
        hits = pattern.filter(lines) if pattern else iter(lines)
        for line in hits:
            matches.append(f"{pod}/{container} | {line}")
            if len(matches) >= MAX_MATCHES:
                break
        if len(matches) >= MAX_MATCHES:
            break
    where = f" matching `{selector}`" if selector else ""
    title = f"Logs of {len(pods)} pods{where} · last {format_duration(since)}"
    if args.get("tail"):
        title += f" · last {tail} lines each"
    if pattern:
        title += f" · grep `{pattern.pattern}`"
    result = Result(title=title, summary=f"{len(matches)} lines from {len(targets)} containers ({scanned} scanned)")
    if matches:
        result.status = Status.WARNING if pattern else Status.INFO
        result.add(Preformatted("\n".join(matches), filename="app-logs.log"))
    else:
        result.status = Status.OK
        result.add(Text("_No matching lines._" if pattern else "_No log lines._"))
    if len(matches) >= MAX_MATCHES:
        result.add(Text(f"_Stopped at {MAX_MATCHES} lines; narrow with --since or --grep._"))
    if skipped:
        result.add(Text(f"_Could not read: {', '.join(skipped[:10])}_"))
    return result


PROCEDURES = [
    Procedure(
        name="logs",
        kube=(can("list", "pods"), can("get", "pods/log")),
        summary="Logs of a pod, or search every pod of the app with --app",
        risk=RiskClass.READ,
        runbook=(
            "Troubleshooting › Pods Not Starting",
            "Performance Troubleshooting › Memory Issues",
            "Security Incident › Check logs for suspicious activity",
        ),
        run=logs,
        params=(
            Param("pod", "positional", "pod name", metavar="POD", convert=k8s_name),
            Param("app", "flag", "search every pod of the app"),
            Param("container", "option", "container of a pod with several", metavar="C", convert=container_name),
            Param("previous", "flag", "log of the previous (crashed) container"),
            Param("since", "option", "how far back", metavar="DURATION", default=3600, convert=duration(7 * 86400)),
            Param("grep", "option", "regular expression, case-insensitive; `a\\|b` works as in grep",
                  metavar="REGEX"),
            Param("tail", "option", "at most this many lines per container", metavar="N",
                  convert=bounded_int(1, TAIL_LINES)),
        ),
        examples=(
            "/aia logs aia-api-blue-4ce263bd3a-pktwx --previous",
            '/aia logs --app --since 1h --grep "ERROR|WARN|unauthorized|failed"',
            "/aia logs aia-api-blue-4ce263bd3a-pktwx --grep memory|oom",
            "/aia logs --app --tail 20 --grep ERROR",
        ),
    ),
]
