"""The db procedures through the dispatcher and the approval service, against the local Cloud SQL server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.context import Caller
from bot.procedures.database import instance_name, point_in_time
from bot.results import Status
from bot.service import OutcomeKind
from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql
from tests.harness.calls import run_as
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID

INSTANCE = "mas-system-postgres"


@pytest.fixture
def cloudsql() -> Iterator[FakeCloudSqlServer]:
    server = FakeCloudSqlServer(operation_seconds=0.4).start()
    seed_cloudsql(server)
    yield server
    server.stop()


@pytest.fixture
def core(bot_env: dict[str, str], roles, cloudsql: FakeCloudSqlServer):  # type: ignore[no-untyped-def]
    from bot.core import build_core
    from bot.settings import load_settings

    env = {**bot_env, "CLOUDSQL_EMULATOR_HOST": cloudsql.host, "CLOUDSQL_POLL_SECONDS": "0.1",
           "CLOUDSQL_OPERATION_TIMEOUT_SECONDS": "10"}
    built = build_core(load_settings(env), roles)
    yield built
    built.engine.dispose()


def steps(result):  # type: ignore[no-untyped-def]
    return list(result.followup()) if result.followup else []


def approve_twice(core, command: str):  # type: ignore[no-untyped-def]
    """Request as the operator; approver and admin approve. The executed Result (or the decision)."""
    outcome = run_as(core, "operator", command)
    assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED, outcome.message
    request_id = outcome.approval.id
    core.approvals.attach_card(request_id, CHANNEL_ID, "1700000000.000100")
    decision = None
    for who in ("approver", "admin"):
        decision = core.approvals.decide(request_id, "approve", Caller(SLACK_USERS[who].user_id, TEAM_ID, CHANNEL_ID),
                                         "1700000000.000100")
        assert decision.accepted, decision.message
    return decision


def successful(server: FakeCloudSqlServer) -> list[int]:
    return sorted((b.id for b in server.backups(INSTANCE) if b.status.name == "SUCCESSFUL"), reverse=True)


def test_point_in_time_forms() -> None:
    assert point_in_time("2026-11-30T14:05:00Z") == datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    assert point_in_time("2026-11-30 14:05") == datetime(2026, 11, 30, 14, 5, tzinfo=UTC)  # UTC when unsaid
    assert point_in_time("2026-11-30T16:05:00+02:00") == datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    assert abs(point_in_time("30m ago") - (datetime.now(UTC) - timedelta(minutes=30))) < timedelta(seconds=5)
    for bad in ("yesterday", "14:05", "30 parsecs ago", ""):
        with pytest.raises(ValueError):
            point_in_time(bad)
    with pytest.raises(ValueError):
        instance_name("Prod_DB")
    assert instance_name("aia-before-bug") == "aia-before-bug"


def test_restore_runs_safety_backup_then_restore_and_names_both(core, cloudsql: FakeCloudSqlServer) -> None:  # type: ignore[no-untyped-def]
    target = successful(cloudsql)[1]
    decision = approve_twice(core, f"db restore {target}")
    assert decision.view.status == "executed", decision.view.result
    progress = steps(decision.executed)
    assert progress[-1].status is Status.OK, progress[-1].summary
    safety = max(b.id for b in cloudsql.backups(INSTANCE))
    assert f"/aia db restore {safety}" in progress[-1].summary
    assert cloudsql.restored == [(INSTANCE, target)]


def test_failed_safety_backup_means_no_restore(core, cloudsql: FakeCloudSqlServer) -> None:  # type: ignore[no-untyped-def]
    cloudsql.fail_next["BACKUP_VOLUME"] = "backup storage unavailable"
    decision = approve_twice(core, f"db restore {successful(cloudsql)[0]}")
    last = steps(decision.executed)[-1]
    assert last.status is Status.CRITICAL and "nothing was restored" in last.summary
    assert cloudsql.restored == [] and not cloudsql.calls_to("SqlInstancesService/RestoreBackup")


def test_restore_refused_by_the_api_after_the_safety_backup_is_reported(core, cloudsql: FakeCloudSqlServer) -> None:  # type: ignore[no-untyped-def]
    decision = approve_twice(core, f"db restore {successful(cloudsql)[0]}")
    generator = decision.executed.followup()
    next(generator)
    # Someone starts an operation by hand while the safety backup runs: the restore call is refused (409).
    import time

    time.sleep(0.5)
    cloudsql.start_foreign_operation(INSTANCE, seconds=30)
    last = list(generator)[-1]
    assert last.status is Status.CRITICAL and "Could not start the restore" in last.summary
    assert "busy" in last.summary and cloudsql.restored == []


def test_failed_backup_operation_shows_the_error(core, cloudsql: FakeCloudSqlServer) -> None:  # type: ignore[no-untyped-def]
    cloudsql.fail_next["BACKUP_VOLUME"] = "disk quota exceeded"
    outcome = run_as(core, "operator", "db backup")
    last = steps(outcome.result)[-1]
    assert last.status is Status.CRITICAL and "disk quota exceeded" in last.summary


def test_an_operation_that_never_ends_is_given_up_with_where_to_look(core, cloudsql: FakeCloudSqlServer) -> None:  # type: ignore[no-untyped-def]
    cloudsql.operation_seconds = 600
    outcome = run_as(core, "operator", "db backup")
    last = steps(outcome.result)[-1]
    assert last.status is Status.CRITICAL and "Stopped following" in last.summary
    assert "console.cloud.google.com/sql/instances/mas-system-postgres" in last.summary
    assert "gcloud sql operations describe" in last.summary


def test_status_still_answers_when_backups_cannot_be_read(core, cloudsql: FakeCloudSqlServer) -> None:  # type: ignore[no-untyped-def]
    cloudsql.deny.add("cloudsql.backupRuns.list")
    outcome = run_as(core, "viewer", "db status")
    assert outcome.kind is OutcomeKind.OK
    texts = " ".join(str(p) for p in outcome.result.parts)
    assert "RUNNABLE" in texts and "Backups could not be read" in texts


def test_instance_in_maintenance_is_critical_in_status(core, cloudsql: FakeCloudSqlServer) -> None:  # type: ignore[no-untyped-def]
    cloudsql.set_state(INSTANCE, "MAINTENANCE")
    assert run_as(core, "viewer", "db status").result.status is Status.CRITICAL
