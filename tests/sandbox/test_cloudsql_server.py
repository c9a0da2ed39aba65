"""The local Cloud SQL Admin server, driven by the official client over gRPC, as the bot drives it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import sqladmin_v1 as sql
from google.protobuf import timestamp_pb2

from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql

PROJECT, INSTANCE = "a-467519", "mas-system-postgres"


@pytest.fixture
def server() -> Iterator[FakeCloudSqlServer]:
    srv = FakeCloudSqlServer(operation_seconds=0.6).start()
    seed_cloudsql(srv)
    yield srv
    srv.stop()


@pytest.fixture
def channel(server: FakeCloudSqlServer) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(server.host)
    yield ch
    ch.close()


def client(cls, channel):  # type: ignore[no-untyped-def]
    return cls(transport=cls.get_transport_class("grpc")(channel=channel))


def wait_done(ops, name: str, timeout: float = 5) -> sql.Operation:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        op = ops.get(request=sql.SqlOperationsGetRequest(project=PROJECT, operation=name), timeout=5)
        seen.append(op.status.name)
        if op.status == sql.Operation.SqlOperationStatus.DONE:
            return op
        time.sleep(0.05)
    raise AssertionError(f"operation not done: {seen[-3:]}")


def test_instance_has_the_runbooks_settings(channel) -> None:  # type: ignore[no-untyped-def]
    inst = client(sql.SqlInstancesServiceClient, channel).get(
        request=sql.SqlInstancesGetRequest(project=PROJECT, instance=INSTANCE), timeout=5)
    assert inst.state.name == "RUNNABLE" and inst.database_version.name.startswith("POSTGRES")
    assert inst.settings.backup_configuration.point_in_time_recovery_enabled is True
    assert inst.settings.settings_version == 1


def test_backup_goes_pending_running_done_and_lands_in_the_list(server, channel) -> None:  # type: ignore[no-untyped-def]
    runs = client(sql.SqlBackupRunsServiceClient, channel)
    ops = client(sql.SqlOperationsServiceClient, channel)
    op = runs.insert(request=sql.SqlBackupRunsInsertRequest(project=PROJECT, instance=INSTANCE,
                                                            body=sql.BackupRun(description="t")), timeout=5)
    assert op.status.name == "PENDING" and op.operation_type.name == "BACKUP_VOLUME"
    backup_id = op.backup_context.backup_id
    running = runs.get(request=sql.SqlBackupRunsGetRequest(project=PROJECT, instance=INSTANCE, id=backup_id), timeout=5)
    assert running.status.name == "RUNNING"
    done = wait_done(ops, op.name)
    assert not done.error.errors and done.end_time
    listed = runs.list(request=sql.SqlBackupRunsListRequest(project=PROJECT, instance=INSTANCE), timeout=5)
    first = next(iter(listed))
    assert first.id == backup_id and first.status.name == "SUCCESSFUL" and first.description == "t"


def test_second_operation_while_one_runs_is_refused_as_409(server, channel) -> None:  # type: ignore[no-untyped-def]
    runs = client(sql.SqlBackupRunsServiceClient, channel)
    runs.insert(request=sql.SqlBackupRunsInsertRequest(project=PROJECT, instance=INSTANCE), timeout=5)
    with pytest.raises(gexc.Aborted, match="another operation was already in progress"):
        runs.insert(request=sql.SqlBackupRunsInsertRequest(project=PROJECT, instance=INSTANCE), timeout=5)


def test_failing_backup_ends_done_with_an_error_and_a_failed_run(server, channel) -> None:  # type: ignore[no-untyped-def]
    server.fail_next["BACKUP_VOLUME"] = "disk quota exceeded"
    runs = client(sql.SqlBackupRunsServiceClient, channel)
    op = runs.insert(request=sql.SqlBackupRunsInsertRequest(project=PROJECT, instance=INSTANCE), timeout=5)
    done = wait_done(client(sql.SqlOperationsServiceClient, channel), op.name)
    assert done.error.errors[0].message == "disk quota exceeded"
    run = runs.get(request=sql.SqlBackupRunsGetRequest(project=PROJECT, instance=INSTANCE,
                                                       id=op.backup_context.backup_id), timeout=5)
    assert run.status.name == "FAILED"


def test_restore_puts_the_instance_in_maintenance_until_done(server, channel) -> None:  # type: ignore[no-untyped-def]
    backup_id = server.backups(INSTANCE)[0].id
    instances = client(sql.SqlInstancesServiceClient, channel)
    body = sql.InstancesRestoreBackupRequest(restore_backup_context=sql.RestoreBackupContext(
        backup_run_id=backup_id, instance_id=INSTANCE, project=PROJECT))
    op = instances.restore_backup(request=sql.SqlInstancesRestoreBackupRequest(
        project=PROJECT, instance=INSTANCE, body=body), timeout=5)
    assert server.instance(INSTANCE).state.name == "MAINTENANCE"
    wait_done(client(sql.SqlOperationsServiceClient, channel), op.name)
    assert server.instance(INSTANCE).state.name == "RUNNABLE"
    assert server.restored == [(INSTANCE, backup_id)]


def test_restore_of_a_failed_or_unknown_backup_is_refused(server, channel) -> None:  # type: ignore[no-untyped-def]
    failed = next(b.id for b in server.backups(INSTANCE) if b.status.name == "FAILED")
    instances = client(sql.SqlInstancesServiceClient, channel)

    def restore(backup_id: int) -> None:
        body = sql.InstancesRestoreBackupRequest(restore_backup_context=sql.RestoreBackupContext(
            backup_run_id=backup_id, instance_id=INSTANCE, project=PROJECT))
        instances.restore_backup(request=sql.SqlInstancesRestoreBackupRequest(
            project=PROJECT, instance=INSTANCE, body=body), timeout=5)

    with pytest.raises(gexc.FailedPrecondition):
        restore(failed)
    with pytest.raises(gexc.NotFound):
        restore(42)
    assert server.restored == []


def test_instance_in_maintenance_refuses_writes(server, channel) -> None:  # type: ignore[no-untyped-def]
    server.set_state(INSTANCE, "MAINTENANCE")
    with pytest.raises(gexc.FailedPrecondition, match="MAINTENANCE"):
        client(sql.SqlBackupRunsServiceClient, channel).insert(
            request=sql.SqlBackupRunsInsertRequest(project=PROJECT, instance=INSTANCE), timeout=5)


def _clone(instances, at: datetime, name: str = "aia-clone"):  # type: ignore[no-untyped-def]
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at.replace(tzinfo=None))
    body = sql.InstancesCloneRequest(clone_context=sql.CloneContext(destination_instance_name=name,
                                                                    point_in_time=stamp))
    return instances.clone(request=sql.SqlInstancesCloneRequest(project=PROJECT, instance=INSTANCE, body=body),
                           timeout=5)


def test_clone_inside_the_window_creates_an_instance_outside_is_refused(server, channel) -> None:  # type: ignore[no-untyped-def]
    instances = client(sql.SqlInstancesServiceClient, channel)
    window = instances.get_latest_recovery_time(request=sql.SqlInstancesGetLatestRecoveryTimeRequest(
        project=PROJECT, instance=INSTANCE), timeout=5)
    assert window.earliest_recovery_time < window.latest_recovery_time
    with pytest.raises(gexc.InvalidArgument, match="outside the recovery window"):
        _clone(instances, datetime.now(UTC) - timedelta(days=30))
    op = _clone(instances, datetime.now(UTC) - timedelta(hours=1))
    assert server.instance("aia-clone").state.name == "PENDING_CREATE"
    wait_done(client(sql.SqlOperationsServiceClient, channel), op.name)
    assert server.instance("aia-clone").state.name == "RUNNABLE"
    server.set_pitr(INSTANCE, False)
    with pytest.raises(gexc.FailedPrecondition, match="not enabled"):
        _clone(instances, datetime.now(UTC) - timedelta(hours=1), "aia-clone-2")


def test_denied_permission_answers_like_the_real_api(server, channel) -> None:  # type: ignore[no-untyped-def]
    server.deny.add("cloudsql.backupRuns.list")
    with pytest.raises(gexc.PermissionDenied, match="not authorized"):
        client(sql.SqlBackupRunsServiceClient, channel).list(
            request=sql.SqlBackupRunsListRequest(project=PROJECT, instance=INSTANCE), timeout=5)
    with pytest.raises(gexc.PermissionDenied):
        client(sql.SqlInstancesServiceClient, channel).get(
            request=sql.SqlInstancesGetRequest(project="another-project", instance=INSTANCE), timeout=5)


def test_user_password_update_is_applied_when_done_and_never_recorded(server, channel) -> None:  # type: ignore[no-untyped-def]
    users = client(sql.SqlUsersServiceClient, channel)
    listed = users.list(request=sql.SqlUsersListRequest(project=PROJECT, instance=INSTANCE), timeout=5)
    assert {u.name for u in listed.items} == {"postgres", "aia_app"}
    op = users.update(request=sql.SqlUsersUpdateRequest(project=PROJECT, instance=INSTANCE, name="aia_app",
                                                        body=sql.User(name="aia_app", password="s3cret-Value-91")),
                      timeout=5)
    assert server.password_of(INSTANCE, "aia_app") is None  # not before the operation is done
    wait_done(client(sql.SqlOperationsServiceClient, channel), op.name)
    assert server.password_of(INSTANCE, "aia_app") == "s3cret-Value-91"
    assert "s3cret-Value-91" not in repr(server.calls)


def test_slow_server_trips_the_client_deadline(server, channel) -> None:  # type: ignore[no-untyped-def]
    server.delay_seconds = 1.0
    with pytest.raises(gexc.DeadlineExceeded):
        client(sql.SqlInstancesServiceClient, channel).get(
            request=sql.SqlInstancesGetRequest(project=PROJECT, instance=INSTANCE), timeout=0.3, retry=None)
