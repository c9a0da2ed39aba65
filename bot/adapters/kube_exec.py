"""Run a fixed command in a pod through the Kubernetes exec API (``pods/exec``, WebSocket).

Only procedures that send a constant command use this (`/aia db check`); nothing a user types
reaches a command line. The official client's ``kubernetes.stream.stream`` swaps the transport
of the ApiClient it is given for the length of the call, so each exec gets an ApiClient of its
own: the gateway's shared one keeps serving the other worker threads untouched.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from bot.errors import BackendUnavailable

if TYPE_CHECKING:
    from bot.adapters.kubernetes import KubeGateway

_HANDSHAKE = re.compile(r"Handshake status (\d{3})")
_STATUS_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"')
# The connect itself may hang on a dead network: the whole call gets this much on top.
_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ExecOutcome:
    stdout: str
    stderr: str
    # None when the command did not finish in time (the connection was closed by us).
    exit_code: int | None
    # The final Status message from the API server ("" on success).
    message: str

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


class ExecRefused(BackendUnavailable):
    """The API server refused the exec before it started (403 forbidden, 404 pod gone, 400...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refusal(exc: Exception) -> ExecRefused:
    text = str(getattr(exc, "reason", "") or exc)
    match = _HANDSHAKE.search(text)
    status = int(match.group(1)) if match else int(getattr(exc, "status", 0) or 0)
    said = _STATUS_MESSAGE.search(text)
    message = said.group(1).encode().decode("unicode_escape") if said else text.split(" -+-+- ")[0]
    return ExecRefused(status, message[:300])


def _exit_code(raw: str) -> tuple[int, str]:
    """Exit code and message from the error channel's Status (v4/v5 channel protocols)."""
    if not raw.strip():
        return 0, ""
    try:
        status = json.loads(raw)
    except ValueError:
        return 1, raw[:300]
    if status.get("status") == "Success":
        return 0, ""
    causes = (status.get("details") or {}).get("causes") or []
    for cause in causes:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"]), str(status.get("message") or "")
    # A Failure without an exit code: the command could not start (no such executable...).
    return 126, str(status.get("message") or "the command could not be started")


def exec_in_pod(gateway: KubeGateway, pod: str, container: str, command: list[str],
                timeout: float) -> ExecOutcome:
    """Run ``command`` in ``pod``/``container`` and wait at most ``timeout`` seconds."""
    api_client = client.ApiClient(gateway.api_client.configuration)
    api = client.CoreV1Api(api_client)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            exec_once()
        finally:
            api_client.close()

    def exec_once() -> None:
        try:
            ws = stream(api.connect_get_namespaced_pod_exec, pod, gateway.namespace,
                        command=command, container=container, stderr=True, stdin=False,
                        stdout=True, tty=False, _preload_content=False)
        except ApiException as exc:
            box["error"] = _refusal(exc)
            return
        except Exception as exc:  # noqa: BLE001 - any transport failure is "unreachable" to the caller
            box["error"] = BackendUnavailable(
                f"Kubernetes exec into {pod} failed to start ({type(exc).__name__})")
            return
        box["ws"] = ws
        try:
            ws.run_forever(timeout=timeout)
            finished = not ws.is_open()
            stdout, stderr = ws.read_channel(1), ws.read_channel(2)
            code, message = _exit_code(ws.read_channel(3)) if finished else (None, "")
            box["outcome"] = ExecOutcome(stdout, stderr, code, message)
        except Exception as exc:  # noqa: BLE001 - a broken stream is reported, never raised raw
            box["error"] = BackendUnavailable(
                f"the exec stream from {pod} broke ({type(exc).__name__})")
        finally:
            ws.close()

    worker = threading.Thread(target=run, name=f"kube-exec-{pod}", daemon=True)
    worker.start()
    worker.join(timeout + _GRACE_SECONDS)
    if "error" in box:
        raise box["error"]
    if "outcome" not in box:
        if "ws" in box:
            box["ws"].close()
        return ExecOutcome("", "", None, "")
    outcome: ExecOutcome = box["outcome"]
    return outcome
