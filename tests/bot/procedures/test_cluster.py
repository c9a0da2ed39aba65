"""Read procedures against the local Kubernetes API server, through the official client."""

from __future__ import annotations

from bot.results import Fields, Status, Table, Text
from bot.service import OutcomeKind
from tests.harness.calls import run_as


def _tables(result) -> list[Table]:  # type: ignore[no-untyped-def]
    return [p for p in result.parts if isinstance(p, Table)]


def test_pods_lists_the_namespace_like_kubectl(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "pods")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    table = _tables(outcome.result)[0]
    names = {row[0] for row in table.rows}
    expected = {p["metadata"]["name"] for p in kube.list("Pod", "aia-production")}
    assert names == expected
    crash = next(row for row in table.rows if row[2] == "CrashLoopBackOff")
    assert int(crash[3]) >= 1


def test_pods_label_selector_reaches_the_api(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "pods version=green")
    rows = _tables(outcome.result)[0].rows
    assert rows and all("green" in row[0] for row in rows)
    assert any(r.query.get("labelSelector") == ["version=green"] or r.query.get("labelSelector") == "version=green"
               for r in kube.requests)


def test_describe_pod_calls_out_oomkilled(core, kube) -> None:  # type: ignore[no-untyped-def]
    bad = next(p for p in kube.list("Pod", "aia-production")
               if any(cs.get("restartCount", 0) > 0 for cs in p["status"].get("containerStatuses", [])))
    outcome = run_as(core, "viewer", f"describe pod {bad['metadata']['name']}")
    assert outcome.kind is OutcomeKind.OK
    assert outcome.result.status is Status.CRITICAL
    texts = " ".join(p.text for p in outcome.result.parts if isinstance(p, Text))
    assert "OOMKilled" in texts
    events = _tables(outcome.result)[-1]
    assert any(row[2] in {"BackOff", "OOMKilling"} for row in events.rows)


def test_describe_missing_pod_is_a_clear_user_error(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "describe pod no-such-pod")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "no-such-pod` does not exist in namespace `aia-production`" in outcome.message


def test_status_is_the_system_down_triage(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "status")
    assert outcome.kind is OutcomeKind.OK
    result = outcome.result
    text = " ".join(p.text for p in result.parts if isinstance(p, Text))
    assert "*Nodes:*" in text and "*Pods:*" in text
    deployments = next(t for t in _tables(result) if t.title == "Deployments")
    assert {"aia-api-blue", "aia-api-green"} <= {row[0] for row in deployments.rows}
    assert any(t.title == "Pods not ready or restarting" for t in _tables(result))
    # No PROMETHEUS_URL here: alerts are reported unknown, the rest still answers.
    assert "Prometheus is not configured" in text
    assert result.status in (Status.WARNING, Status.CRITICAL)


def test_events_since_and_warnings(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "events --since 2h --warnings")
    rows = _tables(outcome.result)[0].rows
    assert rows and all(row[1] == "Warning" for row in rows)


def test_top_pods_sorted_by_memory(core) -> None:  # type: ignore[no-untyped-def]
    from bot.procedures.kube_format import parse_quantity

    rows = _tables(run_as(core, "viewer", "top pods --sort memory").result)[0].rows
    memory = [parse_quantity(r[2]) for r in rows]
    assert len(rows) >= 3 and memory == sorted(memory, reverse=True)


def test_top_nodes_quota_nodes(core) -> None:  # type: ignore[no-untyped-def]
    for command in ("top nodes", "quota", "nodes"):
        outcome = run_as(core, "viewer", command)
        assert outcome.kind is OutcomeKind.OK, (command, outcome.message)
        assert _tables(outcome.result)[0].rows, command


def test_rollout_status_of_a_finished_rollout(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "rollout status aia-api-green")
    assert outcome.kind is OutcomeKind.OK
    assert "successfully rolled out" in outcome.result.summary


def test_rollout_status_unknown_deployment(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "rollout status aia-api-purple")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "aia-api-purple" in outcome.message


def test_secrets_show_names_and_sync_never_values(core, kube) -> None:  # type: ignore[no-untyped-def]
    import base64

    outcome = run_as(core, "viewer", "secrets")
    assert outcome.kind is OutcomeKind.OK
    rendered = repr(outcome.result)
    secret = kube.get("Secret", "aia-secrets", "aia-production")
    for encoded in secret["data"].values():
        assert encoded not in rendered
        assert base64.b64decode(encoded).decode() not in rendered
    (external,) = _tables(outcome.result)
    rows = {row[0]: row for row in external.rows}
    assert rows["aia-secrets"][1:4] == ["aia-secrets", "yes", "Ready"]
    assert any(row[3] == "NOT READY" for row in external.rows)
    assert outcome.result.status is Status.WARNING


def test_endpoints_from_settings(core) -> None:  # type: ignore[no-untyped-def]
    result = run_as(core, "viewer", "endpoints").result
    pairs = dict(next(p for p in result.parts if isinstance(p, Fields)).pairs)
    assert pairs["Grafana"] == "http://35.192.183.84"
    assert pairs["API"] == "http://35.225.214.87:8000"


def test_kubernetes_down_is_a_clear_failure(core, kube) -> None:  # type: ignore[no-untyped-def]
    kube.stop()
    outcome = run_as(core, "viewer", "pods")
    assert outcome.kind is OutcomeKind.FAILED
    assert "Kubernetes API did not answer" in outcome.message
