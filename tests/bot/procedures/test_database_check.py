"""`/aia db check`: a fixed exec in a ready pod of the live colour, through the official client.

The in-pod script itself is run for real against PostgreSQL at the end of this file; the sandbox
API server answers for it from seeded per-pod state (sandbox/kube_exec.py)."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.procedures.database_check import COMMAND, DB_CHECK_SCRIPT
from bot.service import OutcomeKind
from handlers.render_text import render_text
from sandbox.kube_exec import DatabaseProbe
from tests.harness.calls import run_as

NS = "aia-production"
PASSWORD = "Tr0ub4dor-s3cret-pw"
LEAKY_URL = f"postgresql://aia_app:{PASSWORD}@mas-system-postgres:5432/aia"


def _text(outcome) -> str:  # type: ignore[no-untyped-def]
    return render_text(outcome.result)[0] if outcome.result else outcome.message


def _audit(core) -> str:  # type: ignore[no-untyped-def]
    return json.dumps([[e.action, e.outcome, e.arguments, e.detail] for e in core.audit.recent(100)])


def _live_pods(kube, colour: str = "blue") -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(p["metadata"]["name"] for p in kube.list("Pod", NS, f"version={colour}")
                  if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))


def _set_database_url(kube, url: str) -> None:  # type: ignore[no-untyped-def]
    secret = kube.get("Secret", "aia-secrets", NS)
    secret["data"]["DATABASE_URL"] = base64.b64encode(url.encode()).decode()
    kube.put(secret)


def test_happy_path_runs_the_constant_command_in_a_ready_live_pod(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "db check")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    text = _text(outcome)
    assert outcome.result.status == "ok"
    assert "mas-system-postgres:5432" in text and "10.20.0.3" in text and "via psycopg2" in text
    session = kube.pod_exec.sessions[-1]
    assert session.pod in _live_pods(kube) and session.container == "api"
    assert session.command == list(COMMAND)  # exactly the reviewed script, nothing else


def test_follows_the_live_colour_from_the_service_selector(core, kube) -> None:  # type: ignore[no-untyped-def]
    service = kube.get("Service", "aia-api", NS)
    service["spec"]["selector"]["version"] = "green"
    kube.put(service)
    outcome = run_as(core, "viewer", "db check")
    assert outcome.kind is OutcomeKind.OK and "green, live" in _text(outcome)
    assert kube.pod_exec.sessions[-1].pod in _live_pods(kube, "green")


@pytest.mark.parametrize(("probe", "expected"), [
    (DatabaseProbe(resolves=False), "does not resolve from inside the pod"),
    (DatabaseProbe(reachable=False), "The port does not answer"),
    (DatabaseProbe(select_one="no-client"), "SELECT 1` was not tried"),
])
def test_failing_steps_are_named_with_what_to_check(core, kube, probe, expected) -> None:  # type: ignore[no-untyped-def]
    for pod in _live_pods(kube):
        kube.pod_exec.set_probe(NS, pod, probe)
    outcome = run_as(core, "viewer", "db check")
    assert outcome.kind is OutcomeKind.OK
    assert expected in _text(outcome)
    assert outcome.result.status == ("warning" if probe.select_one == "no-client" else "critical")


def test_the_password_never_appears_even_when_the_driver_prints_the_url(core, kube, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    _set_database_url(kube, LEAKY_URL)
    for pod in _live_pods(kube):
        kube.pod_exec.set_probe(NS, pod, DatabaseProbe(select_one="failed",
                                                       failure='could not connect with "{url}": timeout'))
    outcome = run_as(core, "viewer", "db check")
    text = _text(outcome)
    assert "SELECT 1" in text and "FAILED" in text and "aia_app:«redacted»@" in text
    assert PASSWORD not in text and PASSWORD not in outcome.result.summary
    assert PASSWORD not in _audit(core)
    assert PASSWORD not in caplog.text


def test_no_ready_pod_says_so_and_runs_nothing(core, kube) -> None:  # type: ignore[no-untyped-def]
    for pod in kube.list("Pod", NS, "version=blue"):
        pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        kube.put(pod)
    outcome = run_as(core, "viewer", "db check")
    assert "No ready pod of the live colour (blue" in _text(outcome) and "Nothing was run" in _text(outcome)
    assert kube.pod_exec.sessions == []


def test_exec_forbidden_names_the_rbac_rule(core, kube) -> None:  # type: ignore[no-untyped-def]
    kube.pod_exec.forbidden = True
    outcome = run_as(core, "viewer", "db check")
    text = _text(outcome)
    assert "refused the exec (403)" in text and "`create` on `pods/exec`" in text
    assert outcome.result.status == "critical" and "Traceback" not in text


def test_a_hanging_check_times_out_with_a_clear_message(bot_env, roles, kube) -> None:  # type: ignore[no-untyped-def]
    from bot.core import build_core
    from bot.settings import load_settings

    core = build_core(load_settings({**bot_env, "AIA_DB_CHECK_TIMEOUT_SECONDS": "1"}), roles)
    try:
        for pod in _live_pods(kube):
            kube.pod_exec.set_probe(NS, pod, DatabaseProbe(hang=True))
        outcome = run_as(core, "viewer", "db check")
        assert "did not finish within 1s" in _text(outcome) and outcome.result.status == "critical"
    finally:
        core.engine.dispose()


def test_missing_database_url_in_the_pod(core, kube) -> None:  # type: ignore[no-untyped-def]
    secret = kube.get("Secret", "aia-secrets", NS)
    del secret["data"]["DATABASE_URL"]
    kube.put(secret)
    assert "DATABASE_URL is not set in this container" in _text(run_as(core, "viewer", "db check"))


@pytest.mark.parametrize("text", ["db check; rm -rf /", "db check mas-system-postgres", "db check --host evil"])
def test_nothing_typed_reaches_the_pod(core, kube, text) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", text)
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "/aia db check" in f"{outcome.message} {outcome.usage}"
    assert kube.pod_exec.sessions == []


def test_no_role_no_check(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "nobody", "db check")
    assert outcome.kind is OutcomeKind.REFUSED and kube.pod_exec.sessions == []


# -- the script itself, for real, against PostgreSQL ------------------------------------------

def _run_script(url: str | None) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url is not None:
        env["DATABASE_URL"] = url
    done = subprocess.run([sys.executable, "-c", DB_CHECK_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent)
    return done.returncode, json.loads(done.stdout), done.stdout + done.stderr


def test_script_against_real_postgresql(pg_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(drivername="postgresql+psycopg", password=PASSWORD)
    code, out, raw = _run_script(url.render_as_string(hide_password=False))
    assert code == 0, raw
    assert out["dns"]["ok"] and out["tcp"]["ok"] and out["select1"] == {**out["select1"], "status": "ok"}
    assert out["select1"]["client"] == "psycopg" and PASSWORD not in raw


def test_script_failures_and_no_url_never_print_the_password() -> None:
    code, out, raw = _run_script(f"postgresql://nobody:{PASSWORD}@127.0.0.1:5432/nodb")
    assert code == 1 and out["select1"]["status"] == "failed" and PASSWORD not in raw
    code, out, raw = _run_script(f"postgresql://u:{PASSWORD}@127.0.0.1:1/x")
    assert code == 1 and out["tcp"]["ok"] is False and PASSWORD not in raw
    code, out, raw = _run_script(f"postgresql://u:{PASSWORD}@no-such-host.invalid:5432/x")
    assert code == 1 and out["dns"]["ok"] is False and "tcp" not in out and PASSWORD not in raw
    code, out, _ = _run_script(None)
    assert code == 2 and out["error"] == "DATABASE_URL is not set in this container"
