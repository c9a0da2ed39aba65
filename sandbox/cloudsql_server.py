"""A local Cloud SQL Admin API (v1) over plaintext gRPC, for tests and the sandbox console.

The official client (``google.cloud.sqladmin_v1``) talks to it unmodified through a
``grpc.insecure_channel`` (Google's emulator convention, ``CLOUDSQL_EMULATOR_HOST``). Requests
and responses are the client library's own proto-plus messages, serialised on the wire exactly
as the real service does; the servicer methods are registered under the real method paths
(``/google.cloud.sql.v1.SqlInstancesService/Get`` ...).

It behaves like the real service where the bot depends on it:

- mutating calls answer at once with an Operation (PENDING, then RUNNING, then DONE after
  ``operation_seconds``); an operation can be told to fail (``fail_next``);
- a second mutating call while one runs on the instance is refused as the real API refuses it
  (HTTP 409 ``operationInProgress``, gRPC ABORTED);
- the instance has a state (RUNNABLE, MAINTENANCE ...), a settings version, a backup
  configuration with point-in-time recovery and a recovery window;
- IAM: ``deny`` holds permissions the caller lacks; the answer is the real, unhelpful
  "The client is not authorized to make this request." (the bot has to name the permission);
- ``delay_seconds`` makes every call slow (timeouts), ``stop()`` makes it unreachable.

User passwords set through SqlUsersService.Update are kept for tests to check
(``password_of``) and are never logged or recorded.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.cloud import sqladmin_v1 as sql
from google.protobuf import timestamp_pb2, wrappers_pb2

__all__ = ["FakeCloudSqlServer", "RecordedCall"]

PACKAGE = "google.cloud.sql.v1"
NOT_AUTHORIZED = "The client is not authorized to make this request."
IN_PROGRESS = ("Operation failed because another operation was already in progress. "
               "Try your request after the current operation is complete.")
# proto-plus enums are IntEnums at run time; typed as Any so plain assignments type-check.
OpType: Any = sql.Operation.SqlOperationType
OpStatus: Any = sql.Operation.SqlOperationStatus
State: Any = sql.DatabaseInstance.SqlInstanceState
BackupStatus: Any = sql.SqlBackupRunStatus
BackupRunType: Any = sql.SqlBackupRunType
DatabaseVersion: Any = sql.SqlDatabaseVersion


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC).replace(tzinfo=None))
    return stamp


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RecordedCall:
    """One request as received (Users.Update is recorded without its body: it holds a password)."""

    method: str
    instance: str
    at: float = field(default_factory=time.monotonic)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Op:
    name: str
    op_type: Any
    instance: str
    project: str
    user: str
    inserted: datetime
    duration: float
    fail: str | None
    on_done: Callable[[], None] | None = None
    on_fail: Callable[[str], None] | None = None
    backup_id: int | None = None
    status: Any = OpStatus.PENDING
    ended: datetime | None = None
    error: str | None = None

    def message(self) -> sql.Operation:
        op = sql.Operation(
            kind="sql#operation", name=self.name, status=self.status, operation_type=self.op_type,
            target_id=self.instance, target_project=self.project, user=self.user,
            insert_time=_ts(self.inserted),
            target_link=f"https://sqladmin.googleapis.com/v1/projects/{self.project}/instances/{self.instance}",
            self_link=f"https://sqladmin.googleapis.com/v1/projects/{self.project}/operations/{self.name}",
        )
        if self.status != OpStatus.PENDING:
            op.start_time = _ts(self.inserted + timedelta(milliseconds=50))
        if self.ended is not None:
            op.end_time = _ts(self.ended)
        if self.error:
            op.error = sql.OperationErrors(kind="sql#operationErrors", errors=[
                sql.OperationError(kind="sql#operationError", code="INTERNAL_ERROR", message=self.error)])
        if self.backup_id is not None:
            op.backup_context = sql.BackupContext(kind="sql#backupContext", backup_id=self.backup_id)
        return op


# Which IAM permission each call needs (Cloud SQL's documented mapping).
PERMISSIONS = {
    "SqlInstancesService/Get": "cloudsql.instances.get",
    "SqlInstancesService/RestoreBackup": "cloudsql.instances.restoreBackup",
    "SqlInstancesService/Clone": "cloudsql.instances.clone",
    "SqlInstancesService/GetLatestRecoveryTime": "cloudsql.instances.get",
    "SqlBackupRunsService/List": "cloudsql.backupRuns.list",
    "SqlBackupRunsService/Get": "cloudsql.backupRuns.get",
    "SqlBackupRunsService/Insert": "cloudsql.backupRuns.create",
    "SqlOperationsService/Get": "cloudsql.instances.get",
    "SqlOperationsService/List": "cloudsql.instances.get",
    "SqlUsersService/List": "cloudsql.users.list",
    "SqlUsersService/Update": "cloudsql.users.update",
}


class FakeCloudSqlServer:
    def __init__(self, project: str = "a-467519", operation_seconds: float = 1.0) -> None:
        self.project = project
        self.operation_seconds = operation_seconds
        self.delay_seconds = 0.0
        self.deny: set[str] = set()
        # op type name (BACKUP_VOLUME, RESTORE_VOLUME, CLONE, UPDATE_USER) -> error message of the next one
        self.fail_next: dict[str, str] = {}
        self.calls: list[RecordedCall] = []
        self._lock = threading.RLock()
        self._instances: dict[str, sql.DatabaseInstance] = {}
        self._backups: dict[str, list[sql.BackupRun]] = {}
        self._ops: dict[str, _Op] = {}
        self._users: dict[tuple[str, str], str | None] = {}
        self._pitr_since: dict[str, datetime] = {}
        self.restored: list[tuple[str, int]] = []  # (instance, backup id) of finished restores
        self._server: grpc.Server | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> FakeCloudSqlServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-cloudsql"))
        server.add_generic_rpc_handlers(self._handlers())
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0.5).wait(2)
            self._server = None

    @property
    def host(self) -> str:
        """``host:port`` for CLOUDSQL_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    # -- state for tests -------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self._instances.clear()
            self._backups.clear()
            self._ops.clear()
            self._users.clear()
            self._pitr_since.clear()
            self.calls.clear()
            self.restored.clear()
            self.deny.clear()
            self.fail_next.clear()
            self.delay_seconds = 0.0

    def add_instance(self, name: str, *, state: str = "RUNNABLE", pitr: bool = True, log_days: int = 7,
                     region: str = "us-central1", tier: str = "db-custom-2-7680",
                     version: str = "POSTGRES_15", pitr_since: datetime | None = None) -> None:
        with self._lock:
            self._instances[name] = sql.DatabaseInstance(
                kind="sql#instance", name=name, project=self.project, region=region, gce_zone=region + "-a",
                state=State[state], database_version=DatabaseVersion[version],
                connection_name=f"{self.project}:{region}:{name}", etag=uuid.uuid4().hex,
                backend_type=sql.SqlBackendType.SECOND_GEN,
                current_disk_size=wrappers_pb2.Int64Value(value=12 * 1024**3),
                max_disk_size=wrappers_pb2.Int64Value(value=100 * 1024**3),
                settings=sql.Settings(
                    tier=tier, settings_version=wrappers_pb2.Int64Value(value=1),
                    availability_type=sql.SqlAvailabilityType.REGIONAL,
                    data_disk_size_gb=wrappers_pb2.Int64Value(value=100),
                    backup_configuration=sql.BackupConfiguration(
                        kind="sql#backupConfiguration", start_time="03:00",
                        enabled=wrappers_pb2.BoolValue(value=True),
                        point_in_time_recovery_enabled=wrappers_pb2.BoolValue(value=pitr),
                        transaction_log_retention_days=wrappers_pb2.Int32Value(value=log_days),
                        backup_retention_settings=sql.BackupRetentionSettings(
                            retention_unit=sql.BackupRetentionSettings.RetentionUnit.COUNT,
                            retained_backups=wrappers_pb2.Int32Value(value=7)),
                        location="us",
                    ),
                ),
            )
            self._backups.setdefault(name, [])
            self._pitr_since[name] = pitr_since or (_now() - timedelta(days=log_days))

    def add_backup(self, instance: str, *, hours_ago: float, status: str = "SUCCESSFUL",
                   kind: str = "AUTOMATED", description: str = "", error: str | None = None) -> int:
        with self._lock:
            end = _now() - timedelta(hours=hours_ago)
            backup_id = int(end.timestamp() * 1000)
            run = sql.BackupRun(
                kind="sql#backupRun", id=backup_id, instance=instance, status=BackupStatus[status],
                type_=BackupRunType[kind], description=description, location="us",
                enqueued_time=_ts(end - timedelta(minutes=6)), start_time=_ts(end - timedelta(minutes=5)),
                end_time=_ts(end), window_start_time=_ts(end - timedelta(minutes=6)),
                backup_kind=sql.SqlBackupKind.SNAPSHOT,
            )
            if error:
                run.error = sql.OperationError(kind="sql#operationError", code="BACKUP_FAILED", message=error)
            self._backups.setdefault(instance, []).append(run)
            return backup_id

    def add_user(self, instance: str, name: str, password: str | None = None) -> None:
        with self._lock:
            self._users[(instance, name)] = password

    def password_of(self, instance: str, name: str) -> str | None:
        with self._lock:
            return self._users.get((instance, name))

    def set_state(self, instance: str, state: str) -> None:
        with self._lock:
            self._instances[instance].state = State[state]

    def set_pitr(self, instance: str, enabled: bool) -> None:
        with self._lock:
            settings = self._instances[instance].settings
            settings.backup_configuration.point_in_time_recovery_enabled = enabled
            self._bump_settings(instance)

    def change_settings(self, instance: str, tier: str) -> None:
        """Someone changed the instance by hand (settings version goes up)."""
        with self._lock:
            self._instances[instance].settings.tier = tier
            self._bump_settings(instance)

    def start_foreign_operation(self, instance: str, op_type: str = "UPDATE", seconds: float | None = None) -> str:
        """An operation someone else started (console, gcloud): the instance is busy meanwhile."""
        with self._lock:
            return self._new_op(OpType[op_type], instance, "someone@example.com", seconds).name

    def instance(self, name: str) -> sql.DatabaseInstance:
        with self._lock:
            self._advance()
            return copy.deepcopy(self._instances[name])

    def backups(self, instance: str) -> list[sql.BackupRun]:
        with self._lock:
            self._advance()
            return copy.deepcopy(self._backups.get(instance, []))

    def operations(self) -> list[sql.Operation]:
        with self._lock:
            self._advance()
            return [op.message() for op in self._ops.values()]

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    # -- internals -------------------------------------------------------------------
    def _bump_settings(self, instance: str) -> None:
        settings = self._instances[instance].settings
        settings.settings_version = int(settings.settings_version or 0) + 1  # proto-plus unwraps Int64Value
        self._instances[instance].etag = uuid.uuid4().hex

    def _advance(self) -> None:
        """Move operations along by the clock: PENDING briefly, RUNNING, then DONE."""
        now = _now()
        for op in self._ops.values():
            if op.status == OpStatus.DONE:
                continue
            elapsed = (now - op.inserted).total_seconds()
            if elapsed >= op.duration:
                op.status, op.ended = OpStatus.DONE, now
                if op.fail:
                    op.error = op.fail
                    if op.on_fail:
                        op.on_fail(op.fail)
                elif op.on_done:
                    op.on_done()
            elif elapsed >= min(0.2, op.duration / 4):
                op.status = OpStatus.RUNNING

    def _busy(self, instance: str) -> bool:
        return any(op.instance == instance and op.status != OpStatus.DONE for op in self._ops.values())

    def _new_op(self, op_type: Any, instance: str, user: str, seconds: float | None = None) -> _Op:
        op = _Op(name=str(uuid.uuid4()), op_type=op_type, instance=instance, project=self.project, user=user,
                 inserted=_now(), duration=self.operation_seconds if seconds is None else seconds,
                 fail=self.fail_next.pop(OpType(op_type).name, None))
        self._ops[op.name] = op
        return op

    def _instance_for_write(self, name: str) -> sql.DatabaseInstance:
        instance = self._get_instance(name)
        if self._busy(name):
            raise _Abort(grpc.StatusCode.ABORTED, IN_PROGRESS)
        if instance.state != State.RUNNABLE:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"Invalid request: Instance {name} is not in a state that allows this operation "
                         f"(state {State(instance.state).name}).")
        return instance

    def _get_instance(self, name: str) -> sql.DatabaseInstance:
        if name not in self._instances:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"The Cloud SQL instance does not exist: {name}.")
        return self._instances[name]

    def _check_project(self, project: str) -> None:
        if project != self.project:
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, NOT_AUTHORIZED)

    # -- the RPCs ----------------------------------------------------------------------
    def _instances_get(self, req: sql.SqlInstancesGetRequest) -> sql.DatabaseInstance:
        return copy.deepcopy(self._get_instance(req.instance))

    def _latest_recovery_time(self, req: sql.SqlInstancesGetLatestRecoveryTimeRequest
                              ) -> sql.SqlInstancesGetLatestRecoveryTimeResponse:
        instance = self._get_instance(req.instance)
        config = instance.settings.backup_configuration
        if not config.point_in_time_recovery_enabled:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         "Point in time recovery is not enabled for this instance.")
        now = _now()
        earliest = max(self._pitr_since[req.instance],
                       now - timedelta(days=config.transaction_log_retention_days or 7))
        return sql.SqlInstancesGetLatestRecoveryTimeResponse(
            kind="sql#getLatestRecoveryTime", latest_recovery_time=_ts(now - timedelta(seconds=5)),
            earliest_recovery_time=_ts(earliest))

    def _restore_backup(self, req: sql.SqlInstancesRestoreBackupRequest) -> sql.Operation:
        context = req.body.restore_backup_context
        source = context.instance_id or req.instance
        instance = self._instance_for_write(req.instance)
        run = next((b for b in self._backups.get(source, []) if b.id == context.backup_run_id), None)
        if run is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"The backup run does not exist: {context.backup_run_id}.")
        if run.status != BackupStatus.SUCCESSFUL:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"Invalid request: backup run {run.id} is {BackupStatus(run.status).name}.")
        op = self._new_op(OpType.RESTORE_VOLUME, req.instance, "bot@a-467519.iam.gserviceaccount.com")
        instance.state = State.MAINTENANCE

        def done(backup_id: int = run.id, name: str = req.instance) -> None:
            self._instances[name].state = State.RUNNABLE
            self.restored.append((name, backup_id))

        def failed(_: str, name: str = req.instance) -> None:
            self._instances[name].state = State.RUNNABLE

        op.on_done, op.on_fail = done, failed
        return op.message()

    def _clone(self, req: sql.SqlInstancesCloneRequest) -> sql.Operation:
        context = req.body.clone_context
        source = self._get_instance(req.instance)
        if self._busy(req.instance):
            raise _Abort(grpc.StatusCode.ABORTED, IN_PROGRESS)
        target = context.destination_instance_name
        if not target:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid request: destination instance name missing.")
        if target in self._instances:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS,
                         "The Cloud SQL instance already exists. When you delete an instance, you can't "
                         "reuse the name of the deleted instance until one week from the deletion date.")
        if "point_in_time" in context:
            config = source.settings.backup_configuration
            if not config.point_in_time_recovery_enabled:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                             "Point in time recovery is not enabled for this instance.")
            window = self._latest_recovery_time(sql.SqlInstancesGetLatestRecoveryTimeRequest(
                instance=req.instance, project=req.project))
            moment = context.point_in_time
            if not (window.earliest_recovery_time <= moment <= window.latest_recovery_time):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             "Invalid request: The requested point in time is outside the recovery window.")
        op = self._new_op(OpType.CLONE, req.instance, "bot@a-467519.iam.gserviceaccount.com")
        clone = copy.deepcopy(source)
        clone.name, clone.state, clone.etag = target, State.PENDING_CREATE, uuid.uuid4().hex
        clone.connection_name = f"{self.project}:{clone.region}:{target}"
        self._instances[target] = clone
        self._backups[target] = []
        self._pitr_since[target] = _now()

        def done(name: str = target) -> None:
            self._instances[name].state = State.RUNNABLE

        def failed(_: str, name: str = target) -> None:
            self._instances.pop(name, None)

        op.on_done, op.on_fail = done, failed
        return op.message()

    def _backup_runs_list(self, req: sql.SqlBackupRunsListRequest) -> sql.BackupRunsListResponse:
        self._get_instance(req.instance)
        runs = sorted(self._backups.get(req.instance, []), key=lambda b: b.id, reverse=True)
        limit = req.max_results or 100
        return sql.BackupRunsListResponse(kind="sql#backupRunsList", items=copy.deepcopy(runs[:limit]))

    def _backup_runs_get(self, req: sql.SqlBackupRunsGetRequest) -> sql.BackupRun:
        self._get_instance(req.instance)
        for run in self._backups.get(req.instance, []):
            if run.id == req.id:
                return copy.deepcopy(run)
        raise _Abort(grpc.StatusCode.NOT_FOUND, f"The backup run does not exist: {req.id}.")

    def _backup_runs_insert(self, req: sql.SqlBackupRunsInsertRequest) -> sql.Operation:
        self._instance_for_write(req.instance)
        op = self._new_op(OpType.BACKUP_VOLUME, req.instance, "bot@a-467519.iam.gserviceaccount.com")
        now = _now()
        backup_id = int(now.timestamp() * 1000)
        while any(b.id == backup_id for runs in self._backups.values() for b in runs):
            backup_id += 1
        run = sql.BackupRun(kind="sql#backupRun", id=backup_id, instance=req.instance, status=BackupStatus.RUNNING,
                            type_=sql.SqlBackupRunType.ON_DEMAND, description=req.body.description,
                            location="us", enqueued_time=_ts(now), start_time=_ts(now), window_start_time=_ts(now),
                            backup_kind=sql.SqlBackupKind.SNAPSHOT)
        self._backups.setdefault(req.instance, []).append(run)
        op.backup_id = backup_id

        def done(r: sql.BackupRun = run) -> None:
            r.status, r.end_time = BackupStatus.SUCCESSFUL, _ts(_now())

        def failed(message: str, r: sql.BackupRun = run) -> None:
            r.status, r.end_time = BackupStatus.FAILED, _ts(_now())
            r.error = sql.OperationError(kind="sql#operationError", code="BACKUP_FAILED", message=message)

        op.on_done, op.on_fail = done, failed
        return op.message()

    def _operations_get(self, req: sql.SqlOperationsGetRequest) -> sql.Operation:
        op = self._ops.get(req.operation)
        if op is None or op.project != req.project:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"The operation does not exist: {req.operation}.")
        return op.message()

    def _operations_list(self, req: sql.SqlOperationsListRequest) -> sql.OperationsListResponse:
        self._get_instance(req.instance)
        ops = sorted((o for o in self._ops.values() if o.instance == req.instance),
                     key=lambda o: o.inserted, reverse=True)
        limit = req.max_results or 100
        return sql.OperationsListResponse(kind="sql#operationsList", items=[o.message() for o in ops[:limit]])

    def _users_list(self, req: sql.SqlUsersListRequest) -> sql.UsersListResponse:
        self._get_instance(req.instance)
        users = [sql.User(kind="sql#user", name=name, instance=inst, project=self.project,
                          type_=sql.User.SqlUserType.BUILT_IN)
                 for (inst, name) in sorted(self._users) if inst == req.instance]
        return sql.UsersListResponse(kind="sql#usersList", items=users)

    def _users_update(self, req: sql.SqlUsersUpdateRequest) -> sql.Operation:
        self._instance_for_write(req.instance)
        if (req.instance, req.name) not in self._users:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"The user does not exist: {req.name}.")
        op = self._new_op(OpType.UPDATE_USER, req.instance, "bot@a-467519.iam.gserviceaccount.com")
        password = req.body.password

        def done(key: tuple[str, str] = (req.instance, req.name), value: str = password) -> None:
            self._users[key] = value

        op.on_done = done
        return op.message()

    # -- wiring --------------------------------------------------------------------------
    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        table: dict[str, dict[str, tuple[Callable[[Any], Any], type, type]]] = {
            "SqlInstancesService": {
                "Get": (self._instances_get, sql.SqlInstancesGetRequest, sql.DatabaseInstance),
                "RestoreBackup": (self._restore_backup, sql.SqlInstancesRestoreBackupRequest, sql.Operation),
                "Clone": (self._clone, sql.SqlInstancesCloneRequest, sql.Operation),
                "GetLatestRecoveryTime": (self._latest_recovery_time, sql.SqlInstancesGetLatestRecoveryTimeRequest,
                                          sql.SqlInstancesGetLatestRecoveryTimeResponse),
            },
            "SqlBackupRunsService": {
                "List": (self._backup_runs_list, sql.SqlBackupRunsListRequest, sql.BackupRunsListResponse),
                "Get": (self._backup_runs_get, sql.SqlBackupRunsGetRequest, sql.BackupRun),
                "Insert": (self._backup_runs_insert, sql.SqlBackupRunsInsertRequest, sql.Operation),
            },
            "SqlOperationsService": {
                "Get": (self._operations_get, sql.SqlOperationsGetRequest, sql.Operation),
                "List": (self._operations_list, sql.SqlOperationsListRequest, sql.OperationsListResponse),
            },
            "SqlUsersService": {
                "List": (self._users_list, sql.SqlUsersListRequest, sql.UsersListResponse),
                "Update": (self._users_update, sql.SqlUsersUpdateRequest, sql.Operation),
            },
        }
        handlers: list[grpc.GenericRpcHandler] = []
        for service, methods in table.items():
            rpcs = {
                name: grpc.unary_unary_rpc_method_handler(
                    self._wrap(f"{service}/{name}", fn),
                    request_deserializer=request_type.deserialize,  # type: ignore[attr-defined]
                    response_serializer=response_type.serialize,  # type: ignore[attr-defined]
                )
                for name, (fn, request_type, response_type) in methods.items()
            }
            handlers.append(grpc.method_handlers_generic_handler(f"{PACKAGE}.{service}", rpcs))
        return handlers

    def _wrap(self, method: str, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            detail: dict[str, Any] = {}
            if method != "SqlUsersService/Update":  # its body holds a password
                detail = type(request).to_dict(request)
            else:
                detail = {"name": request.name}
            self.calls.append(RecordedCall(method, str(getattr(request, "instance", "") or ""), detail=detail))
            if self.delay_seconds:
                time.sleep(self.delay_seconds)
            try:
                with self._lock:
                    if PERMISSIONS.get(method) in self.deny:
                        raise _Abort(grpc.StatusCode.PERMISSION_DENIED, NOT_AUTHORIZED)
                    self._check_project(request.project)
                    self._advance()
                    return fn(request)
            except _Abort as abort:
                context.abort(abort.code, abort.message)

        return handle


def seed_cloudsql(server: FakeCloudSqlServer, instance: str = "mas-system-postgres") -> dict[str, int]:
    """The AIA instance as the runbook describes it: PostgreSQL, daily backups, PITR on."""
    server.add_instance(instance)
    ids = {
        "day3": server.add_backup(instance, hours_ago=72.0),
        "day2": server.add_backup(instance, hours_ago=48.0),
        "failed": server.add_backup(instance, hours_ago=30.0, status="FAILED",
                                    error="An internal error has occurred."),
        "day1": server.add_backup(instance, hours_ago=24.0),
        "manual": server.add_backup(instance, hours_ago=2.0, kind="ON_DEMAND", description="before v1.5.0"),
    }
    server.add_user(instance, "postgres")
    server.add_user(instance, "aia_app")
    return ids
