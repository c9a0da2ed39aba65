"""`/aia secrets versions|sync|rotate` through the dispatcher and the approval service, against the
Secret Manager stand-in, the sandbox cluster and its External Secrets Operator."""

from __future__ import annotations

import base64

import pytest

from bot.context import Caller
from bot.core import build_core
from bot.results import Table
from bot.service import OutcomeKind
from bot.settings import load_settings
from sandbox.external_secrets import ExternalSecretsController
from tests.bot.procedures.test_changes import approve, finish
from tests.harness.calls import run_as
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID

NS = "aia-production"


@pytest.fixture
def operator(kube, secret_manager):  # type: ignore[no-untyped-def]
    controller = ExternalSecretsController(kube, secret_manager, interval=0.05).start()
    yield controller
    controller.stop()


@pytest.fixture
def sm_core(bot_env, roles, secret_manager, operator):  # type: ignore[no-untyped-def]
    env = {**bot_env, "SECRETMANAGER_EMULATOR_HOST": secret_manager.address, "AIA_ROTATABLE_SECRETS": "aia-api-key",
           "AIA_SECRET_SYNC_TIMEOUT_SECONDS": "5", "AIA_ROLLOUT_POLL_SECONDS": "0.2"}
    built = build_core(load_settings(env), roles)
    yield built
    built.engine.dispose()


def _restarted(kube) -> bool:  # type: ignore[no-untyped-def]
    template = kube.get("Deployment", "aia-api-blue", NS)["spec"]["template"]
    return "kubectl.kubernetes.io/restartedAt" in (template["metadata"].get("annotations") or {})


def test_versions_show_state_and_time_never_a_value(sm_core, secret_manager) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(sm_core, "viewer", "secrets versions aia-api-key")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    table = next(p for p in outcome.result.parts if isinstance(p, Table))
    assert [r[:2] for r in table.rows] == [["2", "ENABLED"], ["1", "ENABLED"]]
    assert "ExternalSecret `aia-secrets` as `API_KEY`" in str(outcome.result.parts)
    assert "sandbox-api-key" not in str(outcome.result) and secret_manager.count("AccessSecretVersion") == 0


