"""Cloud SQL procedures: the runbook's "Database Backups", "Database Emergency" and PITR steps.

Long operations (backup, restore, clone) are stored in ``cloud_operations`` and followed
in the thread with backoff; a restarted bot resumes following them (handlers resume rows
whose lease ran out through :func:`resume_followup`). A restore is destructive: it needs
two approvers, binds the backup and the instance's state, and takes a fresh on-demand
backup first so the restore itself can be undone.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.adapters.cloudsql import (
    BackupInfo,
    CloudSqlGateway,
    CloudSqlNotAllowed,
    CloudSqlNotFound,
    InstanceInfo,
    OperationInfo,
    read_or_none,
)
from bot.errors import BackendUnavailable, UserError
from bot.procedures.kube_format import human_bytes
from bot.registry import Param, Plan, Procedure, ProcedureContext, RiskClass
from bot.results import Fields, Result, Status, Table, Text
from bot.store.cloud_operations import CloudOperation, CloudOperationStore
from bot.timeutil import assume_utc
from bot.validators import bounded_int, format_duration, parse_duration

log = logging.getLogger(__name__)
SECTION_BACKUPS = "Backup & Recovery › Database Backups"
SECTION_EMERGENCY = "Database Emergency"
MAX_POLL_SECONDS = 30.0
INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
# Cores (by their database sessions) shutting down: their followers hand the operation back
# at once (another replica or the restarted bot resumes it) instead of holding the shutdown.
_STOPPING: weakref.WeakSet[Any] = weakref.WeakSet()
_ACTIVE: dict[int, int] = {}
_ACTIVE_LOCK = threading.Condition()


def stop_following(sessions: Any, wait_seconds: float = 5.0) -> None:
    """Ask the followers of one core to hand their operations back; wait (bounded) until they have."""
    with _ACTIVE_LOCK:
        _STOPPING.add(sessions)
        _ACTIVE_LOCK.notify_all()
        _ACTIVE_LOCK.wait_for(lambda: _ACTIVE.get(id(sessions), 0) == 0, timeout=wait_seconds)


# -- formatting ----------------------------------------------------------------

def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


def _ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "?"
    return f"{format_duration(((now or datetime.now(UTC)) - moment).total_seconds())} ago"


def _backup_rows(backups: list[BackupInfo]) -> list[list[str]]:
    rows = []
    for b in backups:
        window = f"{_when(b.started)} → {b.ended.strftime('%H:%M') if b.ended else '…'}"
        rows.append([str(b.id), b.type, b.status, window, b.location or "-",
                     (b.error or b.description or "")[:80]])
    return rows


BACKUP_COLUMNS = ["ID", "TYPE", "STATUS", "WINDOW", "LOCATION", "ERROR / DESCRIPTION"]


def _operation_rows(ops: list[OperationInfo]) -> list[list[str]]:
    now = datetime.now(UTC)
    return [[o.type, o.status, _ago(o.inserted, now), o.user or "-", (o.error or "")[:80], o.name[:36]]
            for o in ops]


OPERATION_COLUMNS = ["TYPE", "STATUS", "STARTED", "BY", "ERROR", "OPERATION"]


def console_url(ctx: ProcedureContext, instance: str | None = None) -> str:
    return (f"https://console.cloud.google.com/sql/instances/{instance or ctx.settings.cloudsql_instance}"
            f"/operations?project={ctx.settings.gcp_project}")


def _recent_backups_hint(ctx: ProcedureContext) -> str:
    backups = read_or_none(lambda: ctx.cloudsql.backups(5)) or []
    if not backups:
        return "`/aia db backups` lists them."
    listed = ", ".join(f"`{b.id}` ({b.status.lower()}, {_when(b.taken_at)})" for b in backups)
    return f"Recent backups: {listed}."


# -- reads -----------------------------------------------------------------------

def _pool_metrics(ctx: ProcedureContext) -> list[tuple[str, str]]:
    """The runbook's "Database Performance" metrics, when Prometheus is configured."""
    if not ctx.settings.prometheus_url:
        return []
    ns = f'namespace="{ctx.settings.aia_namespace}"'
    queries = [
        ("Connection pool in use", f"sum(db_pool_connections_in_use{{{ns}}})", ""),
        ("Connection pool size", f"sum(db_pool_connections_total{{{ns}}})", ""),
        ("Pool waiters", f"sum(db_pool_waiting_requests{{{ns}}})", ""),
        ("Query p95", f"histogram_quantile(0.95, sum by (le) (rate(db_query_duration_seconds_bucket{{{ns}}}[5m])))",
         "s"),
        ("Lock waits", f"sum(rate(db_lock_wait_seconds_total{{{ns}}}[5m]))", "s/s"),
    ]
    pairs = []
    for label, query, unit in queries:
        try:
            series = ctx.prometheus.instant(query)
        except BackendUnavailable as exc:
            return [("Prometheus", f"unreachable ({str(exc)[:80]})")]
        if not series:
            pairs.append((label, "no data"))
            continue
        value = float(series[0]["value"][1])
        if unit == "s":
            pairs.append((label, f"{value * 1000:.0f} ms"))
        else:
            pairs.append((label, f"{value:.3g}{(' ' + unit) if unit else ''}"))
    return pairs


