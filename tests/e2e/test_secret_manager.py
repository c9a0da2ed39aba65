"""Secret Manager procedures end to end: signed HTTP into `aia-bot serve` on PostgreSQL, the official
Secret Manager client against the gRPC stand-in, the sandbox cluster and its External Secrets
Operator, the local Slack. Rotation goes through the two-person rule."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from tests.harness.approvals import APPROVER, OPS
from tests.harness.google_cloud import ROTATABLE, CloudStack

VIEWER = "U0VIEW1"
NS = "aia-production"


@pytest.fixture
def cloud(cloud_shared: CloudStack) -> CloudStack:
    cloud_shared.reset()
    return cloud_shared





def test_rotation_two_people_generated_value_synced_restarted_and_never_shown(cloud: CloudStack) -> None:
    stack = cloud.stack
    card = stack.request_change(OPS, f"secrets rotate {ROTATABLE}")
    card_text = json.dumps(stack.slack.calls_to("chat.postMessage")[-1].args)
    assert "add version 3" in card_text and "rollout restart deployment/aia-api-blue" in card_text
    assert cloud.secret_manager.latest(ROTATABLE) == 2 and not cloud.restarts()

    stack.click(APPROVER, "approve", card)
    stack.wait_status(card.request_id, "executed", timeout=20)
    thread = cloud.wait_thread(card, "successfully rolled out")
    assert "Added version 3" in thread and "Synced" in thread and "Restarted `aia-api-blue`" in thread
    assert len(cloud.restarts()) == 1

    value = cloud.secret_manager.value(ROTATABLE)  # read back from the stand-in: only the test can
    assert len(value) == 64 and cloud.secret_manager.latest(ROTATABLE) == 3
    live = stack.kube.get("Secret", "aia-secrets", NS)["data"]["API_KEY"]
    assert base64.b64decode(live) == value
    recorded = cloud.everything_recorded()
    assert value.decode() not in recorded and live not in recorded
    outcomes = [(a, o) for _, a, o, _ in stack.audit_rows()]
    for step in ("requested", "executed", "version_added", "restarted"):
        assert ("secrets rotate", step) in outcomes, outcomes


def test_self_approval_of_a_rotation_is_refused(cloud: CloudStack) -> None:
    card = cloud.stack.request_change(OPS, f"secrets rotate {ROTATABLE}")
    assert "cannot decide your own request" in cloud.stack.response_text(cloud.stack.click(OPS, "approve", card))
    assert cloud.stack.status(card.request_id) == "pending"
    assert cloud.secret_manager.count("AddSecretVersion") == 0


def test_version_added_by_hand_before_execution_makes_the_rotation_stale(cloud: CloudStack) -> None:
    card = cloud.stack.request_change(OPS, f"secrets rotate {ROTATABLE}")
    cloud.secret_manager.put(ROTATABLE, b"old-1", b"old-2", b"someone ran gcloud secrets versions add")
    cloud.stack.click(APPROVER, "approve", card)
    cloud.stack.wait_status(card.request_id, "stale")
    assert cloud.secret_manager.count("AddSecretVersion") == 0 and not cloud.restarts()
    assert "latest" in cloud.wait_thread(card, "changed")


def test_rotation_stops_when_the_external_secret_never_syncs(cloud: CloudStack) -> None:
    cloud.operator.syncing = False
    card = cloud.stack.request_change(OPS, f"secrets rotate {ROTATABLE}")
    cloud.stack.click(APPROVER, "approve", card)
    thread = cloud.wait_thread(card, "never synced", timeout=30)
    assert "NOT restarted" in thread and "Added version 3" in thread
    assert not cloud.restarts()
    assert ("secrets rotate", "not_synced") in [(a, o) for _, a, o, _ in cloud.stack.audit_rows()]


def test_sync_forces_a_refresh_and_reports_it(cloud: CloudStack) -> None:
    url = cloud.stack.slack.new_response_url()
    cloud.stack.bot.slash("secrets sync", OPS, url)
    cloud.stack.slack.wait_for(lambda: [m for m in cloud.stack.slack.messages()
                                        if "aia-secrets: synced" in m.text], timeout=20)
    es = cloud.stack.kube.get("ExternalSecret", "aia-secrets", NS)
    assert es["metadata"]["annotations"]["force-sync"].isdigit() and cloud.operator.syncs == 1


def test_viewer_reads_versions_but_cannot_sync_or_rotate(cloud: CloudStack) -> None:
    cloud.stack.bot.slash(f"secrets versions {ROTATABLE}", VIEWER, cloud.stack.slack.new_response_url())
    posted = cloud.stack.slack.wait_for(lambda: [m for m in cloud.stack.slack.messages()
                                                 if "Secret Manager versions of aia-api-key" in m.text])
    assert "ENABLED" in json.dumps(posted[0].blocks) and "sandbox-api-key" not in json.dumps(posted[0].blocks)
    assert "needs the operator role" in cloud.stack.slash_answer(VIEWER, "secrets sync")
    assert "needs the operator role" in cloud.stack.slash_answer(VIEWER, f"secrets rotate {ROTATABLE}")
    assert cloud.operator.syncs == 0 and cloud.secret_manager.count("AddSecretVersion") == 0


@pytest.mark.parametrize(("text", "fragment"), [
    ("secrets rotate aia-database-url", "holds the database password"),
    ("secrets rotate aia-api-kee", "not a secret the bot may regenerate"),
    ("secrets versions aia-api-kee", "no secret `aia-api-kee`"),
    ("secrets versions aia/api-key", "secret id"),
    ("secrets sync no-such-es", "does not exist"),
])
def test_bad_input_is_answered_and_changes_nothing(cloud: CloudStack, text: str, fragment: str) -> None:
    answer = cloud.stack.slash_answer(OPS, text)
    assert fragment in answer, answer
    assert cloud.secret_manager.count("AddSecretVersion") == 0 and not cloud.stack.writes()
    assert not [c for c in cloud.stack.slack.calls_to("chat.postMessage") if "Approval needed" in json.dumps(c.args)]


def test_unsigned_rotation_request_is_rejected(cloud: CloudStack) -> None:
    body = urllib.parse.urlencode({"command": "/aia", "text": f"secrets rotate {ROTATABLE}", "user_id": OPS,
                                   "team_id": "T0AIA", "channel_id": "C0ALERTS",
                                   "response_url": cloud.stack.slack.new_response_url()})
    headers = cloud.stack.bot.signed_headers(body, secret="not-the-signing-secret")
    response = cloud.stack.bot.http.post("/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    assert not cloud.stack.slack.calls_to("chat.postMessage")


def test_secret_manager_unreachable_is_said_plainly(cloud: CloudStack, tmp_path: Path) -> None:
    import grpc

    cloud.secret_manager.fail_next(grpc.StatusCode.UNAVAILABLE, times=1000)
    try:
        answer = cloud.stack.slash_answer(OPS, f"secrets rotate {ROTATABLE}")
    finally:
        cloud.secret_manager.reset()
    assert "Secret Manager" in answer and ("unreachable" in answer or "did not answer" in answer), answer
    assert not [c for c in cloud.stack.slack.calls_to("chat.postMessage") if "Approval needed" in json.dumps(c.args)]