def test_unknown_secret_lists_the_ones_in_use(sm_core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(sm_core, "viewer", "secrets versions aia-api-kee")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "no secret `aia-api-kee`" in outcome.message and "`aia-api-key`" in outcome.message
    bad = run_as(sm_core, "viewer", "secrets versions ../etc")
    assert bad.kind is OutcomeKind.USER_ERROR and "secret id" in bad.message


def test_sync_forces_a_refresh_and_follows_it(sm_core, kube, secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.put("aia-api-key", b"only-version")
    outcome = run_as(sm_core, "operator", "secrets sync")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    es = kube.get("ExternalSecret", "aia-secrets", NS)
    assert es["metadata"]["annotations"]["force-sync"].isdigit()
    steps = finish(outcome.result)
    assert steps[-1].title == "ExternalSecret aia-secrets: synced"
    assert base64.b64decode(kube.get("Secret", "aia-secrets", NS)["data"]["API_KEY"]) == b"only-version"
    assert not _restarted(kube)  # a sync alone restarts nothing


def test_sync_that_never_happens_says_so(sm_core, kube, operator) -> None:  # type: ignore[no-untyped-def]
    operator.syncing = False
    outcome = run_as(sm_core, "operator", "secrets sync aia-secrets")
    last = finish(outcome.result)[-1]
    assert last.status.value == "critical" and "never synced" in last.title


def test_sync_of_an_unknown_external_secret_names_the_existing_ones(sm_core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(sm_core, "operator", "secrets sync aia-secretz")
    assert outcome.kind is OutcomeKind.USER_ERROR and "`aia-secrets`" in outcome.message


def test_viewer_may_not_sync_or_rotate(sm_core, kube, secret_manager) -> None:  # type: ignore[no-untyped-def]
    assert run_as(sm_core, "viewer", "secrets sync").kind is OutcomeKind.REFUSED
    assert run_as(sm_core, "viewer", "secrets rotate aia-api-key").kind is OutcomeKind.REFUSED
    assert "force-sync" not in (kube.get("ExternalSecret", "aia-secrets", NS)["metadata"].get("annotations") or {})
    assert secret_manager.latest("aia-api-key") == 2


def test_rotate_adds_a_generated_version_syncs_then_restarts(sm_core, kube, secret_manager) -> None:  # type: ignore[no-untyped-def]
    result = approve(sm_core, "secrets rotate aia-api-key")
    assert secret_manager.latest("aia-api-key") == 3
    value = secret_manager.value("aia-api-key")
    assert len(value) == 64 and value not in (b"sandbox-api-key-v1", b"sandbox-api-key-v2")
    steps = finish(result)
    text = str(steps[-1])
    assert "Added version 3" in text and "Synced" in text and "Restarted `aia-api-blue`" in text
    assert steps[-1].status.value == "ok"
    assert base64.b64decode(kube.get("Secret", "aia-secrets", NS)["data"]["API_KEY"]) == value
    assert _restarted(kube)
    assert value.decode() not in repr(steps) + repr(result)


def test_rotate_stops_without_restart_when_the_external_secret_never_syncs(sm_core, kube, secret_manager, operator) -> None:  # type: ignore[no-untyped-def]
    operator.syncing = False
    result = approve(sm_core, "secrets rotate aia-api-key")
    last = finish(result)[-1]
    assert last.status.value == "critical" and "never synced" in last.title
    assert "NOT restarted" in str(last)
    assert secret_manager.latest("aia-api-key") == 3 and not _restarted(kube)


def test_rotate_stops_when_the_sync_fails(sm_core, kube, operator) -> None:  # type: ignore[no-untyped-def]
    operator.unreadable.add("aia-api-key")
    last = finish(approve(sm_core, "secrets rotate aia-api-key"))[-1]
    assert "SecretSyncedError" in str(last) and not _restarted(kube)


@pytest.mark.parametrize(("command", "fragment"), [
    ("secrets rotate aia-database-url", "holds the database password"),
    ("secrets rotate aia-redis-url", "AIA_ROTATABLE_SECRETS"),
    ("secrets rotate aia-api-kee", "AIA_ROTATABLE_SECRETS"),
    ("secrets rotate", "Usage"),
])
def test_rotate_refusals_change_nothing(sm_core, kube, secret_manager, command: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(sm_core, "operator", command)
    assert outcome.kind is OutcomeKind.USER_ERROR, outcome.message
    assert fragment in outcome.message + (outcome.usage or "")
    assert secret_manager.count("AddSecretVersion") == 0 and not _restarted(kube)


def test_rotate_without_version_adder_permission_names_it(bot_env, roles, secret_manager, kube) -> None:  # type: ignore[no-untyped-def]
    secret_manager.deny("secretmanager.versions.add", "aia-api-key")
    built = build_core(load_settings({**bot_env, "SECRETMANAGER_EMULATOR_HOST": secret_manager.address,
                                      "AIA_ROTATABLE_SECRETS": "aia-api-key"}), roles)
    try:
        outcome = run_as(built, "operator", "secrets rotate aia-api-key")
        assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED
        built.approvals.attach_card(outcome.approval.id, CHANNEL_ID, "1700000000.000300")
        decision = built.approvals.decide(outcome.approval.id, "approve",
                                          Caller(SLACK_USERS["approver"].user_id, TEAM_ID, CHANNEL_ID),
                                          "1700000000.000300")
        assert decision.view.status == "failed"
        assert "secretmanager.versions.add" in (decision.view.result or "")
        assert secret_manager.latest("aia-api-key") == 2 and not _restarted(kube)
    finally:
        built.engine.dispose()
