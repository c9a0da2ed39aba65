"""`/aia db ...` end to end: signed HTTP into `aia-bot serve`, the local Slack, Kubernetes and Cloud SQL
Admin (gRPC) servers, one PostgreSQL. What happened is checked at the Cloud SQL server."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql
from tests.harness.approvals import APPROVER, APPROVER_2, OPS, TWIN, Stack, approval_stack

pytestmark = pytest.mark.e2e
INSTANCE = "mas-system-postgres"
VIEWER = "U0VIEW1"


def cloudsql_env(server: FakeCloudSqlServer, **extra: str) -> dict[str, str]:
    return {"CLOUDSQL_EMULATOR_HOST": server.host, "CLOUDSQL_POLL_SECONDS": "0.3",
            "CLOUDSQL_TIMEOUT_SECONDS": "2", "CLOUDSQL_OPERATION_LEASE_SECONDS": "3", **extra}


@pytest.fixture(scope="module")
def cloudsql() -> Iterator[FakeCloudSqlServer]:
    server = FakeCloudSqlServer(operation_seconds=1.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, cloudsql: FakeCloudSqlServer,
           prometheus) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with approval_stack(tmp_path_factory.mktemp("db"), **cloudsql_env(cloudsql, PROMETHEUS_URL=prometheus.url)) as s:
        yield s


@pytest.fixture
def stack(shared: Stack, cloudsql: FakeCloudSqlServer) -> Stack:
    shared.fresh()
    cloudsql.reset()
    cloudsql.operation_seconds = 1.0
    seed_cloudsql(cloudsql)
    with psycopg.connect(shared.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM cloud_operations")
    return shared


def posted(stack: Stack, needle: str, timeout: float = 15) -> dict:  # type: ignore[type-arg]
    """The channel message (as it stands now) whose blocks contain ``needle``."""
    found = stack.slack.wait_for(lambda: [m for m in stack.slack.messages()
                                          if needle in json.dumps(m.blocks) or needle in m.text], timeout=timeout)
    message = found[-1]
    return {"ts": message.ts, "thread_ts": message.thread_ts, "blocks": json.dumps(message.blocks),
            "text": message.text, "edited": message.edited}


def successful_backups(server: FakeCloudSqlServer) -> list[int]:
    return [b.id for b in sorted(server.backups(INSTANCE), key=lambda b: b.id, reverse=True)
            if b.status.name == "SUCCESSFUL"]


def cloud_rows(stack: Stack) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(stack.database_url) as conn:
        return list(conn.execute("SELECT id, kind, status, phase, progress_ts, detail FROM cloud_operations"))


# -- reads -----------------------------------------------------------------------------------

def test_status_shows_instance_backups_pitr_and_pool_metrics(stack: Stack) -> None:
    stack.bot.slash("db status", VIEWER, stack.slack.new_response_url())
    status = posted(stack, "Cloud SQL · mas-system-postgres")["blocks"]
    for expected in ("RUNNABLE", "POSTGRES_15", "REGIONAL", "daily at 03:00 UTC", "logs kept 7 days",
                     "Last successful backup", "no operation running", "Connection pool in use"):
        assert expected in status, expected
    assert "*Connection pool in use*\\n7" in status


def test_backups_lists_ids_status_and_errors(stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    stack.bot.slash("db backups 5", VIEWER, stack.slack.new_response_url())
    listing = posted(stack, "Backups of mas-system-postgres")["blocks"]
    for backup in cloudsql.backups(INSTANCE):
        assert str(backup.id) in listing
    assert "FAILED" in listing and "An internal error has occurred." in listing


# -- write: on-demand backup ------------------------------------------------------------------

def test_backup_progress_is_updated_in_place_until_done(stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    stack.bot.slash('db backup --description "before the migration"', OPS, stack.slack.new_response_url())
    started = posted(stack, "Backup of mas-system-postgres started")
    inserts = cloudsql.calls_to("SqlBackupRunsService/Insert")
    assert len(inserts) == 1 and inserts[0].detail["body"]["description"] == "before the migration"
    new_id = max(b.id for b in cloudsql.backups(INSTANCE))
    done = posted(stack, f"Backup `{new_id}` of `mas-system-postgres` is done")
    assert done["thread_ts"] == started["ts"] and done["edited"]  # one reply, edited in place
    progress = [m for m in stack.slack.messages() if m.thread_ts == started["ts"] and m.ts != started["ts"]]
    assert len(progress) == 1
    assert any(c.args.get("ts") == done["ts"] for c in stack.slack.calls_to("chat.update"))
    assert new_id in successful_backups(cloudsql)
    assert [(r[1], r[2]) for r in cloud_rows(stack)] == [("backup", "done")]
    assert ("db backup", "done") in [(a, o) for _, a, o, _ in stack.audit_rows()]


def test_viewer_cannot_back_up_or_restore(stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    assert "needs the operator role" in stack.slash_answer(VIEWER, "db backup")
    assert "needs the operator role" in stack.slash_answer(VIEWER, f"db restore {successful_backups(cloudsql)[0]}")
    assert not cloudsql.calls_to("SqlBackupRunsService/Insert")
    assert ("db backup", "refused") in [(a, o) for _, a, o, _ in stack.audit_rows()]


def test_permission_denied_names_the_iam_permission(stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    cloudsql.deny.add("cloudsql.backupRuns.create")
    answer = stack.slash_answer(OPS, "db backup")
    assert "`cloudsql.backupRuns.create`" in answer and "service account" in answer
    assert not cloud_rows(stack)


def test_slow_api_answers_with_a_timeout_and_the_bot_stays_responsive(stack: Stack,
                                                                     cloudsql: FakeCloudSqlServer) -> None:
    cloudsql.delay_seconds = 4
    started = time.monotonic()
    answer = stack.slash_answer(OPS, "db status")
    assert "did not answer within 2s" in answer and time.monotonic() - started < 10
    cloudsql.delay_seconds = 0
    assert stack.bot.http.get("/healthz").status_code == 200


# -- destructive: restore through the two-person rule -------------------------------------------

def test_restore_needs_two_approvers_takes_a_safety_backup_first_then_restores(
        stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    target = successful_backups(cloudsql)[1]
    card = stack.request_change(OPS, f"db restore {target}")
    card_text = posted(stack, "Approval needed: /aia db restore")["blocks"]
    assert "is lost" in card_text and "on-demand backup first" in card_text and str(target) in card_text
    assert "Approval 1 of 2" in stack.response_text(stack.click(APPROVER, "approve", card))
    assert stack.status(card.request_id) == "pending" and not cloudsql.calls_to("SqlBackupRunsService/Insert")
    assert "already approved" in stack.response_text(stack.click(APPROVER, "approve", card))
    stack.click(APPROVER_2, "approve", card)
    stack.wait_status(card.request_id, "executed", timeout=30)
    deadline = time.monotonic() + 20
    while cloudsql.restored != [(INSTANCE, target)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cloudsql.restored == [(INSTANCE, target)]
    # The safety backup came first, and exists, and the thread names it.
    methods = [c.method for c in cloudsql.calls if c.method in ("SqlBackupRunsService/Insert",
                                                                 "SqlInstancesService/RestoreBackup")]
    assert methods == ["SqlBackupRunsService/Insert", "SqlInstancesService/RestoreBackup"]
    safety = max(b.id for b in cloudsql.backups(INSTANCE))
    assert safety in successful_backups(cloudsql)
    final = posted(stack, f"is restored from backup `{target}`", timeout=20)
    assert final["thread_ts"] == card.ts and f"/aia db restore {safety}" in final["blocks"]
    assert [(r[1], r[2]) for r in cloud_rows(stack)] == [("restore", "done")]


def test_restore_self_viewer_and_twin_account_approvals_are_refused(stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    card = stack.request_change(OPS, f"db restore {successful_backups(cloudsql)[0]}")
    assert "cannot decide your own request" in stack.response_text(stack.click(OPS, "approve", card))
    assert "Only approvers" in stack.response_text(stack.click(VIEWER, "approve", card))
    # A second Slack account of the requester (same profile email) is not a second person.
    assert "profile email is the requester's" in stack.response_text(stack.click(TWIN, "approve", card))
    assert stack.status(card.request_id) == "pending"
    assert not cloudsql.calls_to("SqlBackupRunsService/Insert") and not cloudsql.restored


@pytest.mark.parametrize("change", ["new backup", "settings changed", "backup deleted"])
def test_restore_goes_stale_when_the_target_changed_after_the_request(
        stack: Stack, cloudsql: FakeCloudSqlServer, change: str) -> None:
    target = successful_backups(cloudsql)[1]
    card = stack.request_change(OPS, f"db restore {target}")
    if change == "new backup":
        cloudsql.add_backup(INSTANCE, hours_ago=0.01)
    elif change == "settings changed":
        cloudsql.change_settings(INSTANCE, tier="db-custom-4-15360")
    else:
        run = next(b for b in cloudsql._backups[INSTANCE] if b.id == target)  # noqa: SLF001 - test knob
        run.status = run.status.__class__.DELETED
    stack.click(APPROVER, "approve", card)
    stack.click(APPROVER_2, "approve", card)
    stack.wait_status(card.request_id, "stale", timeout=30)
    assert not cloudsql.calls_to("SqlBackupRunsService/Insert") and not cloudsql.restored


def test_restore_bad_inputs_get_clear_answers_and_change_nothing(stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    newest = successful_backups(cloudsql)[0]
    unknown = stack.slash_answer(OPS, "db restore 12345")
    assert "has no backup `12345`" in unknown and str(newest) in unknown  # lists the recent ones
    failed = next(b.id for b in cloudsql.backups(INSTANCE) if b.status.name == "FAILED")
    assert "is FAILED, not SUCCESSFUL" in stack.slash_answer(OPS, f"db restore {failed}")
    assert "a backup id is the number" in stack.slash_answer(OPS, "db restore latest")
    cloudsql.start_foreign_operation(INSTANCE, seconds=30)
    assert "is busy: UPDATE" in stack.slash_answer(OPS, f"db restore {newest}")
    cloudsql.reset()
    seed_cloudsql(cloudsql)
    cloudsql.set_state(INSTANCE, "MAINTENANCE")
    assert "is MAINTENANCE, not RUNNABLE" in stack.slash_answer(OPS, f"db restore {successful_backups(cloudsql)[0]}")
    assert not [m for m in stack.slack.messages() if "Approval needed" in json.dumps(m.blocks)]
    assert not cloudsql.calls_to("SqlBackupRunsService/Insert")
    outcomes = [(a, o) for _, a, o, _ in stack.audit_rows()]
    assert outcomes.count(("db restore", "user_error")) == 4  # the typo is audited as unparsed
    assert ("(unparsed)", "user_error") in outcomes


# -- write: point-in-time clone ---------------------------------------------------------------------

def test_clone_at_a_moment_creates_a_new_instance_and_leaves_production_alone(
        stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    stack.bot.slash("db clone --at '1h ago' --name aia-before-bug", OPS, stack.slack.new_response_url())
    posted(stack, "`aia-before-bug` is a new instance", timeout=20)
    assert cloudsql.instance("aia-before-bug").state.name == "RUNNABLE"
    assert cloudsql.instance(INSTANCE).state.name == "RUNNABLE" and not cloudsql.restored


def test_clone_refused_outside_the_window_or_without_pitr(stack: Stack, cloudsql: FakeCloudSqlServer) -> None:
    assert "outside the retained window" in stack.slash_answer(OPS, "db clone --at 2020-01-01T00:00:00Z")
    assert "give a time as" in stack.slash_answer(OPS, "db clone --at yesterday-ish")
    assert "a Cloud SQL instance name" in stack.slash_answer(OPS, "db clone --at '1h ago' --name Bad_Name")
    cloudsql.set_pitr(INSTANCE, False)
    assert "Point-in-time recovery is off" in stack.slash_answer(OPS, "db clone --at '1h ago'")
    assert not cloudsql.calls_to("SqlInstancesService/Clone")


# -- a restarted bot resumes following ------------------------------------------------------------------

def test_a_restarted_bot_resumes_following_the_operation_in_the_same_message(
        stack: Stack, tmp_path: Path, cloudsql: FakeCloudSqlServer, prometheus) -> None:  # type: ignore[no-untyped-def]
    """The shared bot is the one that crashes; the one started in its place serves the later tests."""
    cloudsql.operation_seconds = 8
    stack.bot.slash("db backup", OPS, stack.slack.new_response_url())
    started = posted(stack, "Backup of mas-system-postgres started")

    def progress_recorded() -> list:  # type: ignore[type-arg]
        return [r for r in cloud_rows(stack) if r[4]]

    row_id, *_, progress_ts, _ = stack.slack.wait_for(progress_recorded)[0]
    victim = stack.bots.pop(0)
    assert victim.process is not None
    os.kill(victim.process.pid, signal.SIGKILL)  # a crash: no goodbye, the lease just runs out
    victim.process.wait(5)
    assert [r[2] for r in cloud_rows(stack)] == ["running"]
    stack.start_bot(tmp_path, **cloudsql_env(cloudsql, PROMETHEUS_URL=prometheus.url))
    done = posted(stack, "is done", timeout=30)
    assert done["ts"] == progress_ts and done["thread_ts"] == started["ts"]
    assert "resumed" in done["blocks"]
    assert [r[2] for r in cloud_rows(stack)] == ["done"]
    replies = [m for m in stack.slack.messages() if m.thread_ts == started["ts"] and m.ts != started["ts"]]
    assert len(replies) == 1  # the same progress message, not a second one
    assert row_id


def test_a_graceful_stop_hands_the_operation_over_at_once(tmp_path: Path, cloudsql: FakeCloudSqlServer) -> None:
    cloudsql.reset()
    seed_cloudsql(cloudsql)
    cloudsql.operation_seconds = 10
    # A long lease: only the hand-over on shutdown, not the lease running out, lets the next bot resume quickly.
    env = cloudsql_env(cloudsql, CLOUDSQL_OPERATION_LEASE_SECONDS="120")
    with approval_stack(tmp_path, **env) as stack:
        stack.bot.slash("db backup", OPS, stack.slack.new_response_url())
        started = posted(stack, "Backup of mas-system-postgres started")
        stack.slack.wait_for(lambda: [r for r in cloud_rows(stack) if r[4]])
        assert stack.bot.process is not None
        begun = time.monotonic()
        stack.bot.process.terminate()
        stack.bot.process.wait(15)
        assert time.monotonic() - begun < 8, "the follower held the shutdown"
        with psycopg.connect(stack.database_url) as conn:
            (lease_until, status), = conn.execute("SELECT lease_until, status FROM cloud_operations").fetchall()
            (now,), = conn.execute("SELECT now()").fetchall()
        assert status == "running" and lease_until < now
        stack.start_bot(tmp_path, **env)
        done = posted(stack, "is done", timeout=30)
        assert done["thread_ts"] == started["ts"] and "resumed" in done["blocks"]
    cloudsql.operation_seconds = 1.0
