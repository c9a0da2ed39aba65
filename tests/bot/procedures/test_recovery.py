"""`/aia dr plan|restore`: recreate what is missing from a verified backup; nothing deleted or overwritten.

Checked at the Kubernetes server (every request is recorded) and through the real approval
service with two approvers."""

from __future__ import annotations

import yaml
from sqlalchemy import update

from bot.context import Caller
from bot.service import OutcomeKind
from bot.store.backups import BackupStore
from bot.store.models import ConfigBackup
from handlers.render_text import render_text
from tests.harness.calls import run_as
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID

NS = "aia-production"
TS = "1700000000.000100"


def _text(outcome) -> str:  # type: ignore[no-untyped-def]
    return render_text(outcome.result)[0] if outcome.result else outcome.message


def _writes(kube) -> list:  # type: ignore[no-untyped-def]
    return [r for r in kube.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")
            and r.query.get("dryRun") != "All" and not r.path.endswith("/exec")]


def _backup(core) -> str:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", "config backup")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    with core.sessions() as session:
        newest = session.query(ConfigBackup).order_by(ConfigBackup.created_at.desc()).first()
    assert newest is not None and newest.id in outcome.result.title + outcome.result.summary
    return str(newest.id)


def _disaster(kube) -> None:  # type: ignore[no-untyped-def]
    """Three objects gone, one changed by hand."""
    kube.delete("ConfigMap", "aia-config", NS)
    kube.delete("Ingress", "aia-ingress", NS)
    kube.delete("Service", "aia-frontend", NS)
    dep = kube.get("Deployment", "aia-api-blue", NS)
    dep["spec"]["replicas"] = 4
    kube.put(dep)


def _request(core, command: str) -> str:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", command)
    assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED, outcome.message
    core.approvals.attach_card(outcome.approval.id, CHANNEL_ID, TS)
    return str(outcome.approval.id)


def _approve(core, request_id: str, who: str):  # type: ignore[no-untyped-def]
    decision = core.approvals.decide(request_id, "approve", Caller(SLACK_USERS[who].user_id, TEAM_ID, CHANNEL_ID), TS)
    assert decision.accepted, decision.message
    return decision


def test_plan_lists_missing_present_and_secrets_and_changes_nothing(core, kube) -> None:  # type: ignore[no-untyped-def]
    backup = _backup(core)
    _disaster(kube)
    kube.requests.clear()
    outcome = run_as(core, "viewer", f"dr plan {backup}")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    text = _text(outcome)
    for key in ("ConfigMap/aia-config", "Ingress/aia-ingress", "Service/aia-frontend"):
        assert f"{key}" in text
    assert text.count("missing: would be created") == 3
    assert "3 missing and would be created" in text and "(1 differ)" in text
    assert "Secrets are not restored from a backup" in text and "ExternalSecret `aia-secrets`" in text
    assert "verified" in text
    diff = next(p for p in outcome.result.parts if getattr(p, "filename", "").endswith(".diff"))
    assert "-  replicas: 3" in diff.text and "+  replicas: 4" in diff.text
    dry = [r for r in kube.requests if r.method == "POST" and r.query.get("dryRun") == "All"]
    assert len(dry) == 3 and not _writes(kube)
    assert outcome.result.actions[0].command == f"dr restore {backup}"


