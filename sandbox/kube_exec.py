"""``pods/exec`` for the sandbox Kubernetes API server, over WebSocket as the real one speaks it.

The real API server answers ``GET|POST /api/v1/namespaces/NS/pods/NAME/exec?command=...`` only
as a WebSocket upgrade, with one of the ``v5.channel.k8s.io`` / ``v4.channel.k8s.io`` /
``channel.k8s.io`` subprotocols. Every binary frame starts with a channel byte: 1 stdout,
2 stderr, 3 the final ``Status`` (``Success``, or ``Failure`` with reason ``NonZeroExitCode`` and
the exit code as the first cause's message). Errors before the upgrade (no such pod, forbidden,
not a WebSocket request) are ordinary HTTP ``Status`` answers. The official client
(``kubernetes.stream.stream``) works against this unmodified.

Nothing is ever run on the host. The sandbox understands exactly one command: the bot's
database connectivity check, ``python3 -c SCRIPT`` where SCRIPT's first line holds the marker
``aia-db-check/1``. For it, a small interpreter answers the JSON line the real script prints,
computed from:

* the container's ``DATABASE_URL``, read as the kubelet would set it (``env`` value,
  ``valueFrom.secretKeyRef`` / ``configMapKeyRef``, ``envFrom``), from the stored objects;
* a seeded :class:`DatabaseProbe` per pod (or the default): does the host resolve, is the port
  reachable and how fast, does ``SELECT 1`` succeed, is a client library in the image, does the
  check hang.

Its output contract (one JSON object on stdout; exit 0 all passed, 1 a step failed, 2 no usable
``DATABASE_URL``)::

    {"check": "aia-db-check/1", "host": H, "port": P,
     "dns": {"ok": bool, "ms": float, "addresses": [...] | "error": str},
     "tcp": {"ok": bool, "ms": float | "error": str},            (absent when DNS failed)
     "select1": {"status": "ok" | "failed" | "skipped", "client": str, "ms": float, "error": str}}
    {"check": "aia-db-check/1", "error": "DATABASE_URL is not set in this container"}

Any other command gets a ``Failure`` status (the executable "is not found"), as a container
without it would answer. A probe's ``failure`` text is sent verbatim, with ``{url}`` replaced by
the full connection string: a database driver that puts the DSN into its error is how a
password could leak, and tests use it to prove the bot redacts what it relays.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
)

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

Obj = dict[str, Any]

MARKER = "aia-db-check/1"
# In the client's order of preference the real server picks the first it speaks.
SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
STDOUT, STDERR, ERROR = 1, 2, 3
# A hanging check holds the socket at most this long (the client normally gives up first).
HANG_LIMIT_SECONDS = 60.0


@dataclass
class DatabaseProbe:
    """What the database looks like from inside one pod."""

    resolves: bool = True
    addresses: tuple[str, ...] = ("10.20.0.3",)
    reachable: bool = True
    connect_ms: float = 1.8
    # "ok", "failed" or "no-client" (no PostgreSQL driver in the image: SELECT 1 is skipped).
    select_one: str = "ok"
    client: str = "psycopg2"
    failure: str = 'FATAL:  password authentication failed for user "aia_app"'
    hang: bool = False


@dataclass
class ExecRecord:
    namespace: str
    pod: str
    container: str
    command: list[str]
    subprotocol: str | None


@dataclass
class PodExec:
    """The exec endpoint's state: probes, a switch to forbid exec, and what was asked."""

    default_probe: DatabaseProbe = field(default_factory=DatabaseProbe)
    probes: dict[tuple[str, str], DatabaseProbe] = field(default_factory=dict)
    # The bot's ServiceAccount lacks `create` on `pods/exec` (RBAC): 403 before the upgrade.
    forbidden: bool = False
    sessions: list[ExecRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_probe(self, namespace: str, pod: str, probe: DatabaseProbe) -> None:
        with self._lock:
            self.probes[(namespace, pod)] = probe

    def probe_for(self, namespace: str, pod: str) -> DatabaseProbe:
        with self._lock:
            return copy.copy(self.probes.get((namespace, pod), self.default_probe))


class ExecRefused(Exception):
    """An HTTP error before the upgrade: (status, reason, message) as a Status answer."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass
class ExecPlan:
    """What one exec session will send, decided under the server's lock."""

    record: ExecRecord
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    failure_message: str = ""
    failure_reason: str = "NonZeroExitCode"
    hang: bool = False


def exec_target(path: str) -> tuple[str, str] | None:
    """(namespace, pod) when ``path`` is a pod's exec subresource."""
    parts = [p for p in path.split("/") if p]
    if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" \
            and parts[6] == "exec":
        return parts[3], parts[5]
    return None


def plan_exec(state: PodExec, pod: Obj | None, store: Any, namespace: str, name: str,
              raw_query: str, upgrade: bool) -> ExecPlan:
    """Validate the request as the API server does and decide the answer (no I/O)."""
    if state.forbidden:
        raise ExecRefused(403, "Forbidden", (
            f'pods "{name}" is forbidden: User "system:serviceaccount:aia-bot:aia-bot" cannot '
            f'create resource "pods/exec" in API group "" in the namespace "{namespace}"'))
    if pod is None:
        raise ExecRefused(404, "NotFound", f'pods "{name}" not found')
    if not upgrade:
        raise ExecRefused(400, "BadRequest", "Upgrade request required")
    query = parse_qs(raw_query, keep_blank_values=True)
    command = query.get("command") or []
    containers = [c for c in (pod.get("spec") or {}).get("containers") or []]
    wanted = (query.get("container") or [""])[-1]
    if not wanted:
        if len(containers) != 1:
            names = " ".join(str(c.get("name")) for c in containers)
            raise ExecRefused(400, "BadRequest",
                              f"a container name must be specified for pod {name}, choose one of: [{names}]")
        container = containers[0]
    else:
        found = [c for c in containers if c.get("name") == wanted]
        if not found:
            raise ExecRefused(400, "BadRequest", f"container {wanted} is not valid for pod {name}")
        container = found[0]
    if not command:
        raise ExecRefused(400, "BadRequest", "you must specify at least 1 command")
    if (pod.get("status") or {}).get("phase") != "Running":
        raise ExecRefused(400, "BadRequest", f"unable to upgrade connection: pod {name} is not running")
    record = ExecRecord(namespace, name, str(container.get("name")), list(command), None)
    with state._lock:
        state.sessions.append(record)
    if command[:2] != ["python3", "-c"] or len(command) != 3 or not command[2].startswith(f"# {MARKER}"):
        return ExecPlan(record, exit_code=126, failure_reason="InternalError", failure_message=(
            "Internal error occurred: error executing command in container: failed to exec in "
            f'container: exec: "{command[0]}": the sandbox runs only the bot\'s database check '
            "(see sandbox/kube_exec.py): executable file not found in $PATH"))
    probe = state.probe_for(namespace, name)
    url = _container_env(container, store, namespace).get("DATABASE_URL", "")
    out, code = _database_check(url, probe)
    return ExecPlan(record, stdout=json.dumps(out) + "\n", exit_code=code, hang=probe.hang,
                    failure_message=(f"command terminated with non-zero exit code: error executing "
                                     f"command [python3 -c], exit code {code}"))


def _container_env(container: Obj, store: Any, namespace: str) -> dict[str, str]:
    """The environment the kubelet would give the container, from the stored objects."""
    def lookup(kind: str, name: str, key: str) -> str | None:
        obj = store(kind, name, namespace)
        if obj is None:
            return None
        if kind == "Secret":
            value = (obj.get("data") or {}).get(key)
            return base64.b64decode(value).decode("utf-8", "replace") if value else None
        return (obj.get("data") or {}).get(key)

    env: dict[str, str] = {}
    for from_source in container.get("envFrom") or []:
        for kind, ref_key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = from_source.get(ref_key)
            obj = store(kind, ref.get("name", ""), namespace) if ref else None
            for key, raw in ((obj or {}).get("data") or {}).items():
                env[key] = base64.b64decode(raw).decode("utf-8", "replace") if kind == "Secret" else raw
    for item in container.get("env") or []:
        value: str | None = item.get("value")
        source: Obj = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = lookup("Secret", ref.get("name", ""), ref.get("key", ""))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = lookup("ConfigMap", ref.get("name", ""), ref.get("key", ""))
        if value is not None:
            env[str(item.get("name"))] = value
    return env


def _database_check(url: str, probe: DatabaseProbe) -> tuple[Obj, int]:
    """The JSON line and exit code the real script would produce for this probe."""
    out: Obj = {"check": MARKER}
    if not url:
        out["error"] = "DATABASE_URL is not set in this container"
        return out, 2
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 5432
    except ValueError:
        host, port = "", 0
    if not host:
        out["error"] = "DATABASE_URL has no host"
        return out, 2
    out.update(host=host, port=port)
    if not probe.resolves:
        out["dns"] = {"ok": False, "ms": 12.4, "error": "[Errno -2] Name or service not known"}
        return out, 1
    out["dns"] = {"ok": True, "ms": 0.9, "addresses": list(probe.addresses)}
    if not probe.reachable:
        out["tcp"] = {"ok": False, "ms": 5000.0, "error": "timed out"}
        return out, 1
    out["tcp"] = {"ok": True, "ms": probe.connect_ms}
    if probe.select_one == "no-client":
        out["select1"] = {"status": "skipped", "error": "no PostgreSQL client library in the image"}
        return out, 0
    if probe.select_one == "failed":
        out["select1"] = {"status": "failed", "client": probe.client, "ms": 8.2,
                          "error": probe.failure.replace("{url}", url)}
        return out, 1
    out["select1"] = {"status": "ok", "client": probe.client, "ms": 2.6}
    return out, 0


def serve_exec(handler: BaseHTTPRequestHandler, plan: ExecPlan, stopped: Any) -> None:
    """Upgrade the connection, send the channel frames and the final Status, close."""
    sock: socket.socket = handler.connection
    handler.close_connection = True
    ws = WSConnection(ConnectionType.SERVER)
    head = f"{handler.requestline}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in handler.headers.items())
    ws.receive_data((head + "\r\n").encode("latin-1"))
    request = next((e for e in ws.events() if isinstance(e, Request)), None)
    if request is None:
        _send_plain(handler, 400, "Upgrade request required")
        return
    chosen = next((p for p in request.subprotocols if p in SUBPROTOCOLS), None)
    if chosen is None:
        sock.sendall(ws.send(RejectConnection(status_code=400)))
        return
    plan.record.subprotocol = chosen
    sock.sendall(ws.send(AcceptConnection(subprotocol=chosen)))
    try:
        if plan.hang:
            _wait_for_close(ws, sock, HANG_LIMIT_SECONDS, stopped)
            return
        for channel, text in ((STDOUT, plan.stdout), (STDERR, plan.stderr)):
            if text:
                sock.sendall(ws.send(BytesMessage(data=bytes([channel]) + text.encode())))
        status: Obj = {"metadata": {}, "status": "Success"}
        if plan.exit_code:
            causes = [{"reason": "ExitCode", "message": str(plan.exit_code)}]
            status = {"metadata": {}, "status": "Failure", "message": plan.failure_message,
                      "reason": plan.failure_reason, "details": {"causes": causes}}
        sock.sendall(ws.send(BytesMessage(data=bytes([ERROR]) + json.dumps(status).encode())))
        sock.sendall(ws.send(CloseConnection(code=1000)))
        _wait_for_close(ws, sock, 5.0, stopped)
    except OSError:
        return  # the client went away


def _wait_for_close(ws: WSConnection, sock: socket.socket, limit: float, stopped: Any) -> None:
    deadline = time.monotonic() + limit
    sock.settimeout(0.2)
    while time.monotonic() < deadline and not stopped():
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return
        if not data:
            return
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, CloseConnection):
                with contextlib.suppress(Exception):  # already closing; nothing to tell anyone
                    sock.sendall(ws.send(event.response()))
                return
            if isinstance(event, Ping):
                sock.sendall(ws.send(event.response()))


def _send_plain(handler: BaseHTTPRequestHandler, code: int, message: str) -> None:
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": "BadRequest", "code": code}).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
