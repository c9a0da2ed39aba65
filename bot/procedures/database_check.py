"""`/aia db check`: the runbook's "Database Connection Issues" steps, run from inside the app.

The runbook does ``kubectl exec -it <pod> -- nslookup mas-system-postgres`` and
``kubectl exec -it <pod> -- psql $DATABASE_URL -c "SELECT 1;"``. The bot does the same from one
ready pod of the live colour, through the exec API, with a FIXED command: a short Python script
(the app's image is Python) that reads ``DATABASE_URL`` from the container's own environment,
resolves the host, times a TCP connect and runs ``SELECT 1`` with whichever PostgreSQL driver the
image has. The procedure takes no arguments, so nothing typed in Slack reaches a command line;
the bot never sees the connection string, the script never prints it (only host, port, timings
and outcomes), and whatever comes back is redacted again before it is shown or stored.
"""

from __future__ import annotations

import json
from typing import Any

from bot.adapters.kube_exec import ExecOutcome, ExecRefused, exec_in_pod
from bot.procedures import kube_format as kf
from bot.procedures.changes import live_colour
from bot.redaction import redact
from bot.registry import Procedure, ProcedureContext, RiskClass, can
from bot.results import Fields, Result, Status, Table, Text

Obj = dict[str, Any]
MARKER = "aia-db-check/1"
SECTION = "Troubleshooting › Common Issues › Database Connection Issues"

# The whole script is a constant: review it here, it is all the bot ever runs in a pod.
# Budgets: DNS 5 s, TCP 6 s, SELECT 1 12 s (the bot's own timeout is a setting, default 20 s).
DB_CHECK_SCRIPT = r'''# aia-db-check/1: fixed, read-only database check sent by the AIA runbook bot (/aia db check).
# It reads DATABASE_URL itself and prints one JSON line: host, port, timings, outcomes. Never the URL.
import json, os, socket, threading, time
from urllib.parse import unquote, urlsplit

out = {"check": "aia-db-check/1"}
url = os.environ.get("DATABASE_URL", "")
password = ""


def finish(code):
    print(json.dumps(out))
    raise SystemExit(code)


def scrub(err):
    text = "%s: %s" % (type(err).__name__, err)
    for secret in (url, password, unquote(password)):
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


def timed(fn, limit):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except Exception as err:
            box["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(limit)
    ms = round((time.monotonic() - start) * 1000, 1)
    if worker.is_alive():
        return ms, None, TimeoutError("no answer within %ss" % limit)
    return ms, box.get("value"), box.get("error")


if not url:
    out["error"] = "DATABASE_URL is not set in this container"
    finish(2)
try:
    parts = urlsplit(url)
    password = parts.password or ""
    host, port = parts.hostname or "", parts.port or 5432
except ValueError:
    host, port = "", 0
if not host:
    out["error"] = "DATABASE_URL has no host (a Unix socket?); this check needs host:port"
    finish(2)
out["host"], out["port"] = host, port

ms, infos, err = timed(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), 5)
if err is not None:
    out["dns"] = {"ok": False, "ms": ms, "error": scrub(err)}
    finish(1)
out["dns"] = {"ok": True, "ms": ms, "addresses": sorted({info[4][0] for info in infos})[:5]}


def connect():
    socket.create_connection((host, port), timeout=5).close()


ms, _, err = timed(connect, 6)
if err is not None:
    out["tcp"] = {"ok": False, "ms": ms, "error": scrub(err)}
    finish(1)
out["tcp"] = {"ok": True, "ms": ms}

client = None
for name in ("psycopg", "psycopg2", "asyncpg"):
    try:
        __import__(name)
        client = name
        break
    except ImportError:
        continue
if client is None:
    out["select1"] = {"status": "skipped", "error": "no PostgreSQL client library in the image"}
    finish(0)
scheme, rest = url.split("://", 1)
dsn = scheme.split("+", 1)[0] + "://" + rest


def select_one():
    if client == "psycopg":
        import psycopg
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return conn.execute("SELECT 1").fetchone()[0]
    if client == "psycopg2":
        import psycopg2
        conn = psycopg2.connect(dsn, connect_timeout=5)
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            return cur.fetchone()[0]
        finally:
            conn.close()
    import asyncio
    import asyncpg

    async def run():
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
    return asyncio.run(run())


ms, value, err = timed(select_one, 12)
if err is not None or value != 1:
    out["select1"] = {"status": "failed", "client": client, "ms": ms,
                      "error": scrub(err) if err is not None else "SELECT 1 answered %r" % (value,)}
    finish(1)
out["select1"] = {"status": "ok", "client": client, "ms": ms}
finish(0)
'''
COMMAND = ("python3", "-c", DB_CHECK_SCRIPT)
RBAC_RULE = '`apiGroups: [""], resources: [pods/exec], verbs: [create]`'


