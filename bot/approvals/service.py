"""Approval requests: request, decide, execute at most once.

Every replica may receive any click, so nothing here trusts memory: each
decision is made inside a transaction that locks the request's row (SELECT ...
FOR UPDATE on PostgreSQL; a process lock on single-replica SQLite), and execution
first claims the row by moving it from ``approved`` to ``executing`` with a fresh
token. Only the one transaction that wins that move runs the procedure.
"""

from __future__ import annotations

import json
import logging
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot.adapters.slack import SlackUser
from bot.context import Backends, Caller
from bot.errors import BackendUnavailable, UserError
from bot.events import BreakGlassUsed, EventBus
from bot.mrkdwn import escape_mrkdwn
from bot.registry import Plan, Procedure, ProcedureContext, Registry
from bot.results import Result
from bot.roles import Role, RoleResolver
from bot.settings import Settings
from bot.store.audit import AuditLog, AuditRecord
from bot.store.models import ApprovalRequest
from bot.timeutil import assume_utc

log = logging.getLogger(__name__)



class ApprovalStatus(StrEnum):
    """``approval_requests.status``: the stored strings are these values."""

    PENDING = "pending"
    APPROVED = "approved"
    EXECUTING = "executing"
    EXECUTED = "executed"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    STALE = "stale"
    FAILED = "failed"


OPEN = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED, ApprovalStatus.EXECUTING)
FINAL = (ApprovalStatus.DENIED, ApprovalStatus.CANCELLED, ApprovalStatus.EXPIRED, ApprovalStatus.STALE,
         ApprovalStatus.EXECUTED, ApprovalStatus.FAILED)

Directory = Callable[[str], SlackUser | None]


class ApprovalStoreUnavailable(Exception):
    """The database could not be reached: refuse, never run."""


@dataclass(frozen=True)
class ApprovalView:
    """A request as the card shows it."""

    id: str
    procedure: str
    command: str
    summary: str
    preview: str
    warning: str | None
    requester_id: str
    status: ApprovalStatus
    created_at: datetime
    expires_at: datetime
    required_approvals: int
    approvals: list[dict[str, str]]
    decided_by: str | None
    result: str | None
    channel_id: str | None
    message_ts: str | None
    break_glass_reason: str | None = None


@dataclass
class Decision:
    """What a click did: the message for the clicker, the card to show, what ran."""

    view: ApprovalView | None
    message: str
    accepted: bool
    executed: Result | None = None
    card_changed: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


def same_person_key(email: str | None) -> str:
    """The form two profile emails are compared in: NFKC, case-folded, ``+tag`` dropped.

    ``Alice+ops@X.example`` and ``alice@x.example`` are one mailbox, so one person:
    a plus-addressed second account must not approve its owner's request. Full-width
    and other compatibility characters fold to their plain forms (NFKC) first.
    Empty for no email (then the rule refuses: people must be told apart).
    """
    if not email:
        return ""
    folded = unicodedata.normalize("NFKC", email).casefold().strip()
    local, at, domain = folded.rpartition("@")
    if not at:
        return folded
    return f"{local.split('+', 1)[0]}@{domain}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _view(row: ApprovalRequest) -> ApprovalView:
    snapshot = json.loads(row.snapshot or "{}")
    return ApprovalView(
        id=row.id,
        procedure=row.procedure,
        command=row.command,
        summary=snapshot.get("_summary", row.procedure),
        preview=row.preview,
        warning=snapshot.get("_warning"),
        requester_id=row.requester_id,
        status=ApprovalStatus(row.status),
        created_at=assume_utc(row.created_at) or _now(),
        expires_at=assume_utc(row.expires_at) or _now(),
        required_approvals=row.required_approvals,
        approvals=json.loads(row.approvals or "[]"),
        decided_by=row.decided_by,
        result=row.result,
        channel_id=row.channel_id,
        message_ts=row.message_ts,
        break_glass_reason=row.break_glass_reason,
    )


