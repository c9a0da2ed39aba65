"""CloudSqlGateway against the local Cloud SQL Admin server: the official client over plaintext gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.adapters.cloudsql import (
    CloudSqlBusy,
    CloudSqlGateway,
    CloudSqlNotFound,
    CloudSqlPermissionDenied,
    CloudSqlRefused,
)
from bot.errors import BackendUnavailable
from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql
from tests.harness.bot_process import free_port

INSTANCE = "mas-system-postgres"


@pytest.fixture
def server() -> Iterator[FakeCloudSqlServer]:
    srv = FakeCloudSqlServer(operation_seconds=0.5).start()
    seed_cloudsql(srv)
    yield srv
    srv.stop()


@pytest.fixture
def gateway(server: FakeCloudSqlServer) -> Iterator[CloudSqlGateway]:
    gw = CloudSqlGateway("a-467519", INSTANCE, server.host, timeout=2.0)
    yield gw
    gw.close()


def test_instance_reads_state_settings_and_backup_configuration(gateway: CloudSqlGateway) -> None:
    inst = gateway.instance()
    assert (inst.name, inst.state, inst.availability) == (INSTANCE, "RUNNABLE", "REGIONAL")
    assert inst.database_version == "POSTGRES_15" and inst.tier == "db-custom-2-7680"
    assert inst.backups_enabled and inst.backup_start_time == "03:00" and inst.retained_backups == 7
    assert inst.pitr_enabled and inst.log_retention_days == 7
    assert inst.settings_version == 1 and inst.disk_limit_gb == 100 and inst.disk_used_bytes == 12 * 1024**3


def test_backups_newest_first_with_times_and_errors(gateway: CloudSqlGateway) -> None:
    backups = gateway.backups(10)
    assert len(backups) == 5
    assert [b.id for b in backups] == sorted((b.id for b in backups), reverse=True)
    failed = next(b for b in backups if b.status == "FAILED")
    assert failed.error and "internal error" in failed.error
    assert all(b.taken_at and b.taken_at.tzinfo for b in backups)
    assert len(gateway.backups(2)) == 2


def test_backup_operation_is_followed_to_done(gateway: CloudSqlGateway) -> None:
    import time

    op = gateway.start_backup("from the test")
    assert op.type == "BACKUP_VOLUME" and op.backup_id and not op.done
    deadline = time.monotonic() + 5
    while not gateway.operation(op.name).done and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.operation(op.name).done and gateway.operation(op.name).error is None
    assert gateway.backup(op.backup_id).status == "SUCCESSFUL"
    assert gateway.operations(5)[0].name == op.name


def test_not_found_names_the_object(gateway: CloudSqlGateway) -> None:
    with pytest.raises(CloudSqlNotFound, match="backup run does not exist: 42"):
        gateway.backup(42)
    with pytest.raises(CloudSqlNotFound, match="nope"):
        gateway.instance("nope")


def test_permission_denied_names_the_missing_permission(server: FakeCloudSqlServer,
                                                        gateway: CloudSqlGateway) -> None:
    server.deny.add("cloudsql.backupRuns.create")
    with pytest.raises(CloudSqlPermissionDenied) as caught:
        gateway.start_backup("x")
    assert caught.value.permission == "cloudsql.backupRuns.create"
    assert "`cloudsql.backupRuns.create`" in str(caught.value) and "docs/deploy.md" in str(caught.value)
    server.deny = {"cloudsql.instances.restoreBackup"}
    with pytest.raises(CloudSqlPermissionDenied, match="cloudsql.instances.restoreBackup"):
        gateway.restore(gateway.backups(1)[0].id)


def test_busy_instance_is_a_clear_conflict(server: FakeCloudSqlServer, gateway: CloudSqlGateway) -> None:
    server.start_foreign_operation(INSTANCE, seconds=30)
    with pytest.raises(CloudSqlBusy, match="busy with another operation.*db operations"):
        gateway.start_backup("x")


def test_refusals_carry_the_apis_reason(server: FakeCloudSqlServer, gateway: CloudSqlGateway) -> None:
    with pytest.raises(CloudSqlRefused, match="outside the recovery window"):
        gateway.clone("aia-old", datetime.now(UTC) - timedelta(days=60))
    window = gateway.recovery_window()
    assert window.earliest < window.latest <= datetime.now(UTC)


def test_slow_api_times_out_with_a_message_not_a_hang(server: FakeCloudSqlServer) -> None:
    import time

    server.delay_seconds = 3
    gw = CloudSqlGateway("a-467519", INSTANCE, server.host, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"did not answer within 0.5s"):
        gw.instance()
    assert time.monotonic() - started < 2
    gw.close()


def test_unreachable_api_says_so() -> None:
    gw = CloudSqlGateway("a-467519", INSTANCE, f"127.0.0.1:{free_port()}", timeout=1.0)
    with pytest.raises(BackendUnavailable, match="unreachable|did not answer"):
        gw.backups()
    gw.close()


def test_password_is_in_no_error_message(server: FakeCloudSqlServer, gateway: CloudSqlGateway) -> None:
    server.deny.add("cloudsql.users.update")
    with pytest.raises(CloudSqlPermissionDenied) as caught:
        gateway.set_user_password("aia_app", "pw-Do-Not-Leak-5521")
    assert "pw-Do-Not-Leak-5521" not in str(caught.value) and "cloudsql.users.update" in str(caught.value)
    server.deny.clear()
    op = gateway.set_user_password("aia_app", "pw-Do-Not-Leak-5521")
    assert op.type == "UPDATE_USER" and "pw-Do-Not-Leak-5521" not in repr(op)


def test_without_emulator_and_without_credentials_fails_closed(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    # No ADC anywhere: no env file, no gcloud config, no metadata server.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")
    gw = CloudSqlGateway("a-467519", INSTANCE, None, timeout=1.0)
    with pytest.raises(BackendUnavailable, match="no Google credentials.*Workload Identity"):
        gw.instance()
