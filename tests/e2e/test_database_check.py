"""`/aia db check` end to end: signed slash commands into `aia-bot serve`, the exec over WebSocket at
the local Kubernetes server, the answer at the local Slack server. The DATABASE_URL password is
looked for everywhere afterwards: Slack calls, audit log, the bot's own log."""

from __future__ import annotations

import base64
import json

import pytest

from sandbox.kube_exec import DatabaseProbe
from tests.harness.approvals import OPS, Stack

VIEWER = "U0VIEW1"
NS = "aia-production"
PASSWORD = "e2e-Pa55word-never-shown"


@pytest.fixture
def stack(approvals_stack: Stack) -> Stack:
    shared_stack = approvals_stack.fresh()
    secret = shared_stack.kube.get("Secret", "aia-secrets", NS)
    url = f"postgresql://aia_app:{PASSWORD}@mas-system-postgres:5432/aia"
    secret["data"]["DATABASE_URL"] = base64.b64encode(url.encode()).decode()
    shared_stack.kube.put(secret)
    return shared_stack


def _ready_pods(stack: Stack, colour: str = "blue") -> list[str]:
    return [p["metadata"]["name"] for p in stack.kube.list("Pod", NS, f"version={colour}")
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def _answer(stack: Stack, user: str, text: str = "db check") -> str:
    before = len(stack.slack.calls_to("chat.postMessage"))
    stack.bot.slash(text, user, stack.slack.new_response_url())
    posts = stack.slack.wait_for(lambda: [c for c in stack.slack.calls_to("chat.postMessage")[before:]
                                          if "Database connectivity check" in json.dumps(c.args)], timeout=20)
    return json.dumps(posts[0].args, ensure_ascii=False)


def _nowhere(stack: Stack) -> None:
    """The password is in no Slack call, no audit row and no log line."""
    assert PASSWORD not in json.dumps([c.args for c in stack.slack.calls])
    assert PASSWORD not in json.dumps([r.body for r in stack.slack.responses])
    assert PASSWORD not in json.dumps(stack.audit_rows())
    assert PASSWORD not in stack.bot.logs()


def test_viewer_runs_the_check_in_a_live_pod(stack: Stack) -> None:
    posted = _answer(stack, VIEWER)
    assert "mas-system-postgres:5432" in posted and "SELECT 1" in posted and "via psycopg2" in posted
    assert stack.kube.pod_exec.sessions[-1].pod in _ready_pods(stack)
    assert any(a == "db check" and o == "ok" for _, a, o, _ in stack.audit_rows())
    _nowhere(stack)


def test_select_failure_with_a_leaky_driver_error_shows_no_password(stack: Stack) -> None:
    for pod in _ready_pods(stack):
        stack.kube.pod_exec.set_probe(NS, pod, DatabaseProbe(select_one="failed", failure="bad DSN {url}"))
    posted = _answer(stack, VIEWER)
    assert "FAILED" in posted and "aia_app:«redacted»@mas-system-postgres" in posted
    _nowhere(stack)


def test_dns_failure_is_named(stack: Stack) -> None:
    for pod in _ready_pods(stack):
        stack.kube.pod_exec.set_probe(NS, pod, DatabaseProbe(resolves=False))
    posted = _answer(stack, VIEWER)
    assert "does not resolve from inside the pod" in posted and "Name or service not known" in posted
    _nowhere(stack)


def test_exec_forbidden_names_the_missing_rbac_rule(stack: Stack) -> None:
    stack.kube.pod_exec.forbidden = True
    posted = _answer(stack, OPS)
    assert "refused the exec (403)" in posted and "pods/exec" in posted and "Traceback" not in posted
    _nowhere(stack)


def test_no_ready_pod_runs_nothing(stack: Stack) -> None:
    for pod in stack.kube.list("Pod", NS, "version=blue"):
        pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        stack.kube.put(pod)
    posted = _answer(stack, VIEWER)
    assert "No ready pod of the live colour (blue" in posted and not stack.kube.pod_exec.sessions


def test_user_without_a_role_and_typed_arguments_run_nothing(stack: Stack) -> None:
    assert "needs the viewer role" in stack.slash_answer("U0NOBODY", "db check")
    answer = stack.slash_answer(VIEWER, "db check --host 10.0.0.1")
    assert "Unknown option `--host`" in answer and "Usage: `/aia db check`" in answer
    assert not stack.kube.pod_exec.sessions