def test_restore_needs_two_approvers_takes_a_fresh_backup_and_creates_only_what_is_missing(core, kube) -> None:  # type: ignore[no-untyped-def]
    backup = _backup(core)
    _disaster(kube)
    kube.requests.clear()
    request_id = _request(core, f"dr restore {backup}")
    first = _approve(core, request_id, "approver")
    assert first.view.status == "pending" and "1 of 2" in first.message and not _writes(kube)
    second = _approve(core, request_id, "admin")
    assert second.view.status == "executed", second.view.result
    result = second.executed
    assert kube.get("ConfigMap", "aia-config", NS) and kube.get("Ingress", "aia-ingress", NS)
    assert kube.get("Service", "aia-frontend", NS)
    assert kube.get("Deployment", "aia-api-blue", NS)["spec"]["replicas"] == 4  # present: left alone
    writes = _writes(kube)
    assert {w.method for w in writes} == {"POST"}
    assert sorted(w.path.rsplit("/", 1)[1] for w in writes) == ["configmaps", "ingresses", "services"]
    service_body = next(w.body for w in writes if w.path.endswith("/services"))
    assert "clusterIP" not in service_body["spec"] and "uid" not in service_body["metadata"]
    assert "resourceVersion" not in service_body["metadata"] and "status" not in service_body
    with core.sessions() as session:
        backups = session.query(ConfigBackup).order_by(ConfigBackup.created_at).all()
    assert len(backups) == 2 and backups[1].id != backup
    assert f"Fresh backup `{backups[1].id}` was taken first" in render_text(result)[0]
    assert result.title == f"Recreated 3 objects from backup {backup}"


def test_object_recreated_by_hand_between_approvals_makes_the_request_stale(core, kube) -> None:  # type: ignore[no-untyped-def]
    backup = _backup(core)
    _disaster(kube)
    request_id = _request(core, f"dr restore {backup}")
    _approve(core, request_id, "approver")
    kube.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "aia-config", "namespace": NS},
              "data": {"LOG_LEVEL": "DEBUG"}})  # someone fixed it by hand meanwhile
    kube.requests.clear()
    decision = _approve(core, request_id, "admin")
    assert decision.view.status == "stale" and "missing" in (decision.view.result or "")
    assert not _writes(kube)
    assert kube.get("ConfigMap", "aia-config", NS)["data"] == {"LOG_LEVEL": "DEBUG"}
    assert kube.get("Ingress", "aia-ingress", NS) is None


def test_tampered_backup_is_refused_by_its_checksum(core, kube) -> None:  # type: ignore[no-untyped-def]
    backup = _backup(core)
    _disaster(kube)
    with core.sessions.begin() as session:
        row = session.get(ConfigBackup, backup)
        session.execute(update(ConfigBackup).where(ConfigBackup.id == backup)
                        .values(content=row.content.replace("aia-api", "evil-api", 1)))
    kube.requests.clear()
    for who, command in (("viewer", f"dr plan {backup}"), ("operator", f"dr restore {backup}")):
        outcome = run_as(core, who, command)
        assert outcome.kind is OutcomeKind.USER_ERROR and "fails its checksum" in outcome.message
    assert not _writes(kube) and not [r for r in kube.requests if r.query.get("dryRun") == "All"]


def test_unknown_backup_lists_the_recent_ones(core, kube) -> None:  # type: ignore[no-untyped-def]
    none_yet = run_as(core, "viewer", "dr plan 0123456789ab")
    assert none_yet.kind is OutcomeKind.USER_ERROR and "no backup of `aia-production` yet" in none_yet.message
    first, second = _backup(core), _backup(core)
    outcome = run_as(core, "viewer", "dr plan 0123456789ab")
    assert "No configuration backup `0123456789ab`" in outcome.message
    assert f"`{first}`" in outcome.message and f"`{second}`" in outcome.message
    bad = run_as(core, "viewer", "dr plan ../../etc/passwd")
    assert bad.kind is OutcomeKind.USER_ERROR and "BACKUP_ID" in f"{bad.message} {bad.usage}"


def test_nothing_missing_means_no_request(core, kube) -> None:  # type: ignore[no-untyped-def]
    backup = _backup(core)
    outcome = run_as(core, "operator", f"dr restore {backup}")
    assert outcome.kind is OutcomeKind.USER_ERROR and "Nothing to restore" in outcome.message
    assert not _writes(kube)


