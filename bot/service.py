"""The dispatcher: parse, authorise, run, audit. Shared by Slack and the console."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Histogram

from bot.approvals.service import ApprovalService, ApprovalView
from bot.context import Backends, Caller
from bot.errors import BackendUnavailable, ConfigurationError, UserError
from bot.parsing import Invocation, parse_command
from bot.redaction import redact
from bot.registry import ProcedureContext, Registry, RiskClass
from bot.results import Result
from bot.roles import Role, RoleResolver
from bot.settings import Settings
from bot.store.audit import AuditLog, AuditRecord

log = logging.getLogger(__name__)

COMMANDS = Counter("aia_bot_commands_total", "Commands handled", ["procedure", "outcome"])
DURATION = Histogram(
    "aia_bot_procedure_seconds",
    "Time from the start of backend work to the result",
    ["procedure"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


class OutcomeKind(StrEnum):
    OK = "ok"
    APPROVAL_REQUESTED = "approval_requested"
    USER_ERROR = "user_error"
    REFUSED = "refused"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    text: str
    result: Result | None = None
    message: str = ""
    usage: str | None = None
    procedure: str | None = None
    approval: ApprovalView | None = None


def _arguments_json(invocation: Invocation) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):  # config set's KEY=VALUE pairs: kept as JSON so the audit can mask by key
            return {str(k): plain(v) for k, v in value.items()}
        return value if isinstance(value, str | int | float | bool) or value is None else str(value)

    return json.dumps({k: plain(v) for k, v in invocation.args.items() if v not in (None, False)})


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        backends: Backends,
        audit: AuditLog,
        roles: RoleResolver,
        approvals: ApprovalService | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.backends = backends
        self.audit = audit
        self.roles = roles
        self.approvals = approvals

    def handle(self, text: str, caller: Caller) -> Outcome:
        text = (text or "").strip()
        try:
            invocation = parse_command(text, self.registry)
        except UserError as exc:
            # The message may quote what was typed: a pasted secret is masked in the answer too.
            return self._finish(caller, "(unparsed)", text, OutcomeKind.USER_ERROR, redact(exc.message), exc.usage)

        proc = invocation.procedure
        role = self.roles.role_of(caller.user_id)
        needed = proc.role_for(invocation.args)
        if not proc.public and (role is None or role < needed):
            have = f"your role is {role.label}" if role else "you have no role"
            message = (
                f"`/aia {proc.name}` needs the {needed.label} role; {have}. "
                "Ask an admin to add you to the bot's roles."
            )
            return self._finish(
                caller, proc.name, _arguments_json(invocation), OutcomeKind.REFUSED, message, None, proc.risk
            )

        context = ProcedureContext(
            settings=self.settings,
            backends=self.backends,
            registry=self.registry,
            audit=self.audit,
            caller=caller,
            role=role,
        )
        started = time.monotonic()
        args_json = _arguments_json(invocation)
        risk = proc.effective_risk(invocation.args)
        destructive = risk is RiskClass.DESTRUCTIVE
        if risk is RiskClass.WRITE and not self._intent(caller, proc.name, args_json, risk):
            return self._finish(caller, proc.name, args_json, OutcomeKind.FAILED,
                                "The audit log cannot be written right now, so nothing was run. Try again in a "
                                "minute; if it persists, the bot's database needs attention.", None, risk,
                                audit=False)
        try:
            if destructive:
                if self.approvals is None:  # never run a destructive step without the rule
                    raise UserError("Destructive procedures are unavailable: no approval service.")
                return self._destructive(invocation, caller, role, args_json)
            result = proc.run(context, invocation.args)
        except UserError as exc:
            return self._finish(
                caller, proc.name, args_json, OutcomeKind.USER_ERROR, redact(exc.message),
                exc.usage, proc.risk,  # a usage line only where the error is about usage
            )
        except (BackendUnavailable, ConfigurationError) as exc:
            return self._finish(caller, proc.name, args_json, OutcomeKind.FAILED, redact(str(exc)), None, proc.risk)
        except Exception:  # noqa: BLE001 - a bug must become an apology, never a stack trace in Slack
            error_id = uuid.uuid4().hex[:8]
            log.exception("procedure %s failed (error id %s)", proc.name, error_id)
            message = f"Something went wrong inside the bot (error id `{error_id}`); it is in the bot's log."
            return self._finish(caller, proc.name, args_json, OutcomeKind.FAILED, message, None, proc.risk)
        finally:
            DURATION.labels(proc.name).observe(time.monotonic() - started)
        return self._finish(
            caller, proc.name, args_json, OutcomeKind.OK, result.summary or result.title, None, proc.risk, result
        )

    def _destructive(self, invocation: Invocation, caller: Caller, role: Role | None, args_json: str) -> Outcome:
        """No destructive step runs alone: request an approval (or break glass)."""
        assert self.approvals is not None
        proc = invocation.procedure
        reason = invocation.args.get("break-glass")
        if reason:
            result = self.approvals.break_glass(proc, invocation.args, invocation.text, caller, role, reason)
            COMMANDS.labels(proc.name, "break_glass").inc()
            return Outcome(kind=OutcomeKind.OK, text=args_json, result=result, message=result.summary,
                           procedure=proc.name)
        view = self.approvals.request(proc, invocation.args, invocation.text, caller, role)
        COMMANDS.labels(proc.name, "approval_requested").inc()
        return Outcome(kind=OutcomeKind.APPROVAL_REQUESTED, text=args_json, message=view.summary,
                       procedure=proc.name, approval=view)

    def _intent(self, caller: Caller, action: str, arguments: str, risk: str) -> bool:
        """Audit first: a write is on record before it runs; False (nothing may run) when it cannot be."""
        try:
            self.audit.append(AuditRecord(actor=caller.user_id, action=action, outcome="intent", arguments=arguments,
                                          detail="about to run", team_id=caller.team_id,
                                          channel_id=caller.channel_id, risk=str(risk)))
        except Exception:  # noqa: BLE001 - any failure to record means: do not run
            log.exception("could not write the audit intent for %s by %s; not running it", action, caller.user_id)
            return False
        return True

    def _finish(
        self,
        caller: Caller,
        action: str,
        arguments: str,
        kind: OutcomeKind,
        message: str,
        usage: str | None,
        risk: str | None = None,
        result: Result | None = None,
        audit: bool = True,
    ) -> Outcome:
        COMMANDS.labels(action, kind.value).inc()
        record = AuditRecord(actor=caller.user_id, action=action, outcome=kind.value, arguments=arguments,
                             detail=message, team_id=caller.team_id, channel_id=caller.channel_id,
                             risk=str(risk) if risk else None)
        try:
            if audit:  # False: the intent could not be written, so neither will this
                self.audit.append(record)
        except Exception:  # noqa: BLE001 - the answer still goes out; the gap is logged loudly
            log.exception("could not write the audit log entry for %s by %s", action, caller.user_id)
        return Outcome(
            kind=kind,
            text=arguments,
            result=result,
            message=message,
            usage=usage,
            procedure=None if action == "(unparsed)" else action,
        )
