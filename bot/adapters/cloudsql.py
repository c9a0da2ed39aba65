"""Cloud SQL Admin API (v1) through the official client, ``google.cloud.sqladmin_v1``.

With CLOUDSQL_EMULATOR_HOST set, every client shares one plaintext gRPC channel to that
``host:port`` and sends no credentials (Google's emulator convention, as PUBSUB_EMULATOR_HOST).
Otherwise the clients use application default credentials: Workload Identity in GKE.

Every call has a timeout and no hidden retries, so a slow API costs a worker thread at most
``timeout`` seconds. gRPC errors become messages an on-call engineer can act on: which IAM
permission is missing, which object does not exist, that the API is unreachable or slow.
The procedures get plain dataclasses, never proto messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bot.errors import BackendUnavailable, UserError
from bot.timeutil import assume_utc

log = logging.getLogger(__name__)
T = TypeVar("T")


class CloudSqlNotFound(UserError):
    """The instance, backup run or operation does not exist."""


class CloudSqlBusy(UserError):
    """Another operation runs on the instance (the API's 409 operationInProgress)."""


class CloudSqlRefused(UserError):
    """The API refused the request as invalid for the instance's state or settings."""


class CloudSqlNotAllowed(BackendUnavailable):
    """No credentials, or credentials refused: retrying will not help, a deployment fix will."""


class CloudSqlPermissionDenied(CloudSqlNotAllowed):
    """The bot's service account lacks an IAM permission: a deployment problem, not the user's."""

    def __init__(self, message: str, permission: str) -> None:
        super().__init__(message)
        self.permission = permission


@dataclass(frozen=True)
class InstanceInfo:
    name: str
    project: str
    state: str
    database_version: str
    tier: str
    region: str
    zone: str
    availability: str
    disk_used_bytes: int | None
    disk_limit_gb: int | None
    settings_version: int
    backups_enabled: bool
    backup_start_time: str
    retained_backups: int | None
    pitr_enabled: bool
    log_retention_days: int | None
    connection_name: str


@dataclass(frozen=True)
class BackupInfo:
    id: int
    status: str
    type: str
    description: str
    enqueued: datetime | None
    started: datetime | None
    ended: datetime | None
    location: str
    error: str | None

    @property
    def taken_at(self) -> datetime | None:
        """The moment the backup's data is from: the end of its window."""
        return self.ended or self.started or self.enqueued


@dataclass(frozen=True)
class OperationInfo:
    name: str
    type: str
    status: str  # PENDING, RUNNING, DONE
    target: str
    user: str
    inserted: datetime | None
    started: datetime | None
    ended: datetime | None
    error: str | None
    backup_id: int | None

    @property
    def done(self) -> bool:
        return self.status == "DONE"


@dataclass(frozen=True)
class RecoveryWindow:
    earliest: datetime
    latest: datetime


def _time(stamp: Any) -> datetime | None:
    """proto-plus gives DatetimeWithNanoseconds for set timestamps, epoch 0 for unset ones."""
    if stamp is None:
        return None
    moment = stamp if isinstance(stamp, datetime) else None
    if moment is None or moment.timestamp() <= 0:
        return None
    return assume_utc(moment)


def _wrapped(value: Any) -> Any:
    """Wrapper types (Int64Value...) arrive as plain values or None in proto-plus."""
    return getattr(value, "value", value)


def _error_text(errors: Any) -> str | None:
    items = list(getattr(errors, "errors", []) or [])
    if not items:
        return None
    return "; ".join(f"{e.code}: {e.message}" if e.code else str(e.message) for e in items)


class CloudSqlGateway:
    def __init__(self, project: str, instance: str, emulator_host: str | None, timeout: float) -> None:
        self.project = project
        self.instance_name = instance
        self.emulator_host = emulator_host
        self.timeout = timeout
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._channel: Any = None

    # -- clients ------------------------------------------------------------------
    def _client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._make_client(service)
            return self._clients[service]

    def _make_client(self, service: str) -> Any:
        from google.cloud import sqladmin_v1

        client_cls = getattr(sqladmin_v1, f"{service}Client")
        if self.emulator_host:
            import grpc

            if self._channel is None:
                self._channel = grpc.insecure_channel(self.emulator_host)
            transport_cls = client_cls.get_transport_class("grpc")
            return client_cls(transport=transport_cls(channel=self._channel))
        try:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/sqlservice.admin"])
        except DefaultCredentialsError:
            raise CloudSqlNotAllowed(
                "Cloud SQL: no Google credentials. In GKE, bind the bot's Kubernetes service account to a "
                "Google service account (Workload Identity, docs/deploy.md); locally, set "
                "CLOUDSQL_EMULATOR_HOST or run `gcloud auth application-default login`."
            ) from None
        return client_cls(credentials=credentials, transport="grpc")

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._clients.clear()
            self._channel = None

    # -- the one place calls are made -----------------------------------------------
    def _call(self, service: str, method: str, request: Any, what: str, permission: str) -> Any:
        from google.api_core import exceptions as gexc

        client = self._client(service)
        try:
            return getattr(client, method)(request=request, timeout=self.timeout, retry=None)
        except gexc.PermissionDenied:
            raise CloudSqlPermissionDenied(
                f"Cloud SQL refused to {what}: the bot's service account lacks the IAM permission "
                f"`{permission}` on `{self.project}/{self.instance_name}` (docs/deploy.md lists the roles).",
                permission,
            ) from None
        except gexc.Unauthenticated:
            raise CloudSqlNotAllowed(
                f"Cloud SQL did not accept the bot's credentials while trying to {what} "
                "(Workload Identity binding?)."
            ) from None
        except gexc.NotFound as exc:
            raise CloudSqlNotFound(f"Cloud SQL: {exc.message}") from None
        except gexc.Aborted:
            raise CloudSqlBusy(
                f"Instance `{self.instance_name}` is busy with another operation, so Cloud SQL refused to {what}. "
                "See `/aia db operations` and try again when it is done."
            ) from None
        except (gexc.FailedPrecondition, gexc.InvalidArgument, gexc.AlreadyExists) as exc:
            raise CloudSqlRefused(f"Cloud SQL refused to {what}: {exc.message}") from None
        except gexc.DeadlineExceeded:
            raise BackendUnavailable(
                f"The Cloud SQL Admin API did not answer within {self.timeout:g}s while trying to {what}; "
                "it may be slow or unreachable. Check https://status.cloud.google.com and try again."
            ) from None
        except gexc.ServiceUnavailable:
            raise BackendUnavailable(
                f"The Cloud SQL Admin API is unreachable (trying to {what}); check the network path to "
                f"{self.emulator_host or 'sqladmin.googleapis.com'} and https://status.cloud.google.com."
            ) from None
        except gexc.GoogleAPICallError as exc:
            log.warning("Cloud SQL %s.%s failed: %s", service, method, exc.code)
            raise BackendUnavailable(f"Cloud SQL failed to {what}: {exc.code} {exc.message}"[:400]) from None

    # -- reads ----------------------------------------------------------------------
    def instance(self, name: str | None = None) -> InstanceInfo:
        from google.cloud import sqladmin_v1 as sql

        name = name or self.instance_name
        raw = self._call("SqlInstancesService", "get",
                         sql.SqlInstancesGetRequest(project=self.project, instance=name),
                         f"read instance `{name}`", "cloudsql.instances.get")
        settings = raw.settings
        config = settings.backup_configuration
        retention = config.backup_retention_settings
        return InstanceInfo(
            name=raw.name, project=raw.project or self.project, state=raw.state.name,
            database_version=raw.database_version.name, tier=settings.tier, region=raw.region,
            zone=raw.gce_zone, availability=settings.availability_type.name,
            disk_used_bytes=_wrapped(raw.current_disk_size) if "current_disk_size" in raw else None,
            disk_limit_gb=_wrapped(settings.data_disk_size_gb) if "data_disk_size_gb" in settings else None,
            settings_version=int(_wrapped(settings.settings_version) or 0),
            backups_enabled=bool(_wrapped(config.enabled)), backup_start_time=config.start_time,
            retained_backups=_wrapped(retention.retained_backups) if "retained_backups" in retention else None,
            pitr_enabled=bool(_wrapped(config.point_in_time_recovery_enabled)),
            log_retention_days=(_wrapped(config.transaction_log_retention_days)
                                if "transaction_log_retention_days" in config else None),
            connection_name=raw.connection_name,
        )

    def backups(self, limit: int = 10) -> list[BackupInfo]:
        from google.cloud import sqladmin_v1 as sql

        response = self._call("SqlBackupRunsService", "list",
                              sql.SqlBackupRunsListRequest(project=self.project, instance=self.instance_name,
                                                           max_results=limit),
                              "list backups", "cloudsql.backupRuns.list")
        # A pager: its attributes are the first page's, which holds max_results items (no more calls).
        items = list(response.items)
        return [self._backup(b) for b in items[:limit]]

    def backup(self, backup_id: int) -> BackupInfo:
        from google.cloud import sqladmin_v1 as sql

        raw = self._call("SqlBackupRunsService", "get",
                         sql.SqlBackupRunsGetRequest(project=self.project, instance=self.instance_name, id=backup_id),
                         f"read backup {backup_id}", "cloudsql.backupRuns.get")
        return self._backup(raw)

    @staticmethod
    def _backup(raw: Any) -> BackupInfo:
        return BackupInfo(
            id=int(raw.id), status=raw.status.name, type=raw.type_.name, description=raw.description,
            enqueued=_time(raw.enqueued_time), started=_time(raw.start_time), ended=_time(raw.end_time),
            location=raw.location, error=(f"{raw.error.code}: {raw.error.message}" if raw.error.message else None),
        )

    def operation(self, name: str) -> OperationInfo:
        from google.cloud import sqladmin_v1 as sql

        raw = self._call("SqlOperationsService", "get",
                         sql.SqlOperationsGetRequest(project=self.project, operation=name),
                         f"read operation {name}", "cloudsql.instances.get")
        return self._operation(raw)

    def operations(self, limit: int = 10) -> list[OperationInfo]:
        from google.cloud import sqladmin_v1 as sql

        response = self._call("SqlOperationsService", "list",
                              sql.SqlOperationsListRequest(project=self.project, instance=self.instance_name,
                                                           max_results=limit),
                              "list operations", "cloudsql.instances.get")
        items = list(response.items)  # the first page only, as above
        return [self._operation(o) for o in items[:limit]]

    @staticmethod
    def _operation(raw: Any) -> OperationInfo:
        backup_id = int(raw.backup_context.backup_id) if "backup_context" in raw and raw.backup_context.backup_id \
            else None
        return OperationInfo(
            name=raw.name, type=raw.operation_type.name, status=raw.status.name, target=raw.target_id,
            user=raw.user, inserted=_time(raw.insert_time), started=_time(raw.start_time),
            ended=_time(raw.end_time), error=_error_text(raw.error) if "error" in raw else None,
            backup_id=backup_id,
        )

    def recovery_window(self) -> RecoveryWindow:
        from google.cloud import sqladmin_v1 as sql

        raw = self._call("SqlInstancesService", "get_latest_recovery_time",
                         sql.SqlInstancesGetLatestRecoveryTimeRequest(project=self.project,
                                                                      instance=self.instance_name),
                         "read the point-in-time recovery window", "cloudsql.instances.get")
        earliest, latest = _time(raw.earliest_recovery_time), _time(raw.latest_recovery_time)
        if earliest is None or latest is None:
            raise BackendUnavailable("Cloud SQL returned no point-in-time recovery window.")
        return RecoveryWindow(earliest, latest)

    def users(self) -> list[str]:
        from google.cloud import sqladmin_v1 as sql

        response = self._call("SqlUsersService", "list",
                              sql.SqlUsersListRequest(project=self.project, instance=self.instance_name),
                              "list database users", "cloudsql.users.list")
        return [u.name for u in response.items]

    # -- writes (each returns the operation to follow) ------------------------------------
    def start_backup(self, description: str) -> OperationInfo:
        from google.cloud import sqladmin_v1 as sql

        raw = self._call("SqlBackupRunsService", "insert",
                         sql.SqlBackupRunsInsertRequest(project=self.project, instance=self.instance_name,
                                                        body=sql.BackupRun(description=description,
                                                                           instance=self.instance_name)),
                         "start a backup", "cloudsql.backupRuns.create")
        return self._operation(raw)

    def restore(self, backup_id: int) -> OperationInfo:
        from google.cloud import sqladmin_v1 as sql

        body = sql.InstancesRestoreBackupRequest(restore_backup_context=sql.RestoreBackupContext(
            backup_run_id=backup_id, instance_id=self.instance_name, project=self.project))
        raw = self._call("SqlInstancesService", "restore_backup",
                         sql.SqlInstancesRestoreBackupRequest(project=self.project, instance=self.instance_name,
                                                              body=body),
                         f"restore backup {backup_id}", "cloudsql.instances.restoreBackup")
        return self._operation(raw)

    def clone(self, destination: str, point_in_time: datetime) -> OperationInfo:
        from google.cloud import sqladmin_v1 as sql
        from google.protobuf import timestamp_pb2

        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(point_in_time.astimezone(UTC).replace(tzinfo=None))
        body = sql.InstancesCloneRequest(clone_context=sql.CloneContext(
            destination_instance_name=destination, point_in_time=stamp))
        raw = self._call("SqlInstancesService", "clone",
                         sql.SqlInstancesCloneRequest(project=self.project, instance=self.instance_name, body=body),
                         f"clone to `{destination}`", "cloudsql.instances.clone")
        return self._operation(raw)

    def set_user_password(self, user: str, password: str, host: str = "") -> OperationInfo:
        """The password goes into the request only; it is in no message, log or exception."""
        from google.cloud import sqladmin_v1 as sql

        raw = self._call("SqlUsersService", "update",
                         sql.SqlUsersUpdateRequest(project=self.project, instance=self.instance_name, name=user,
                                                   host=host, body=sql.User(name=user, password=password)),
                         f"set the password of database user `{user}`", "cloudsql.users.update")
        return self._operation(raw)


def read_or_none(read: Callable[[], T]) -> T | None:
    """For status pages: one missing part (no permission for backups) must not hide the rest."""
    try:
        return read()
    except (UserError, BackendUnavailable) as exc:
        log.info("Cloud SQL read skipped: %s", exc)
        return None
