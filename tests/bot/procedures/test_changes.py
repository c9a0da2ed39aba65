"""Every write and destructive procedure, checked at the Kubernetes server.

Destructive ones go through the real approval service: request, approve by a
second person, execute. The official client talks to the local API server.
"""

from __future__ import annotations

import base64

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


def test_bluegreen_deploy_validate_switch_rollback_cleanup(core, kube) -> None:  # type: ignore[no-untyped-def]
    image = "gcr.io/a-467519/aia-system:v1.6.0"
    deploy = run_as(core, "operator", f"bluegreen deploy {image}")
    assert deploy.kind is OutcomeKind.OK, deploy.message
    assert deployment(kube, "aia-api-green")["spec"]["template"]["spec"]["containers"][0]["image"] == image
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


def test_set_image(core, kube) -> None:  # type: ignore[no-untyped-def]
    approve(core, "set-image aia-api-blue api=gcr.io/a-467519/aia-system:v1.5.1")
    assert deployment(kube, "aia-api-blue")["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.5.1")


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


def test_cleanup_evicted_stays_in_its_namespace(core, kube) -> None:  # type: ignore[no-untyped-def]
    def evicted(ns: str) -> list:  # type: ignore[type-arg]
        return [p for p in kube.list("Pod", ns) if p.get("status", {}).get("reason") == "Evicted"]

    assert evicted(NS) and evicted("kube-system")
    outcome = run_as(core, "operator", "cleanup evicted")
    assert outcome.kind is OutcomeKind.OK
    assert not evicted(NS)
    assert evicted("kube-system")  # the runbook's command would have deleted this one too
    assert all("kube-system" not in r.path for r in kube.requests if r.method == "DELETE")


@pytest.mark.parametrize("command", ["bluegreen switch", "set-image aia-api-blue gcr.io/a-467519/aia-system:v2",
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
    image = "gcr.io/a-467519/aia-system:v1.7.0"
    outcome = run_as(core, "operator", f"bluegreen deploy {image}")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    green = deployment(kube, "aia-api-green")
    assert green["spec"]["template"]["metadata"]["labels"]["version"] == "green"
    assert green["spec"]["selector"]["matchLabels"]["version"] == "green"
    assert green["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert kube.get("Service", "aia-api", NS)["spec"]["selector"]["version"] == "blue"