def _service_selector(ctx: ProcedureContext) -> str:
    service = ctx.kube.service(ctx.settings.aia_api_service)
    selector = (service.get("spec") or {}).get("selector") or {}
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def _usable(pod: Obj) -> bool:
    return ((pod.get("status") or {}).get("phase") == "Running" and kf.is_ready(pod)
            and not (pod.get("metadata") or {}).get("deletionTimestamp"))


def _container_with_database_url(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    for container in containers:
        names = {str(e.get("name")) for e in container.get("env") or []}
        if "DATABASE_URL" in names:
            return str(container.get("name"))
    return str(containers[0].get("name")) if containers else ""


def _ms(step: Obj) -> str:
    value = step.get("ms")
    return f"{float(value):.1f} ms" if isinstance(value, int | float) else ""


def _text(value: Any, limit: int = 300) -> str:
    return redact(str(value))[:limit]


def _parse(outcome: ExecOutcome) -> Obj | None:
    for line in reversed(outcome.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("check") == MARKER:
                return data
    return None


def _failed(title: str, text: str, summary: str, fields: list[tuple[str, str]]) -> Result:
    return Result(title=title, status=Status.CRITICAL, parts=[Fields(fields), Text(text)],
                  summary=summary)


def database_check(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    colour = live_colour(ctx)
    selector = _service_selector(ctx)
    pods = ctx.kube.pods(selector=selector)
    ready = sorted((p for p in pods if _usable(p)), key=kf.name_of)
    title = "Database connectivity check"
    if not ready:
        listed = ", ".join(f"{kf.name_of(p)} ({kf.status_text(p)})" for p in pods[:5]) or "none"
        return Result(
            title=title, status=Status.CRITICAL,
            parts=[Text(f":x: No ready pod of the live colour ({colour}, selector `{selector}`) to run the "
                        f"check in. Pods: {listed}. Nothing was run. See `/aia pods` and `/aia status`; "
                        "the API may be down for another reason than the database.")],
            summary=f"no ready {colour} pod to check from",
        )
    pod = ready[0]
    pod_name, container = kf.name_of(pod), _container_with_database_url(pod)
    where: list[tuple[str, str]] = [("Pod", f"`{pod_name}` ({colour}, live)"), ("Container", f"`{container}`")]
    timeout = ctx.settings.aia_db_check_timeout_seconds
    try:
        outcome = exec_in_pod(ctx.kube, pod_name, container, list(COMMAND), timeout)
    except ExecRefused as exc:
        said = _text(exc.message)
        if exc.status == 403:
            return _failed(title, (
                f":no_entry: Kubernetes refused the exec (403). The bot's Role in `{ctx.kube.namespace}` needs "
                f"`create` on `pods/exec`: {RBAC_RULE} (manifests/base/rbac.yaml). Server said: {said}"),
                "exec forbidden: the Role lacks pods/exec create", where)
        return _failed(title, f":x: Kubernetes refused the exec into `{pod_name}` ({exc.status or 'no status'}): "
                       f"{said}", f"exec refused ({exc.status})", where)
    if outcome.timed_out:
        return _failed(title, (
            f":hourglass: The check did not finish within {timeout:g}s in `{pod_name}` and was stopped. "
            "A lookup or connect that hangs usually means DNS or the network path to the database: "
            "check NetworkPolicy egress and `/aia db status`."), f"check timed out after {timeout:g}s", where)
    data = _parse(outcome)
    if data is None:
        detail = _text((outcome.stderr or outcome.stdout or outcome.message).strip() or "no output")
        hint = (" The container has no `python3`, which the check needs."
                if outcome.exit_code in (126, 127) else "")
        return _failed(title, f":x: The check did not run as expected (exit code {outcome.exit_code}).{hint} "
                       f"Output: {detail}", f"check failed to run (exit {outcome.exit_code})", where)
    if data.get("error"):
        return _failed(title, f":x: {_text(data['error'])}. Check the Deployment's env and the ExternalSecret "
                       "(`/aia secrets`).", "no usable DATABASE_URL in the pod", where)
    where.append(("Database", f"`{_text(data.get('host'), 120)}:{_text(data.get('port'), 8)}`"))
    rows, hints = _steps(data)
    failed = any(row[1] == "FAILED" for row in rows)
    skipped = any(row[1] == "skipped" for row in rows)
    status = Status.CRITICAL if failed else (Status.WARNING if skipped else Status.OK)
    parts: list[Any] = [Fields(where), Table(["STEP", "RESULT", "TIME", "DETAIL"], rows)]
    if hints:
        parts.append(Text("\n".join(hints)))
    summary = f"db check from {pod_name}: " + ", ".join(f"{r[0]} {r[1]}" for r in rows)
    return Result(title=title, status=status, parts=parts, summary=summary)


def _steps(data: Obj) -> tuple[list[list[str]], list[str]]:
    rows: list[list[str]] = []
    hints: list[str] = []
    dns = data.get("dns") or {}
    if dns:
        ok = bool(dns.get("ok"))
        detail = ", ".join(_text(a, 60) for a in dns.get("addresses") or []) if ok else _text(dns.get("error"))
        rows.append(["name resolution", "ok" if ok else "FAILED", _ms(dns), detail])
        if not ok:
            hints.append(":mag: The database host does not resolve from inside the pod: check its DNS name in "
                         "the secret and the cluster's DNS (kube-dns); a private IP needs no DNS at all.")
    tcp = data.get("tcp") or {}
    if tcp:
        ok = bool(tcp.get("ok"))
        rows.append(["TCP connect", "ok" if ok else "FAILED", _ms(tcp), "" if ok else _text(tcp.get("error"))])
        if not ok:
            hints.append(":electric_plug: The port does not answer: check the instance (`/aia db status`), "
                         "NetworkPolicy egress from the app, and the Cloud SQL private network.")
    select = data.get("select1") or {}
    if select:
        state = str(select.get("status"))
        result = {"ok": "ok", "skipped": "skipped"}.get(state, "FAILED")
        client = _text(select.get("client") or "", 40)
        detail = _text(select.get("error") or "") or (f"via {client}" if client else "")
        rows.append(["SELECT 1", result, _ms(select), detail])
        if result == "FAILED":
            hints.append(":key: The server answers but the query fails: credentials or database name. A rotated "
                         "password that did not reach the pod shows here: `/aia secrets`, then `/aia secrets sync`.")
        elif result == "skipped":
            hints.append("No PostgreSQL driver in the image, so `SELECT 1` was not tried; DNS and TCP are checked.")
    return rows, hints


PROCEDURES = [
    Procedure(
        name="db check",
        summary="From a live pod: resolve the database host, time a TCP connect, SELECT 1 (fixed exec)",
        risk=RiskClass.READ,
        runbook=(SECTION,),
        run=database_check,
        # The live colour, its ready pods, the exec (pod names are generated: no resourceNames).
        kube=(can("get", "services", names=("{aia_api_service}",)), can("list", "pods"), can("create", "pods/exec")),
        notes=("Runs one fixed, reviewed script in one ready pod of the live colour through the exec API; "
               "takes no arguments and never shows the connection string. Needs `create` on `pods/exec`."),
    ),
]