def test_viewer_may_plan_but_not_restore(core, kube) -> None:  # type: ignore[no-untyped-def]
    backup = _backup(core)
    _disaster(kube)
    outcome = run_as(core, "viewer", f"dr restore {backup}")
    assert outcome.kind is OutcomeKind.REFUSED and not _writes(kube)


GENERIC_BACKUP = """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: dr-test-hpa, uid: 1111, resourceVersion: '42', creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: aia-api-blue}
  minReplicas: 2
  maxReplicas: 5
status: {currentReplicas: 2}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: dr-test-pdb, managedFields: [{manager: kubectl}]}
spec: {minAvailable: 1, selector: {matchLabels: {app: aia-api}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dr-test-netpol}
spec: {podSelector: {matchLabels: {app: aia-api}}, policyTypes: [Ingress]}
---
kind: Service
metadata:
  name: aia-api-canary
  annotations: {kubectl.kubernetes.io/last-applied-configuration: '{"secret": "x"}'}
spec: {clusterIP: 10.96.7.7, clusterIPs: [10.96.7.7], selector: {app: aia-api}, ports: [{port: 8000}]}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: aia-extra-secrets}
spec: {secretStoreRef: {name: gcp-secret-manager, kind: SecretStore}, target: {name: aia-extra}}
---
apiVersion: v1
kind: Secret
metadata: {name: aia-extra, ownerReferences: [{kind: ExternalSecret, name: aia-extra-secrets, uid: u1}]}
data: {API_KEY: «redacted»}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: aia-api}
spec: {endpoints: [{port: http}]}
"""


def test_generic_kinds_are_planned_and_created_without_server_set_fields(core, kube) -> None:  # type: ignore[no-untyped-def]
    stored = BackupStore(core.sessions).save("U0OPS01", NS, GENERIC_BACKUP)
    plan = run_as(core, "viewer", f"dr plan {stored.id}")
    text = _text(plan)
    assert "5 missing and would be created" in text, text
    assert "ServiceMonitor/aia-api" in text and "does not serve" in text
    assert "Secret/aia-extra" in text and "ExternalSecret `aia-extra-secrets` recreates it" in text
    kube.requests.clear()
    request_id = _request(core, f"dr restore {stored.id}")
    _approve(core, request_id, "approver")
    assert _approve(core, request_id, "admin").view.status == "executed"
    for kind, name in (("HorizontalPodAutoscaler", "dr-test-hpa"), ("PodDisruptionBudget", "dr-test-pdb"),
                       ("NetworkPolicy", "dr-test-netpol"), ("Service", "aia-api-canary"),
                       ("ExternalSecret", "aia-extra-secrets")):
        assert kube.get(kind, name, NS) is not None, kind
    assert kube.get("Secret", "aia-extra", NS) is None
    creates = [w for w in _writes(kube) if w.method == "POST" and not w.path.endswith("/configmaps")]
    bodies = {w.body["kind"]: w.body for w in creates if isinstance(w.body, dict) and "kind" in w.body}
    assert bodies["HorizontalPodAutoscaler"]["metadata"] == {"name": "dr-test-hpa"}
    assert "status" not in bodies["HorizontalPodAutoscaler"]
    assert "managedFields" not in bodies["PodDisruptionBudget"]["metadata"]
    canary = bodies["Service"]
    assert canary["apiVersion"] == "v1" and "clusterIP" not in canary["spec"] and "clusterIPs" not in canary["spec"]
    assert "annotations" not in canary["metadata"]
    assert kube.get("Service", "aia-api-canary", NS)["spec"].get("clusterIP") != "10.96.7.7"
    assert "Secret" not in bodies


def test_backup_of_another_namespace_is_refused(core, kube) -> None:  # type: ignore[no-untyped-def]
    stored = BackupStore(core.sessions).save("U0OPS01", "aia-staging", yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}))
    outcome = run_as(core, "viewer", f"dr plan {stored.id}")
    assert outcome.kind is OutcomeKind.USER_ERROR and "of namespace `aia-staging`" in outcome.message
