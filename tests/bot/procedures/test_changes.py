"""Every write and destructive procedure, checked at the Kubernetes server.

Destructive ones go through the real approval service: request, approve by a
second person, execute. The official client talks to the local API server.
"""

from __future__ import annotations

import base64
import json

import pytest

from bot.context import Caller
from bot.results import Preformatted
from bot.service import OutcomeKind
from tests.harness.calls import run_as
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID

NS = "aia-production"


def approve(core, command: str):  # type: ignore[no-untyped-def]
    """Request as the operator, approve as the approver; the executed Result."""
    outcome = run_as(core, "operator", command)
    assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED, outcome.message
    request_id = outcome.approval.id
    core.approvals.attach_card(request_id, CHANNEL_ID, "1700000000.000100")
    approver = Caller(SLACK_USERS["approver"].user_id, TEAM_ID, CHANNEL_ID)
    decision = core.approvals.decide(request_id, "approve", approver, "1700000000.000100")
    assert decision.accepted, decision.message
    assert decision.view.status == "executed", decision.view.result
    return decision.executed


def deployment(kube, name: str):  # type: ignore[no-untyped-def]
    return kube.get("Deployment", name, NS)


def finish(result) -> list:  # type: ignore[no-untyped-def]
    return list(result.followup()) if result.followup else []