def db_status(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    sql = ctx.cloudsql
    inst = sql.instance()
    backups = read_or_none(lambda: sql.backups(5))
    ops = read_or_none(lambda: sql.operations(20))
    running = [o for o in ops or [] if not o.done]
    disk = (f"{human_bytes(inst.disk_used_bytes)} of {inst.disk_limit_gb} GiB" if inst.disk_used_bytes is not None
            and inst.disk_limit_gb else "?")
    pitr = (f"on, logs kept {inst.log_retention_days} days" if inst.pitr_enabled else "*off*")
    pairs = [
        ("State", inst.state), ("Version", inst.database_version), ("Tier", inst.tier),
        ("Region", f"{inst.region} ({inst.zone})"), ("Availability", inst.availability), ("Storage", disk),
        ("Backups", (f"daily at {inst.backup_start_time} UTC, keep {inst.retained_backups}" if inst.backups_enabled
                     else "*automated backups off*")),
        ("Point-in-time recovery", pitr),
    ]
    status = Status.OK if inst.state == "RUNNABLE" else Status.CRITICAL
    parts: list[Any] = [Text(f"`{inst.project}:{inst.name}` · settings version {inst.settings_version}"),
                        Fields(pairs)]
    if backups is None:
        parts.append(Text(":warning: Backups could not be read."))
    else:
        last_ok = next((b for b in backups if b.status == "SUCCESSFUL"), None)
        if backups and backups[0].status == "FAILED":
            status = max(status, Status.WARNING, key=list(Status).index)
        parts.append(Text(f"*Last successful backup:* {f'`{last_ok.id}` {_when(last_ok.taken_at)} ({_ago(last_ok.taken_at)})' if last_ok else 'none'}"))
        parts.append(Table(BACKUP_COLUMNS, _backup_rows(backups), title="Last backups", empty_text="no backups"))
    if ops is None:
        parts.append(Text(":warning: Operations could not be read."))
    else:
        parts.append(Table(OPERATION_COLUMNS, _operation_rows(running), title="Running now",
                           empty_text="no operation running"))
    metrics = _pool_metrics(ctx)
    if metrics:
        parts.append(Fields(metrics))
    return Result(title=f"Cloud SQL · {inst.name}", status=status, parts=parts,
                  summary=f"{inst.name}: {inst.state}, {len(running)} operations running")


def db_backups(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    limit = args.get("count") or 10
    backups = ctx.cloudsql.backups(limit)
    return Result(
        title=f"Backups of {ctx.settings.cloudsql_instance}",
        status=Status.WARNING if backups and backups[0].status == "FAILED" else Status.INFO,
        parts=[Table(BACKUP_COLUMNS, _backup_rows(backups), empty_text="no backups")],
        summary=f"{len(backups)} backups",
    )


def db_operations(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    limit = args.get("count") or 10
    ops = ctx.cloudsql.operations(limit)
    running = sum(1 for o in ops if not o.done)
    return Result(
        title=f"Operations on {ctx.settings.cloudsql_instance}",
        status=Status.WARNING if running else Status.INFO,
        parts=[Table(OPERATION_COLUMNS, _operation_rows(ops), empty_text="no operations"),
               Text(f"{running} running. Console: {console_url(ctx)}")],
        summary=f"{len(ops)} operations, {running} running",
    )


# -- following long operations ---------------------------------------------------------

def _store(ctx: ProcedureContext) -> CloudOperationStore:
    return CloudOperationStore(ctx.audit.sessions)


class _Follow:
    """One follower of one stored row: polls, renews its lease, moves restore phases on."""

    def __init__(self, ctx: ProcedureContext, row: CloudOperation, token: str, resumed: bool) -> None:
        self.ctx, self.row, self.token, self.resumed = ctx, row, token, resumed
        self.store = _store(ctx)
        self.sql: CloudSqlGateway = ctx.cloudsql
        self.state = row.state_data()
        self.request = row.request_data()
        self.phase = row.phase
        self.operation = row.operation
        self.phase_started = time.monotonic()

    # What the thread shows.
    def _progress(self, op: OperationInfo | None, status: Status, headline: str, note: str = "") -> Result:
        pairs = [("Phase", self.phase), ("Operation", f"`{self.operation}`" if self.operation else "-")]
        if op is not None:
            pairs.append(("Status", op.status))
        pairs.append(("Elapsed", format_duration(time.monotonic() - self.phase_started)))
        if self.state.get("backup_id"):
            pairs.append(("Backup id", f"`{self.state['backup_id']}`"))
        if self.state.get("safety_backup"):
            pairs.append(("Safety backup", f"`{self.state['safety_backup']}`"))
        if self.resumed:
            pairs.append(("Followed by", "a restarted bot (resumed)"))
        # The headline goes last: the console and notifications show the last line.
        parts: list[Any] = [Fields(pairs), Text(f"{note}\n{headline}" if note else headline)]
        return Result(title=f"Cloud SQL {self.row.kind} · {self.row.instance}", status=status, parts=parts,
                      summary=f"{note} {headline}" if note else headline)

    def _finish(self, status: str, result: Result) -> Result:
        self.store.finish(self.row.id, self.token, status, result.summary)
        self.ctx.audit.append(_audit_record(self.row, status, result.summary))
        return result

    def run(self) -> Iterator[Result]:
        key = id(self.ctx.audit.sessions)
        with _ACTIVE_LOCK:
            _ACTIVE[key] = _ACTIVE.get(key, 0) + 1
        try:
            yield from self._run()
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE[key] -= 1
                _ACTIVE_LOCK.notify_all()

    def _stopping(self, seconds: float) -> bool:
        """Sleep between polls; True as soon as this core shuts down."""
        sessions = self.ctx.audit.sessions
        with _ACTIVE_LOCK:
            return _ACTIVE_LOCK.wait_for(lambda: sessions in _STOPPING, timeout=seconds)

    def _run(self) -> Iterator[Result]:
        settings = self.ctx.settings
        poll = settings.cloudsql_poll_seconds
        cap = min(MAX_POLL_SECONDS, settings.cloudsql_operation_lease_seconds / 3)
        timeout = settings.cloudsql_operation_timeout_seconds
        while True:
            if self.phase == "restore-starting":
                started = self._start_restore()
                if isinstance(started, Result):
                    yield started
                    return
                poll = settings.cloudsql_poll_seconds
            try:
                op = self.sql.operation(self.operation or "")
                unreachable = ""
            except CloudSqlNotAllowed as exc:
                yield self._finish("failed", self._progress(None, Status.CRITICAL, (
                    f":x: {exc} Stopped following; operation `{self.operation}` may still be running: "
                    f"check it in the console ({console_url(self.ctx, self.row.instance)}).")))
                return
            except (BackendUnavailable, UserError) as exc:
                op, unreachable = None, f":warning: {exc} Still trying."
            if op is not None and op.done:
                outcome = self._done(op)
                if outcome is not None:
                    yield outcome
                    return
                continue  # a restore's safety backup is done: the restore itself starts now
            if time.monotonic() - self.phase_started > timeout:
                yield self._finish("timeout", self._progress(op, Status.CRITICAL, (
                    f":hourglass: Stopped following `{self.operation}` after {format_duration(timeout)}: it may still be "
                    f"running. Check it in the console ({console_url(self.ctx, self.row.instance)}) or with "
                    f"`gcloud sql operations describe {self.operation} --project {self.row.project}`.")))
                return
            elapsed = format_duration(time.monotonic() - self.phase_started)
            headline = f":gear: {self._doing()} ({op.status.lower() if op else 'status unknown'}, {elapsed})"
            yield self._progress(op, Status.INFO, headline, unreachable)
            if not self.store.renew(self.row.id, self.token, settings.cloudsql_operation_lease_seconds):
                log.info("cloud operation %s is followed elsewhere now; stopping here", self.row.id)
                return
            if self._stopping(poll):
                self.store.release(self.row.id, self.token)
                log.info("shutting down: cloud operation %s is left for the next replica to follow", self.row.id)
                return
            poll = min(cap, poll * 1.5)

    def _doing(self) -> str:
        instance = f"`{self.row.instance}`"
        if self.row.kind == "backup":
            return f"Backing up {instance}"
        if self.row.kind == "clone":
            return f"Cloning {instance} at {self.request.get('at')} into `{self.request.get('name')}`"
        if self.phase == "safety-backup":
            return f"Safety backup of {instance} before the restore"
        return f"Restoring {instance} from backup `{self.request.get('backup_id')}`"

    def _done(self, op: OperationInfo) -> Result | None:
        kind, instance = self.row.kind, self.row.instance
        if op.error:
            if kind == "restore" and self.phase == "safety-backup":
                text = (f":x: The safety backup failed ({op.error}), so *nothing was restored*. "
                        f"`{instance}` is unchanged. Check the backup configuration, then request the restore again.")
            elif kind == "restore":
                text = (f":x: The restore from backup `{self.request.get('backup_id')}` failed: {op.error}. "
                        f"Safety backup `{self.state.get('safety_backup')}` holds the state from before. "
                        f"Check the instance in the console: {console_url(self.ctx, instance)}")
            else:
                text = f":x: Cloud SQL {kind} failed: {op.error}"
            return self._finish("failed", self._progress(op, Status.CRITICAL, text))
        if kind == "backup":
            return self._finish("done", self._progress(op, Status.OK, (
                f":white_check_mark: Backup `{self.state.get('backup_id')}` of `{instance}` is done "
                f"({format_duration(time.monotonic() - self.phase_started)}).")))
        if kind == "clone":
            return self._finish("done", self._progress(op, Status.OK, (
                f":white_check_mark: `{self.request.get('name')}` is a new instance with the data of `{instance}` as of "
                f"{self.request.get('at')}. `{instance}` was not touched. Delete the clone when done (it costs money).")))
        if self.phase == "safety-backup":
            self.phase = "restore-starting"
            self.store.renew(self.row.id, self.token, self.ctx.settings.cloudsql_operation_lease_seconds,
                             phase=self.phase, state=self.state)
            return None
        return self._finish("done", self._progress(op, Status.OK, (
            f":white_check_mark: `{instance}` is restored from backup `{self.request.get('backup_id')}` "
            f"({self.request.get('backup_time')}). Everything written after that is gone from it. "
            f"Safety backup `{self.state.get('safety_backup')}` holds the data from right before the restore: "
            f"`/aia db restore {self.state.get('safety_backup')}` undoes it.")))

    def _start_restore(self) -> Result | None:
        """Start the restore after the safety backup, once; a resumed follower adopts one already started."""
        backup_id = int(self.request["backup_id"])
        marker = self.state.get("restore_requested_at")
        if marker:
            since = datetime.fromisoformat(marker)
            for op in read_or_none(lambda: self.sql.operations(20)) or []:
                if op.type == "RESTORE_VOLUME" and op.inserted and op.inserted >= since - timedelta(seconds=5):
                    self._adopt(op)
                    return None
        self.state["restore_requested_at"] = datetime.now(UTC).isoformat()
        self.store.renew(self.row.id, self.token, self.ctx.settings.cloudsql_operation_lease_seconds,
                         state=self.state)
        try:
            op = self.sql.restore(backup_id)
        except (UserError, BackendUnavailable) as exc:
            return self._finish("failed", self._progress(None, Status.CRITICAL, (
                f":x: Could not start the restore: {exc} Nothing was restored. Safety backup "
                f"`{self.state.get('safety_backup')}` was taken.")))
        self._adopt(op)
        return None

    def _adopt(self, op: OperationInfo) -> None:
        self.phase, self.operation = "restore", op.name
        self.phase_started = time.monotonic()
        self.store.renew(self.row.id, self.token, self.ctx.settings.cloudsql_operation_lease_seconds,
                         phase=self.phase, operation=op.name, state=self.state)


def _audit_record(row: CloudOperation, outcome: str, detail: str) -> Any:
    from bot.store.audit import AuditRecord

    return AuditRecord(actor=row.requested_by, action=f"db {row.kind}", outcome=outcome,
                       arguments=row.request, detail=f"operation {row.id} ({row.operation}): {detail}"[:4000],
                       channel_id=row.channel_id, risk="destructive" if row.kind == "restore" else "write")


def resume_followup(ctx: ProcedureContext, row: CloudOperation, token: str) -> Iterator[Result]:
    """Follow a stored operation a dead process left behind (called by the handlers' resumer)."""
    return _Follow(ctx, row, token, resumed=True).run()


def _start(ctx: ProcedureContext, kind: str, op: OperationInfo, phase: str, request: dict[str, Any],
           state: dict[str, Any], command: str) -> tuple[CloudOperation, str]:
    return _store(ctx).create(
        kind=kind, project=ctx.settings.gcp_project, instance=ctx.settings.cloudsql_instance, operation=op.name,
        phase=phase, request=request, state=state, requested_by=ctx.caller.user_id, command=command,
        channel_id=ctx.caller.channel_id, lease_seconds=ctx.settings.cloudsql_operation_lease_seconds)


def _followed(ctx: ProcedureContext, result: Result, row: CloudOperation, token: str) -> Result:
    result.followup = lambda: _Follow(ctx, row, token, resumed=False).run()
    result.resume_key = row.id
    return result


# -- write: backup -----------------------------------------------------------------------

def db_backup(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    description = args.get("description") or f"aia-bot on-demand backup by {ctx.caller.user_id}"
    op = ctx.cloudsql.start_backup(description)
    row, token = _start(ctx, "backup", op, "backup", {"description": description},
                        {"backup_id": op.backup_id}, "db backup")
    return _followed(ctx, Result(
        title=f"Backup of {ctx.settings.cloudsql_instance} started",
        status=Status.INFO,
        parts=[Text(f"On-demand backup `{op.backup_id or '?'}` started (operation `{op.name}`): {description}. "
                    "Progress follows in this thread.")],
        summary=f"backup {op.backup_id} started (operation {op.name})",
    ), row, token)


# -- destructive: restore -------------------------------------------------------------------

def _busy(ctx: ProcedureContext) -> list[OperationInfo]:
    return [o for o in ctx.cloudsql.operations(20) if not o.done]


def _restorable(ctx: ProcedureContext, backup_id: int) -> tuple[InstanceInfo, BackupInfo]:
    sql = ctx.cloudsql
    try:
        backup = sql.backup(backup_id)
    except CloudSqlNotFound:
        raise UserError(f"`{ctx.settings.cloudsql_instance}` has no backup `{backup_id}`. "
                        + _recent_backups_hint(ctx), "Usage: `/aia db restore BACKUP_ID`") from None
    if backup.status != "SUCCESSFUL":
        raise UserError(f"Backup `{backup_id}` is {backup.status}, not SUCCESSFUL, so it cannot be restored. "
                        + _recent_backups_hint(ctx))
    inst = sql.instance()
    if inst.state != "RUNNABLE":
        raise UserError(f"`{inst.name}` is {inst.state}, not RUNNABLE: Cloud SQL would refuse the restore. "
                        "Wait until `/aia db status` shows RUNNABLE.")
    running = _busy(ctx)
    if running:
        raise UserError(f"`{inst.name}` is busy: {', '.join(f'{o.type} ({o.status.lower()})' for o in running)}. "
                        "Cloud SQL runs one operation at a time; wait for it (`/aia db operations`).")
    return inst, backup


def plan_restore(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    backup_id = args["backup_id"]
    inst, backup = _restorable(ctx, backup_id)
    newest = ctx.cloudsql.backups(1)
    taken = _when(backup.taken_at)
    preview = "\n".join([
        f"restore  backup {backup.id} ({backup.type.lower()}, taken {taken}, {_ago(backup.taken_at)})",
        f"over     {inst.project}:{inst.name} ({inst.database_version}, {inst.tier}, {inst.state})",
        f"LOST     everything written to {inst.name} since {taken}",
        "first    an on-demand backup of the current data (named in the thread), so this can be undone",
        "during   the instance is unavailable (Cloud SQL: several minutes)",
    ])
    return Plan(
        target_key=f"cloudsql/{inst.project}/{inst.name}",
        snapshot={"backup_id": backup.id, "backup_status": backup.status, "backup_time": taken,
                  "instance_state": inst.state, "settings_version": inst.settings_version,
                  "newest_backup": newest[0].id if newest else None},
        preview=preview,
        summary=f"Restore `{inst.name}` from backup {backup.id} taken {taken}",
        warning=(f"Everything written to the database since {taken} ({_ago(backup.taken_at)}) is lost. "
                 "The bot takes an on-demand backup first, so the restore itself can be undone."),
    )


def execute_restore(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    backup_id = args["backup_id"]
    op = ctx.cloudsql.start_backup(f"aia-bot safety backup before restoring backup {backup_id} "
                                   f"(requested by {ctx.caller.user_id})")
    request = {"backup_id": backup_id, "backup_time": plan.snapshot.get("backup_time")}
    row, token = _start(ctx, "restore", op, "safety-backup", request, {"safety_backup": op.backup_id},
                        f"db restore {backup_id}")
    return _followed(ctx, Result(
        title=f"Restoring {ctx.settings.cloudsql_instance} from backup {backup_id}",
        status=Status.WARNING,
        parts=[Text(f"Step 1: safety backup `{op.backup_id}` of the current data (operation `{op.name}`). "
                    f"Step 2, when it is done: restore backup `{backup_id}` ({plan.snapshot.get('backup_time')}). "
                    "Progress follows in this thread.")],
        summary=f"safety backup {op.backup_id} started; restore of backup {backup_id} follows",
    ), row, token)


# -- write: point-in-time clone ------------------------------------------------------------------

# Further back than any backup's retention, and short of datetime's lower bound.
_CENTURY_SECONDS = 100 * 365 * 86400


def point_in_time(text: str) -> datetime:
    """ISO 8601 (``2026-11-30T14:05Z``, ``2026-11-30 14:05`` is UTC) or ``30m ago`` / ``2h ago``."""
    relative = text.strip().lower().removesuffix("ago").replace("min", "m")
    try:
        seconds = parse_duration(relative)
    except ValueError:
        seconds = 0.0  # not a relative time: perhaps an ISO one
    if 0 < seconds < _CENTURY_SECONDS:
        return (datetime.now(UTC) - timedelta(seconds=seconds)).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("give a time as 2026-11-30T14:05:00Z (UTC), with an offset, or as `30m ago`") from None
    return assume_utc(moment)


def instance_name(text: str) -> str:
    if not INSTANCE_NAME.match(text):
        raise ValueError("a Cloud SQL instance name is lowercase letters, digits and '-', starts with a letter, "
                         "at most 63 characters")
    return text


def db_clone(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    sql = ctx.cloudsql
    moment: datetime = args["at"]
    inst = sql.instance()
    if not inst.pitr_enabled:
        raise UserError(f"Point-in-time recovery is off for `{inst.name}`, so there is no moment to clone from. "
                        "Enable it in the instance's backup settings, or restore a backup instead "
                        "(`/aia db backups`).")
    window = sql.recovery_window()
    if not window.earliest <= moment <= window.latest:
        raise UserError(f"{_when(moment)} is outside the retained window of `{inst.name}`: "
                        f"{_when(window.earliest)} to {_when(window.latest)}.",
                        "Usage: `/aia db clone --at TIME [--name NEW]`, TIME inside that window")
    name = args.get("name") or f"{inst.name}-pitr-{moment:%Y%m%d-%H%M}"
    instance_name(name)
    if name == inst.name:
        raise UserError("The clone needs a new name; it never replaces the production instance.")
    at = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    op = sql.clone(name, moment)
    row, token = _start(ctx, "clone", op, "clone", {"at": at, "name": name}, {}, f"db clone --at {at} --name {name}")
    return _followed(ctx, Result(
        title=f"Cloning {inst.name} at {at}",
        status=Status.INFO,
        parts=[Text(f"New instance `{name}` with the data of `{inst.name}` as of {at} (operation `{op.name}`). "
                    f"`{inst.name}` is not touched. Progress follows in this thread.")],
        summary=f"clone {name} at {at} started (operation {op.name})",
    ), row, token)


# -- declarations ------------------------------------------------------------------------------

def _description(text: str) -> str:
    value = text.strip()
    if not value or len(value) > 200 or any(ord(c) < 32 for c in value):
        raise ValueError("a description is 1 to 200 printable characters")
    return value


def _backup_id(text: str) -> int:
    if not text.isdigit() or len(text) > 19:
        raise ValueError("a backup id is the number `/aia db backups` shows, e.g. 1764558000000")
    return int(text)


def _run_restore(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    return execute_restore(ctx, args, plan_restore(ctx, args))


PROCEDURES = [
    Procedure(
        name="db status", summary="Cloud SQL instance: state, backups, PITR, running operations, pool metrics",
        kube=(),  # the Cloud SQL Admin API only, never Kubernetes
        risk=RiskClass.READ, runbook=(SECTION_EMERGENCY + " › Check database status",), run=db_status,
    ),
    Procedure(
        name="db backups", summary="Backup runs of the Cloud SQL instance (id, type, status, window, error)",
        kube=(),  # the Cloud SQL Admin API only, never Kubernetes
        risk=RiskClass.READ, runbook=(SECTION_BACKUPS + " › List backups",), run=db_backups,
        params=(Param("count", "positional", "how many (default 10)", metavar="N", convert=bounded_int(1, 100)),),
        examples=("/aia db backups 20",),
    ),
    Procedure(
        name="db operations", summary="Recent and running Cloud SQL operations on the instance",
        kube=(),  # the Cloud SQL Admin API only, never Kubernetes
        risk=RiskClass.READ, runbook=(SECTION_EMERGENCY + " › Check database status",), run=db_operations,
        params=(Param("count", "positional", "how many (default 10)", metavar="N", convert=bounded_int(1, 100)),),
    ),
    Procedure(
        name="db backup", summary="On-demand Cloud SQL backup, progress in the thread", risk=RiskClass.WRITE,
        kube=(),  # the Cloud SQL Admin API only, never Kubernetes
        runbook=(SECTION_BACKUPS + " › Create manual backup",), run=db_backup,
        params=(Param("description", "option", "what the backup is for", metavar="TEXT", convert=_description),),
        examples=('/aia db backup --description "before v1.5.0"',),
    ),
    Procedure(
        name="db restore", summary="Restore a backup over the instance (safety backup first; two approvers)",
        kube=(),  # the Cloud SQL Admin API only, never Kubernetes
        risk=RiskClass.DESTRUCTIVE,
        runbook=(SECTION_BACKUPS + " › Restore from backup", SECTION_EMERGENCY + " › Restore from backup if needed"),
        run=_run_restore, plan=plan_restore, execute=execute_restore, approvals=2,
        params=(Param("backup_id", "positional", "backup id from `/aia db backups`", metavar="BACKUP_ID",
                      required=True, convert=_backup_id),),
        notes="Everything written since the backup is lost; the bot takes an on-demand backup first.",
        examples=("/aia db restore 1764558000000",),
    ),
    Procedure(
        name="db clone", summary="Point-in-time recovery into a NEW instance (production untouched)",
        kube=(),  # the Cloud SQL Admin API only, never Kubernetes
        risk=RiskClass.WRITE, runbook=(SECTION_EMERGENCY + " › Restore from backup if needed",), run=db_clone,
        params=(Param("at", "option", "the moment, UTC (2026-11-30T14:05:00Z) or `30m ago`", metavar="TIME",
                      required=True, convert=point_in_time),
                Param("name", "option", "name of the new instance", metavar="NEW", convert=instance_name)),
        examples=("/aia db clone --at 2026-11-30T14:05:00Z", "/aia db clone --at '30m ago' --name aia-before-bug"),
    ),
]
