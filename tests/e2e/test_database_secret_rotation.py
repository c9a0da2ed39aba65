"""`/aia secrets rotate aia-database-url` end to end: signed HTTP into `aia-bot serve`, the Secret Manager
and Cloud SQL Admin gRPC stand-ins driven by the official clients, the sandbox cluster and its External
Secrets Operator, the local Slack, through the two-person rule. What happened is checked at the stand-ins:
the password the Cloud SQL user has is the one in the new secret version, and it is nowhere else."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator

import pytest

from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql
from tests.harness.approvals import APPROVER, OPS
from tests.harness.google_cloud import CloudStack, cloud_stack

pytestmark = pytest.mark.e2e
SECRET = "aia-database-url"
INSTANCE = "mas-system-postgres"
USER = "aia_app"
TEMPLATE = f"postgresql://{USER}:{{password}}@10.20.0.3:5432/aia"
VIEWER = "U0VIEW1"
NS = "aia-production"
UPDATE = "SqlUsersService/Update"


@pytest.fixture(scope="module")
def cloudsql() -> Iterator[FakeCloudSqlServer]:
    server = FakeCloudSqlServer(operation_seconds=0.5).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, cloudsql: FakeCloudSqlServer) -> Iterator[CloudStack]:
    env = {"CLOUDSQL_EMULATOR_HOST": cloudsql.host, "CLOUDSQL_POLL_SECONDS": "0.2", "CLOUDSQL_TIMEOUT_SECONDS": "3",
           "CLOUDSQL_OPERATION_TIMEOUT_SECONDS": "10",
           "AIA_DATABASE_URL_TEMPLATES": f"{SECRET}={TEMPLATE}"}
    with cloud_stack(tmp_path_factory.mktemp("dbsecret"), **env) as built:
        yield built


@pytest.fixture
def cloud(shared: CloudStack, cloudsql: FakeCloudSqlServer) -> CloudStack:
    shared.reset()
    cloudsql.reset()
    cloudsql.operation_seconds = 0.5
    seed_cloudsql(cloudsql)
    return shared





def _outcomes(cloud: CloudStack) -> list[tuple[str, str]]:
    return [(a, o) for _, a, o, _ in cloud.stack.audit_rows()]


def test_rotation_sets_the_same_new_password_on_the_user_and_in_the_secret_then_restarts(
        cloud: CloudStack, cloudsql: FakeCloudSqlServer) -> None:
    stack = cloud.stack
    card = stack.request_change(OPS, f"secrets rotate {SECRET}")
    card_text = json.dumps(stack.slack.calls_to("chat.postMessage")[-1].args, ensure_ascii=False)
    assert "add version 2" in card_text and f"for {USER}@10.20.0.3:5432/aia" in card_text, card_text
    assert "Cloud SQL user ˋaia_appˋ" in card_text  # the renderer's code quote inside a code block
    assert "rollout restart deployment/aia-api-blue" in card_text
    assert cloud.secret_manager.latest(SECRET) == 1 and not cloudsql.calls_to(UPDATE) and not cloud.restarts()

    stack.click(APPROVER, "approve", card)
    stack.wait_status(card.request_id, "executed", timeout=20)
    thread = cloud.wait_thread(card, "successfully rolled out")
    for step in ("1. Added version 2", "Synced", f"3. Set the new password on Cloud SQL user `{USER}`",
                 "4. Restarted `aia-api-blue`", "(`/aia restart aia-api-green`) before switching"):
        assert step in thread, step
    assert len(cloud.restarts()) == 1 and len(cloudsql.calls_to(UPDATE)) == 1

    url = cloud.secret_manager.value(SECRET).decode()  # read back from the stand-in: only the test can
    parsed = urllib.parse.urlsplit(url)
    assert (parsed.scheme, parsed.username, parsed.hostname, parsed.port, parsed.path) == \
        ("postgresql", USER, "10.20.0.3", 5432, "/aia")
    password = parsed.password
    assert password and len(password) == 43 and "sandbox-db-password" not in url
    assert cloudsql.password_of(INSTANCE, USER) == password
    assert cloudsql.password_of(INSTANCE, "postgres") is None  # only the template's user changed
    live = stack.kube.get("Secret", "aia-secrets", NS)["data"]["DATABASE_URL"]
    assert base64.b64decode(live).decode() == url

    recorded = cloud.everything_recorded()
    assert password not in recorded and live not in recorded and urllib.parse.quote(password) not in recorded
    for step in ("requested", "executed", "version_added", "password_set", "restarted"):
        assert ("secrets rotate", step) in _outcomes(cloud), _outcomes(cloud)


def test_self_approval_of_a_database_rotation_is_refused(cloud: CloudStack, cloudsql: FakeCloudSqlServer) -> None:
    card = cloud.stack.request_change(OPS, f"secrets rotate {SECRET}")
    assert "cannot decide your own request" in cloud.stack.response_text(cloud.stack.click(OPS, "approve", card))
    assert cloud.stack.status(card.request_id) == "pending"
    assert cloud.secret_manager.count("AddSecretVersion") == 0 and not cloudsql.calls_to(UPDATE)


def test_viewer_cannot_rotate_the_database_secret(cloud: CloudStack, cloudsql: FakeCloudSqlServer) -> None:
    assert "needs the operator role" in cloud.stack.slash_answer(VIEWER, f"secrets rotate {SECRET}")
    assert cloud.secret_manager.count("AddSecretVersion") == 0 and not cloudsql.calls_to(UPDATE)


@pytest.mark.parametrize("change", ["secret version added by hand", "password set by hand"])
def test_a_change_by_hand_before_the_approval_makes_the_rotation_stale(
        cloud: CloudStack, cloudsql: FakeCloudSqlServer, change: str) -> None:
    card = cloud.stack.request_change(OPS, f"secrets rotate {SECRET}")
    if change == "secret version added by hand":
        cloud.secret_manager.put(SECRET, b"postgresql://aia:old@10.20.0.3:5432/aia",
                                 b"postgresql://aia:someone-ran-gcloud@10.20.0.3:5432/aia")
    else:  # `gcloud sql users set-password` leaves an UPDATE_USER operation
        cloudsql.start_foreign_operation(INSTANCE, "UPDATE_USER", seconds=0.0)
    cloud.stack.click(APPROVER, "approve", card)
    cloud.stack.wait_status(card.request_id, "stale")
    assert cloud.secret_manager.count("AddSecretVersion") == 0 and not cloudsql.calls_to(UPDATE)
    assert not cloud.restarts()
    assert "changed" in cloud.wait_thread(card, "changed")


def test_external_secret_never_syncs_stops_before_the_database_password_changes(
        cloud: CloudStack, cloudsql: FakeCloudSqlServer) -> None:
    cloud.operator.syncing = False
    card = cloud.stack.request_change(OPS, f"secrets rotate {SECRET}")
    cloud.stack.click(APPROVER, "approve", card)
    thread = cloud.wait_thread(card, "never synced", timeout=30)
    assert "The database password was NOT changed" in thread and "NOT restarted" in thread, thread
    assert f"gcloud secrets versions disable projects/a-467519/secrets/{SECRET}/versions/2" in thread
    assert not cloudsql.calls_to(UPDATE) and cloudsql.password_of(INSTANCE, USER) is None
    assert not cloud.restarts() and cloud.secret_manager.latest(SECRET) == 2
    assert ("secrets rotate", "not_synced") in _outcomes(cloud)
    password = urllib.parse.urlsplit(cloud.secret_manager.value(SECRET).decode()).password
    assert password and password not in cloud.everything_recorded()


@pytest.mark.parametrize(("failure", "said"), [
    ("operation fails", "An internal error"),
    ("permission denied", "lacks the IAM permission `cloudsql.users.update`"),
])
def test_cloud_sql_failing_to_set_the_password_stops_without_restart(
        cloud: CloudStack, cloudsql: FakeCloudSqlServer, failure: str, said: str) -> None:
    card = cloud.stack.request_change(OPS, f"secrets rotate {SECRET}")
    if failure == "operation fails":
        cloudsql.fail_next["UPDATE_USER"] = "An internal error has occurred."
    else:
        cloudsql.deny.add("cloudsql.users.update")
    cloud.stack.click(APPROVER, "approve", card)
    thread = cloud.wait_thread(card, "Stopped.", timeout=30)
    assert "Cloud SQL did not set the password" in thread and said in thread, thread
    assert "The database password was NOT changed" in thread and f"{SECRET}/versions/2" in thread
    assert len(cloudsql.calls_to(UPDATE)) == 1 and cloudsql.password_of(INSTANCE, USER) is None
    assert not cloud.restarts()
    assert ("secrets rotate", "password_not_set") in _outcomes(cloud)


def test_cloud_sql_never_finishing_says_the_password_state_is_unknown_and_does_not_restart(
        cloud: CloudStack, cloudsql: FakeCloudSqlServer) -> None:
    cloudsql.operation_seconds = 120.0  # Users.Update accepted, never DONE within the bot's 10 s
    card = cloud.stack.request_change(OPS, f"secrets rotate {SECRET}")
    cloud.stack.click(APPROVER, "approve", card)
    thread = cloud.wait_thread(card, "UNKNOWN whether the database password changed", timeout=40)
    assert "/aia db operations" in thread and "UPDATE_USER" in thread and "NOT restarted" in thread
    assert len(cloudsql.calls_to(UPDATE)) == 1 and not cloud.restarts()
    assert ("secrets rotate", "password_unknown") in _outcomes(cloud)


def test_busy_instance_or_unknown_user_is_refused_before_anything_changes(
        cloud: CloudStack, cloudsql: FakeCloudSqlServer) -> None:
    cloudsql.start_foreign_operation(INSTANCE, "BACKUP_VOLUME", seconds=60)
    assert "is busy" in cloud.stack.slash_answer(OPS, f"secrets rotate {SECRET}")
    cloudsql.reset()
    cloudsql.add_instance(INSTANCE)
    cloudsql.add_user(INSTANCE, "postgres")
    answer = cloud.stack.slash_answer(OPS, f"secrets rotate {SECRET}")
    assert f"`{USER}`, which instance" in answer and "`postgres`" in answer, answer
    assert cloud.secret_manager.count("AddSecretVersion") == 0 and not cloudsql.calls_to(UPDATE)
    assert not [c for c in cloud.stack.slack.calls_to("chat.postMessage") if "Approval needed" in json.dumps(c.args)]


@pytest.mark.parametrize(("text", "fragment"), [
    ("secrets rotate aia-database-ur", "not a secret the bot may regenerate"),  # a tired typo
    ("secrets rotate aia-database-url extra", "Unexpected `extra`"),
])
def test_typos_are_answered_and_change_nothing(cloud: CloudStack, cloudsql: FakeCloudSqlServer,
                                               text: str, fragment: str) -> None:
    answer = cloud.stack.slash_answer(OPS, text)
    assert fragment in answer, answer
    assert cloud.secret_manager.count("AddSecretVersion") == 0 and not cloudsql.calls_to(UPDATE)
    assert not [c for c in cloud.stack.slack.calls_to("chat.postMessage") if "Approval needed" in json.dumps(c.args)]


def test_forged_database_rotation_request_is_rejected(cloud: CloudStack, cloudsql: FakeCloudSqlServer) -> None:
    body = urllib.parse.urlencode({"command": "/aia", "text": f"secrets rotate {SECRET}", "user_id": OPS,
                                   "team_id": "T0AIA", "channel_id": "C0ALERTS",
                                   "response_url": cloud.stack.slack.new_response_url()})
    headers = cloud.stack.bot.signed_headers(body, secret="not-the-signing-secret")
    assert cloud.stack.bot.http.post("/slack/events", content=body, headers=headers).status_code == 401
    assert not cloud.stack.slack.calls_to("chat.postMessage") and not cloudsql.calls