def test_scale_is_a_write_and_runs_at_once(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", "scale aia-api-green 4")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    assert deployment(kube, "aia-api-green")["spec"]["replicas"] == 4
    steps = finish(outcome.result)
    assert "successfully rolled out" in steps[-1].summary


def test_viewer_may_not_scale(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "scale aia-api-green 4")
    assert outcome.kind is OutcomeKind.REFUSED and "operator" in outcome.message
    assert deployment(kube, "aia-api-green")["spec"]["replicas"] == 2


def test_scale_above_hpa_maximum_asks_for_confirmation(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", "scale aia-api-green 8")
    assert outcome.kind is OutcomeKind.OK and "above the HPA maximum of 5" in outcome.result.summary
    assert deployment(kube, "aia-api-green")["spec"]["replicas"] == 2
    assert outcome.result.actions[0].command == "scale aia-api-green 8 --confirm"
    run_as(core, "operator", outcome.result.actions[0].command)
    assert deployment(kube, "aia-api-green")["spec"]["replicas"] == 8


def test_emergency_scale_up_scales_the_live_colour_to_5(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", "emergency scale-up")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    assert deployment(kube, "aia-api-blue")["spec"]["replicas"] == 5
    assert deployment(kube, "aia-api-green")["spec"]["replicas"] == 2


def test_restart_sets_restarted_at_and_follows_the_rollout(core, kube) -> None:  # type: ignore[no-untyped-def]
    before = deployment(kube, "aia-api-green")["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    outcome = run_as(core, "operator", "restart aia-api-green")
    template = deployment(kube, "aia-api-green")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    assert finish(outcome.result)[-1].status.value == "ok"
    after = deployment(kube, "aia-api-green")["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    assert int(after) == int(before) + 1


def test_bluegreen_deploy_validate_switch_rollback_cleanup(core, kube, image_registry) -> None:  # type: ignore[no-untyped-def]
    image = "gcr.io/a-467519/aia-system:v1.6.0"
    deploy = run_as(core, "operator", f"bluegreen deploy {image}")
    assert deploy.kind is OutcomeKind.OK, deploy.message
    # Pinned: the nodes pull exactly the build the tag named when the deploy was planned.
    pinned = f"{image}@{image_registry.digest('v1.6.0')}"
    assert deployment(kube, "aia-api-green")["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    assert finish(deploy.result)[-1].status.value == "ok"
    validate = run_as(core, "operator", "bluegreen validate")
    assert validate.result.status.value == "ok", validate.result.parts

    approve(core, "bluegreen switch")
    assert kube.get("Service", "aia-api", NS)["spec"]["selector"]["version"] == "green"
    approve(core, "bluegreen rollback")
    assert kube.get("Service", "aia-api", NS)["spec"]["selector"]["version"] == "blue"
    approve(core, "bluegreen switch")
    approve(core, "bluegreen cleanup")
    assert deployment(kube, "aia-api-blue") is None  # blue was idle after the switch
    assert deployment(kube, "aia-api-green") is not None


def test_bluegreen_switch_refuses_an_idle_colour_without_ready_pods(core, kube) -> None:  # type: ignore[no-untyped-def]
    dep = deployment(kube, "aia-api-green")
    dep["spec"]["replicas"] = 0  # scaled down by hand: nothing to send traffic to
    kube.put(dep)
    outcome = run_as(core, "operator", "bluegreen switch")
    assert outcome.kind is OutcomeKind.USER_ERROR and "no ready pods" in outcome.message


def test_set_image(core, kube, image_registry) -> None:  # type: ignore[no-untyped-def]
    approve(core, "set-image aia-api-blue api=gcr.io/a-467519/aia-system:v1.5.1")
    image = deployment(kube, "aia-api-blue")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"gcr.io/a-467519/aia-system:v1.5.1@{image_registry.digest('v1.5.1')}"


def test_rollback_to_the_previous_revision(core, kube) -> None:  # type: ignore[no-untyped-def]
    before = deployment(kube, "aia-api-blue")["spec"]["template"]["spec"]["containers"][0]["image"]
    approve(core, "rollback aia-api-blue")
    after = deployment(kube, "aia-api-blue")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert before.endswith(":v1.4.2") and after.endswith(":v1.4.1")


def test_rollback_to_a_missing_revision_is_a_user_error(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", "rollback aia-api-blue --to-revision 9")
    assert outcome.kind is OutcomeKind.USER_ERROR and "no revision 9" in outcome.message


def test_isolate_scales_to_zero(core, kube) -> None:  # type: ignore[no-untyped-def]
    approve(core, "isolate aia-frontend")
    assert deployment(kube, "aia-frontend")["spec"]["replicas"] == 0


def test_maintenance_on_and_off(core, kube) -> None:  # type: ignore[no-untyped-def]
    approve(core, "maintenance on")
    assert kube.get("ConfigMap", "aia-config", NS)["data"]["MAINTENANCE_MODE"] == "true"
    template = deployment(kube, "aia-api-blue")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    approve(core, "maintenance off")
    assert kube.get("ConfigMap", "aia-config", NS)["data"]["MAINTENANCE_MODE"] == "false"


def test_config_set_safe_key_is_a_write_other_keys_need_approval(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", "config set LOG_LEVEL=DEBUG")
    assert outcome.kind is OutcomeKind.OK
    assert kube.get("ConfigMap", "aia-config", NS)["data"]["LOG_LEVEL"] == "DEBUG"
    pending = run_as(core, "operator", "config set LOG_LEVEL=INFO FEATURE_X=on")
    assert pending.kind is OutcomeKind.APPROVAL_REQUESTED
    assert "FEATURE_X" not in kube.get("ConfigMap", "aia-config", NS)["data"]


def test_config_backup_redacts_secrets_and_is_kept(core, kube) -> None:  # type: ignore[no-untyped-def]
    from bot.store.backups import BackupStore

    outcome = run_as(core, "operator", "config backup")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    text = next(p for p in outcome.result.parts if isinstance(p, Preformatted)).text
    secret = kube.get("Secret", "aia-secrets", NS)
    for value in secret["data"].values():
        assert value not in text and base64.b64decode(value).decode() not in text
    assert "kind: Deployment" in text and "kind: RoleBinding" in text
    # Secrets are not read at all (no RBAC right); their ExternalSecrets are kept instead.
    assert "kind: Secret\n" not in text and "kind: ExternalSecret" in text
    stored = BackupStore(core.sessions).latest(NS)
    assert stored is not None and stored.content == text


def _plant_secrets(kube) -> None:  # type: ignore[no-untyped-def]
    """What a careless operator leaves behind: kubectl apply's annotation on the Secret,
    literal credentials in a pod template and in the config map."""
    import copy
    import json

    secret = copy.deepcopy(kube.get("Secret", "aia-secrets", NS))
    secret["metadata"].setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = (
        json.dumps({"kind": "Secret", "data": secret["data"]}))
    kube.put(secret)
    dep = copy.deepcopy(kube.get("Deployment", "aia-api-blue", NS))
    dep["metadata"].setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    dep["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).extend([
        {"name": "DB_PASSWORD", "value": "hunter2-literal-pw"},
        {"name": "REDIS_URL", "value": "redis://:redis-pw-9f8e7d@aia-redis:6379/0"},
        {"name": "LOG_FORMAT", "value": "json"},
    ])
    kube.put(dep)
    cm = copy.deepcopy(kube.get("ConfigMap", "aia-config", NS))
    cm["data"]["SLACK_WEBHOOK"] = "https://hooks.slack.com/services/T0/B0/hookpart1234secret"
    kube.put(cm)


def test_config_backup_never_holds_secret_data_and_keeps_what_rebuilds_the_namespace(core, kube) -> None:  # type: ignore[no-untyped-def]
    from bot.store.backups import BackupStore, load_backup

    _plant_secrets(kube)
    outcome = run_as(core, "operator", "config backup")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    text = next(p for p in outcome.result.parts if isinstance(p, Preformatted)).text
    for value in kube.get("Secret", "aia-secrets", NS)["data"].values():
        assert value not in text and base64.b64decode(value).decode() not in text
    for leaked in ("hunter2-literal-pw", "redis-pw-9f8e7d", "hookpart1234secret", "last-applied-configuration"):
        assert leaked not in text, leaked
    assert "LOG_FORMAT" in text and "json" in text  # ordinary values stay
    grouped = load_backup(text)
    assert "Secret" not in grouped
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount",
                 "ExternalSecret", "Ingress", "Deployment", "Service", "ConfigMap", "Role", "RoleBinding"):
        assert grouped.get(kind), kind
    assert all("status" not in obj for objs in grouped.values() for obj in objs)
    store = BackupStore(core.sessions)
    stored = store.latest(NS)
    assert stored is not None and stored.content == text and store.verify(stored)
    stored.content += "# edited\n"
    assert not store.verify(stored)
    # Secrets are not even read for a backup: the bot needs no right to them for this.
    assert not [r for r in kube.requests if r.path.endswith("/secrets") or "/secrets/" in r.path]


@pytest.mark.parametrize("pair", ["DB_PASSWORD=hunter2x", "AWS_SECRET_ACCESS_KEY=abcd1234efgh",
                                  "PGPASSWORD=hunter2x", "FEATURE_URL=postgres://u:hunter2x@db/x"])
def test_config_set_refuses_secrets_and_points_to_secret_manager(core, kube, pair: str) -> None:  # type: ignore[no-untyped-def]
    before = dict(kube.get("ConfigMap", "aia-config", NS)["data"])
    outcome = run_as(core, "operator", f"config set {pair}")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "Secret Manager" in outcome.message
    assert kube.get("ConfigMap", "aia-config", NS)["data"] == before
    secret_value = pair.split("=", 1)[1]
    assert all(secret_value not in (e.arguments + e.detail) for e in core.audit.recent(20))
    assert secret_value not in outcome.message


def test_audit_masks_secret_looking_config_values_even_when_they_are_allowed(core) -> None:  # type: ignore[no-untyped-def]
    from bot.store.audit import AuditRecord

    core.audit.append(AuditRecord(actor="U0OPS01", action="config set", outcome="ok",
                                  arguments='{"pairs": {"API_TOKEN": "tok-123456789", "LOG_LEVEL": "DEBUG"}}'))
    core.audit.append(AuditRecord(actor="U0OPS01", action="config set", outcome="ok",
                                  arguments="{'pairs': \"{'DB_PASSWORD': 'x-legacy-pw'}\"}"))
    shown = run_as(core, "viewer", "audit")
    text = json.dumps([p.rows for p in shown.result.parts if hasattr(p, "rows")])
    assert "tok-123456789" not in text and "x-legacy-pw" not in text and "DEBUG" in text


def test_cleanup_evicted_stays_in_its_namespace(core, kube) -> None:  # type: ignore[no-untyped-def]
    def evicted(ns: str) -> list:  # type: ignore[type-arg]
        return [p for p in kube.list("Pod", ns) if p.get("status", {}).get("reason") == "Evicted"]

    assert evicted(NS) and evicted("kube-system")
    outcome = run_as(core, "operator", "cleanup evicted")
    assert outcome.kind is OutcomeKind.OK
    assert not evicted(NS)
    assert evicted("kube-system")  # the runbook's command would have deleted this one too
    assert all("kube-system" not in r.path for r in kube.requests if r.method == "DELETE")


@pytest.mark.parametrize("command", ["bluegreen switch", "set-image aia-api-blue gcr.io/a-467519/aia-system:v1.5.0",
                                     "rollback aia-api-blue", "isolate aia-api-blue", "maintenance on",
                                     "scale aia-api-blue 0", "bluegreen cleanup", "bluegreen rollback"])
def test_destructive_procedures_only_request(core, kube, command: str) -> None:  # type: ignore[no-untyped-def]
    kube.requests.clear()
    outcome = run_as(core, "operator", command)
    assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED, outcome.message
    writes = [r for r in kube.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")]
    assert writes and all(r.query.get("dryRun") == "All" for r in writes)


def test_bluegreen_deploy_recreates_a_cleaned_up_idle_colour(core, kube) -> None:  # type: ignore[no-untyped-def]
    kube.delete("Deployment", "aia-api-green", NS)
    image = "gcr.io/a-467519/aia-system:v1.5.0"
    outcome = run_as(core, "operator", f"bluegreen deploy {image}")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    green = deployment(kube, "aia-api-green")
    assert green["spec"]["template"]["metadata"]["labels"]["version"] == "green"
    assert green["spec"]["selector"]["matchLabels"]["version"] == "green"
    assert green["spec"]["template"]["spec"]["containers"][0]["image"].startswith(image + "@sha256:")
    assert kube.get("Service", "aia-api", NS)["spec"]["selector"]["version"] == "blue"