class ApprovalService:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        registry: Registry,
        backends: Backends,
        audit: AuditLog,
        roles: RoleResolver,
        directory: Directory | None,
        events: EventBus,
        required_overrides: dict[str, int] | None = None,
        team_id: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``team_id``: the workspace this bot serves (the Slack entry points learn it from
        auth.test); clicks and approvers from elsewhere are refused. None: not checked."""
        self.settings = settings
        self.sessions = sessions
        self.registry = registry
        self.backends = backends
        self.audit = audit
        self.roles = roles
        self.directory = directory
        self.events = events
        self.required_overrides = required_overrides or {}
        self._sqlite_lock = threading.Lock()
        # Audit records of the decision in progress, per worker thread.
        self._local = threading.local()
        self.team_id = team_id

    # -- helpers ----------------------------------------------------------------
    def _ctx(self, caller: Caller, role: Role | None) -> ProcedureContext:
        return ProcedureContext(self.settings, self.backends, self.registry, self.audit, caller, role)

    def _audit(self, actor: str, action: str, outcome: str, detail: str, caller: Caller | None = None,
               arguments: str = "") -> None:
        self.audit.append(AuditRecord(actor=actor, action=action, outcome=outcome, detail=detail,
                                      arguments=arguments, team_id=caller.team_id if caller else None,
                                      channel_id=caller.channel_id if caller else None, risk="destructive"))

    def _locked(self) -> Any:
        """A transaction in which the selected request row is ours alone."""
        if self.sessions.kw.get("bind") is not None and self.sessions.kw["bind"].dialect.name == "sqlite":
            return _SqliteTransaction(self.sessions, self._sqlite_lock)
        return _Transaction(self.sessions)

    def _profile(self, user_id: str) -> SlackUser | None:
        """users.info, or None when Slack cannot say (then the rule refuses, never guesses)."""
        if self.directory is None:
            return None
        try:
            return self.directory(user_id)
        except Exception as exc:  # noqa: BLE001 - any Slack failure means "unknown person"
            log.warning("users.info for %s failed: %s", user_id, type(exc).__name__)
            return None

    def required_for(self, proc: Procedure) -> int:
        return max(1, proc.approvals, int(self.required_overrides.get(proc.name, 1)))

    # -- request ------------------------------------------------------------------
    def request(self, proc: Procedure, args: dict[str, Any], command: str, caller: Caller, role: Role | None,
                ) -> ApprovalView:
        assert proc.plan is not None, f"{proc.name} has no plan"
        plan = proc.plan(self._ctx(caller, role), args)
        requester = self._profile(caller.user_id)
        if self.directory is not None and (requester is None or not requester.email):
            # Without the requester's email, no approver could be told apart from them.
            raise UserError("Could not read your Slack profile email, so no second person could be checked "
                            "against you; nothing was requested. Try again in a minute.")
        now = _now()
        snapshot = {**plan.snapshot, "_summary": plan.summary, "_warning": plan.warning}
        row = ApprovalRequest(
            id=uuid.uuid4().hex[:12],
            procedure=proc.name,
            arguments=_canonical(args),
            command=command,
            target_key=plan.target_key,
            snapshot=_canonical(snapshot),
            preview=plan.preview[:20000],
            requester_id=caller.user_id,
            requester_email=(same_person_key(requester.email) or None) if requester else None,
            team_id=caller.team_id,
            channel_id=None,
            message_ts=None,
            status=ApprovalStatus.PENDING,
            required_approvals=self.required_for(proc),
            approvals="[]",
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.aia_approval_ttl_seconds),
        )
        try:
            with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            existing = self._open_for_target(plan.target_key)
            raise UserError(
                f"`{plan.target_key}` already has an open request"
                + (f" (`{existing.id}`, {existing.status}, by <@{existing.requester_id}>)" if existing else "")
                + ". Decide or cancel it first."
            ) from None
        self._audit(caller.user_id, proc.name, "requested",
                    f"request {row.id}: {plan.summary}; snapshot {_canonical(plan.snapshot)}", caller,
                    arguments=row.arguments)
        return _view(row)

    def _open_for_target(self, target_key: str) -> ApprovalRequest | None:
        with self.sessions() as session:
            return session.execute(
                select(ApprovalRequest).where(ApprovalRequest.target_key == target_key,
                                              ApprovalRequest.status.in_(OPEN))
            ).scalars().first()

    def attach_card(self, request_id: str, channel_id: str, message_ts: str) -> None:
        with self.sessions.begin() as session:
            session.execute(update(ApprovalRequest).where(ApprovalRequest.id == request_id)
                            .values(channel_id=channel_id, message_ts=message_ts))

    def abandon(self, request_id: str, why: str) -> None:
        """The card could not be posted: free the target instead of blocking it for 15 minutes."""
        with self.sessions.begin() as session:
            session.execute(update(ApprovalRequest).where(ApprovalRequest.id == request_id,
                                                          ApprovalRequest.status == ApprovalStatus.PENDING)
                            .values(status=ApprovalStatus.FAILED, result=why, decided_at=_now()))

    def get(self, request_id: str) -> ApprovalView | None:
        with self.sessions() as session:
            row = session.get(ApprovalRequest, request_id)
            return _view(row) if row else None

    # -- decisions ----------------------------------------------------------------
    def decide(self, request_id: str, decision: str, clicker: Caller, message_ts: str | None) -> Decision:
        """Approve, deny or cancel. Raises ApprovalStoreUnavailable when the database is down."""
        self._local.queued = []
        try:
            outcome = self._decide(request_id, decision, clicker, message_ts)
            # Written after the row's transaction: SQLite cannot write from a read
            # snapshot another connection has overtaken, and the lock is held shorter.
            for record in self._local.queued:
                self.audit.append(record)
        except SQLAlchemyError as exc:
            log.error("approval store unreachable while deciding %s: %s", request_id, type(exc).__name__)
            raise ApprovalStoreUnavailable(str(type(exc).__name__)) from None
        if outcome.accepted and outcome.view is not None and outcome.view.status == ApprovalStatus.APPROVED:
            outcome.executed = self.execute(request_id)
            outcome.view = self.get(request_id)
            outcome.card_changed = True
        return outcome

    def _queue(self, actor: str, action: str, outcome: str, detail: str, caller: Caller) -> None:
        self._local.queued.append(AuditRecord(actor=actor, action=action, outcome=outcome, detail=detail,
                                        team_id=caller.team_id, channel_id=caller.channel_id, risk="destructive"))

    def _refuse(self, clicker: Caller, request_id: str, decision: str, why: str,
                view: ApprovalView | None = None) -> Decision:
        self._queue(clicker.user_id, f"approval.{decision}", "refused", f"request {request_id}: {why}", clicker)
        return Decision(view=view, message=why, accepted=False)

    def _decide(self, request_id: str, decision: str, clicker: Caller, message_ts: str | None) -> Decision:
        if decision not in ("approve", "deny", "cancel"):
            return self._refuse(clicker, request_id, decision, "Unknown decision.")
        team_id = self.team_id()
        if team_id and clicker.team_id != team_id:
            return self._refuse(clicker, request_id, decision, "This request belongs to another workspace.")
        # Read fresh, not from the group cache: losing the role must count at once.
        role = self.roles.role_of(clicker.user_id, fresh=True)
        person = self._profile(clicker.user_id) if decision == "approve" else None
        with self._locked() as session:
            row = session.execute(
                select(ApprovalRequest).where(ApprovalRequest.id == request_id).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                return self._refuse(clicker, request_id, decision, "There is no such request.")
            view = _view(row)
            if row.channel_id is None or clicker.channel_id != row.channel_id or (
                message_ts is not None and message_ts != row.message_ts
            ):
                return self._refuse(clicker, request_id, decision,
                                    "Decide on the request's own card, in its channel.", view)
            if row.status != ApprovalStatus.PENDING:
                return self._refuse(clicker, request_id, decision, f"This request is already {row.status}.", view)
            if _now() > (assume_utc(row.expires_at) or _now()):
                row.status, row.decided_at = ApprovalStatus.EXPIRED, _now()
                self._queue("system", row.procedure, "expired", f"request {row.id} expired", clicker)
                return Decision(view=_view(row), message="This request has expired; nothing was run.",
                                accepted=False, card_changed=True)
            problem = self._may_decide(row, decision, clicker, role, person)
            if problem:
                return self._refuse(clicker, request_id, decision, problem, view)
            now = _now()
            if decision == "cancel":
                row.status, row.decided_at, row.decided_by = ApprovalStatus.CANCELLED, now, clicker.user_id
                message = "Cancelled; nothing was run."
            elif decision == "deny":
                row.status, row.decided_at, row.decided_by = ApprovalStatus.DENIED, now, clicker.user_id
                message = "Denied; nothing was run."
            else:
                approvals = json.loads(row.approvals or "[]")
                approvals.append({"user": clicker.user_id, "email": same_person_key(person.email) if person else "",
                                  "at": now.isoformat()})
                row.approvals = _canonical(approvals)
                if len(approvals) >= row.required_approvals:
                    row.status, row.decided_at, row.decided_by = ApprovalStatus.APPROVED, now, clicker.user_id
                    message = "Approved; running it now."
                else:
                    message = f"Approval {len(approvals)} of {row.required_approvals} recorded."
            self._queue(clicker.user_id, f"approval.{decision}", "ok",
                        f"request {row.id} ({row.procedure}): {message}", clicker)
            return Decision(view=_view(row), message=message, accepted=True, card_changed=True)

    def _may_decide(self, row: ApprovalRequest, decision: str, clicker: Caller, role: Role | None,
                    person: SlackUser | None) -> str | None:
        if decision == "cancel":
            return None if clicker.user_id == row.requester_id else "Only the requester can cancel."
        if clicker.user_id == row.requester_id:
            return "You cannot decide your own request; another approver must." + (
                " Use Cancel to withdraw it." if decision == "deny" else "")
        if role is None or role < Role.APPROVER:
            return "Only approvers can decide this request."
        if decision == "deny":
            return None
        if person is None:
            return "Could not read your Slack profile; nothing was approved."
        if person.deleted or person.is_bot:
            return "Deactivated users and bots cannot approve."
        if person.is_restricted or person.is_ultra_restricted:
            return "Guests cannot approve."
        team_id = self.team_id()
        if team_id and person.team_id and person.team_id != team_id:
            return "Approvers must belong to this workspace."
        email = same_person_key(person.email)
        if not email or not row.requester_email:
            return "Approver and requester both need a profile email, so they can be told apart."
        # Requests stored before plus-addresses were folded hold the plain lower-cased email.
        if email == same_person_key(row.requester_email):
            return ("Your profile email is the requester's (compared without case, +tags and look-alike "
                    "characters): the second person must be someone else.")
        previous = json.loads(row.approvals or "[]")
        if any(a.get("user") == clicker.user_id or (a.get("email") and same_person_key(a.get("email")) == email)
               for a in previous):
            return "You have already approved this request."
        return None

    # -- execution ------------------------------------------------------------------
    def execute(self, request_id: str) -> Result | None:
        """Claim an approved request and run it once; None when someone else has it."""
        token = uuid.uuid4().hex
        with self.sessions.begin() as session:
            cursor: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(ApprovalRequest)
                .where(ApprovalRequest.id == request_id, ApprovalRequest.status == ApprovalStatus.APPROVED)
                .values(status=ApprovalStatus.EXECUTING, claim_token=token, executed_at=_now())
            )
            claimed = cursor.rowcount
        if claimed != 1:
            return None
        with self.sessions() as session:
            row = session.get(ApprovalRequest, request_id)
            assert row is not None
            session.expunge(row)
        return self._run_claimed(row, token)

    def _run_claimed(self, row: ApprovalRequest, token: str) -> Result | None:
        proc = self.registry.get(row.procedure)
        requester = Caller(user_id=row.requester_id, team_id=row.team_id, channel_id=row.channel_id)
        args = json.loads(row.arguments)
        stored = json.loads(row.snapshot)
        stored_snapshot = {k: v for k, v in stored.items() if not k.startswith("_")}
        if proc is None or proc.plan is None or proc.execute is None:
            return self._finish(row, token, ApprovalStatus.FAILED, f"procedure {row.procedure} is not available", None)
        # The requester's role is read again, fresh: someone removed from the operators
        # between request and approval gets nothing run in their name.
        requester_role = self.roles.role_of(row.requester_id, fresh=True)
        needed = proc.role_for(args)
        if requester_role is None or requester_role < needed:
            return self._finish(row, token, ApprovalStatus.FAILED,
                                f"The requester <@{row.requester_id}> no longer holds the {needed.label} role; "
                                "nothing was run.", None)
        ctx = self._ctx(requester, requester_role)
        try:
            plan: Plan = proc.plan(ctx, args)
        except (UserError, BackendUnavailable) as exc:
            return self._finish(row, token, ApprovalStatus.STALE, f"Could not re-read the target: {exc}", None)
        if _canonical(plan.snapshot) != _canonical(stored_snapshot):
            changed = sorted(k for k in set(plan.snapshot) | set(stored_snapshot)
                             if _canonical(plan.snapshot.get(k)) != _canonical(stored_snapshot.get(k)))
            return self._finish(row, token, ApprovalStatus.STALE,
                                f"The target changed since the request ({', '.join(changed)}); nothing was run. "
                                "Request it again.", None)
        try:
            # Audit first: if the intent cannot be recorded, nothing runs.
            self._audit(row.requester_id, row.procedure, "intent",
                        f"request {row.id}: about to run; approved by {row.decided_by}",
                        Caller(row.requester_id, row.team_id, row.channel_id), arguments=row.arguments)
        except Exception:  # noqa: BLE001 - no record, no run
            log.exception("could not audit the intent of request %s; not running it", row.id)
            return self._finish(row, token, ApprovalStatus.FAILED, "The audit log could not be written, so nothing was run.",
                                None, audit=False)
        try:
            result = proc.execute(ctx, args, plan)
        except (UserError, BackendUnavailable) as exc:
            return self._finish(row, token, ApprovalStatus.FAILED, f"Execution failed: {exc}", None)
        except Exception:  # noqa: BLE001 - recorded as failed; the traceback goes to our log only
            log.exception("executing approved request %s failed", row.id)
            return self._finish(row, token, ApprovalStatus.FAILED, "Execution failed inside the bot; see its log.", None)
        return self._finish(row, token, ApprovalStatus.EXECUTED, result.summary or result.title, result)

    def _finish(self, row: ApprovalRequest, token: str, status: ApprovalStatus, text: str, result: Result | None,
                audit: bool = True) -> Result | None:
        with self.sessions.begin() as session:
            session.execute(update(ApprovalRequest)
                            .where(ApprovalRequest.id == row.id, ApprovalRequest.claim_token == token)
                            .values(status=status, result=text[:4000]))
        if not audit:
            return result
        self._audit(row.requester_id, row.procedure, status,
                    f"request {row.id}: {text}; approved by {row.decided_by}; snapshot {row.snapshot}",
                    Caller(row.requester_id, row.team_id, row.channel_id), arguments=row.arguments)
        return result

    # -- sweeps (expiry, restarts) --------------------------------------------------
    def sweep(self) -> list[str]:
        """Expire old pending requests; run approved ones a restart left behind. Returns changed ids."""
        changed: list[str] = []
        now = _now()
        with self.sessions.begin() as session:
            expired = session.execute(
                update(ApprovalRequest)
                .where(ApprovalRequest.status == ApprovalStatus.PENDING, ApprovalRequest.expires_at < now)
                .values(status=ApprovalStatus.EXPIRED, decided_at=now)
                .returning(ApprovalRequest.id)
            ).scalars().all()
        for request_id in expired:
            self._audit("system", "approval", "expired", f"request {request_id} expired")
        changed += list(expired)
        for request_id in self._left_behind(now):
            self.execute(request_id)
            changed.append(request_id)
        return changed

    def _left_behind(self, now: datetime) -> Iterator[str]:
        ttl = timedelta(seconds=self.settings.aia_approval_ttl_seconds)
        with self.sessions.begin() as session:
            rows = session.execute(
                select(ApprovalRequest).where(ApprovalRequest.status.in_((ApprovalStatus.APPROVED, ApprovalStatus.EXECUTING)))
            ).scalars().all()
            ids = []
            for row in rows:
                decided = assume_utc(row.decided_at) or now
                if row.status == ApprovalStatus.EXECUTING:
                    started = assume_utc(row.executed_at) or now
                    if now - started < timedelta(seconds=self.settings.aia_approval_claim_timeout_seconds):
                        continue  # someone is running it right now
                    # Its runner died. Back to approved: the snapshot check tells whether the
                    # change already happened (then the target changed and it goes stale).
                    row.status, row.claim_token = ApprovalStatus.APPROVED, None
                if now - decided > ttl:
                    row.status, row.result = ApprovalStatus.EXPIRED, "The approval was not executed in time; nothing was run."
                    continue
                ids.append(row.id)
        yield from ids

    # -- break-glass ----------------------------------------------------------------
    def break_glass(self, proc: Procedure, args: dict[str, Any], command: str, caller: Caller, role: Role | None,
                    reason: str) -> Result:
        if not self.settings.aia_break_glass_enabled:
            self._audit(caller.user_id, proc.name, "refused", "break-glass is disabled", caller)
            raise UserError("Break-glass is off here (AIA_BREAK_GLASS_ENABLED); request an approval instead.")
        if role is None or role < Role.ADMIN:
            self._audit(caller.user_id, proc.name, "refused", "break-glass needs admin", caller)
            raise UserError("Only admins may use --break-glass.")
        assert proc.plan is not None and proc.execute is not None
        ctx = self._ctx(caller, role)
        plan = proc.plan(ctx, args)
        self._audit(caller.user_id, proc.name, "break_glass",
                    f"BREAK-GLASS, for review: {reason}; {plan.summary}; snapshot {_canonical(plan.snapshot)}",
                    caller, arguments=_canonical(args))
        result = proc.execute(ctx, args, plan)
        self._audit(caller.user_id, proc.name, "executed", f"break-glass: {result.summary}", caller,
                    arguments=_canonical(args))
        # The reason is shown in the alerts channel and the review escalation's card: escaped once, here.
        self.events.publish(BreakGlassUsed(actor=caller.user_id, procedure=proc.name, reason=escape_mrkdwn(reason),
                                           channel_id=caller.channel_id, thread_ts=None))
        return result


class _Transaction:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._context = sessions.begin()

    def __enter__(self) -> Session:
        return self._context.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._context.__exit__(*exc)


class _SqliteTransaction(_Transaction):
    """SQLite ignores FOR UPDATE; one replica, so a process lock gives the same exclusion."""

    def __init__(self, sessions: sessionmaker[Session], lock: threading.Lock) -> None:
        super().__init__(sessions)
        self._lock = lock

    def __enter__(self) -> Session:
        self._lock.acquire()
        try:
            return super().__enter__()
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)
        finally:
            self._lock.release()
