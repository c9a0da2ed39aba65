"""Escalations change state here: start, fire steps, acknowledge, snooze, resolve, escalate now.

Every change is a compare-and-set on the escalation row (state.py names the statuses each
transition starts from). When an acknowledgement races a timer exactly one commits first;
the acknowledgement reads the row it just locked, so the thread says which level had really
been paged. Messages and pages go out after the commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.errors import PageFailed, UserError
from bot.escalation import state
from bot.escalation.claims import (
    CLAIM_COLUMNS,
    ESCALATIONS,
    EVENTS,
    PAGES,
    Claim,
    Claims,
    Step,
    event_values,
)
from bot.escalation.delivery import Delivery
from bot.escalation.state import BOT_ACTOR, OPEN, Status, Transition, level_name
from bot.escalation.views import view_of
from bot.escalation_policy import EscalationPolicy
from bot.ports import EscalationView, clock, mention
from bot.timeutil import assume_utc
from bot.validators import format_duration

_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
RETRY_LATER_SECONDS = 0.5


def new_escalation_id() -> str:
    return "E" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


@dataclass(frozen=True)
class Change:
    """What a person's action did, for the procedure's answer."""

    view: EscalationView
    text: str


class EscalationMachine:
    def __init__(self, engine: Engine, claims: Claims, delivery: Delivery, clock: Callable[[], datetime],
                 schedule: Callable[[str, int, datetime], None], background: Callable[..., None]) -> None:
        self.engine = engine
        self.claims = claims
        self.delivery = delivery
        self.clock = clock
        self.schedule = schedule
        self.background = background

    # ------------------------------------------------------------------ start
    def start(self, policy: EscalationPolicy, level: int, title: str, source: str, actor: str, channel_id: str,
              thread_ts: str | None, alert_group_id: int | None, severity: str | None) -> EscalationView:
        """Create the escalation and its card; the first page goes out on a paging thread."""
        now = self.clock()
        values: dict[str, Any] = dict(
            id=self._free_id(), source=source, title=title[:500], severity=severity, alert_group_id=alert_group_id,
            channel_id=channel_id, thread_ts=thread_ts, card_ts=None, policy=policy.model_dump_json(),
            status=Status.ACTIVE.value, version=1, step_seq=0, current_level=0, cycle=0, next_level=level,
            next_reason="start", next_due_at=now, snoozed_until=None, created_by=actor, created_at=now,
            acknowledged_by=None, acknowledged_at=None, resolved_by=None, resolved_at=None, fired_by=None,
        )
        # The card goes up first so the row (and every replica's timer) knows its thread.
        card_ts = self._post_card(SimpleNamespace(**values), thread_ts)
        values.update(card_ts=card_ts, thread_ts=thread_ts or card_ts)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(ESCALATIONS).values(values))
                conn.execute(insert(EVENTS).values(event_values(values["id"], now, "started", actor, level,
                                                                f"{source}: {title[:300]}")))
        except IntegrityError:
            # The alert group's escalation was started by another replica meanwhile.
            if card_ts:
                self.delivery.slack.delete(channel_id, card_ts)
            raise
        self.background(self.fire, values["id"], 1)
        return view_of(SimpleNamespace(**values), self.clock)

    def _free_id(self) -> str:
        with self.engine.connect() as conn:
            while True:
                candidate = new_escalation_id()
                if conn.execute(select(ESCALATIONS.c.id).where(ESCALATIONS.c.id == candidate)).first() is None:
                    return candidate

    def _post_card(self, row: Any, thread_ts: str | None) -> str | None:
        try:
            return self.delivery.slack.post(row.channel_id, self.delivery.renderer().card(view_of(row, self.clock)),
                                            thread_ts=thread_ts)
        except PageFailed:
            return None

    # ------------------------------------------------------------------ steps
    def fire(self, escalation_id: str, version: int) -> str:
        """Page the due step if this version is still current, and send it on this thread.

        Returns ``fired``, ``stale`` (someone else fired it, or it was acknowledged, snoozed,
        resolved) or ``later`` (not due yet, locked by another replica's claim this instant,
        or the previous step's thread message is still being posted: tried again shortly).
        """
        outcome, claim = self.claims.claim_due([(escalation_id, version)])[(escalation_id, version)]
        if outcome == "later":
            self.schedule(escalation_id, version, self.clock() + timedelta(seconds=RETRY_LATER_SECONDS))
        if claim is not None:
            self.send_and_schedule(claim)
        return outcome

    def fire_many(self, steps: list[Step]) -> dict[Step, str]:
        """Timer entry point: claim every due step of the batch in one transaction.

        Under load many steps come due together; one transaction for all of them, instead of
        one per step, is what lets a replica keep up. Each claim is then sent on the paging
        threads, so a slow Slack or webhook delays no other claim.
        """
        claimed = self.claims.claim_due(steps)
        retry_at = self.clock() + timedelta(seconds=RETRY_LATER_SECONDS)
        for (escalation_id, version), (outcome, claim) in claimed.items():
            if outcome == "later":
                self.schedule(escalation_id, version, retry_at)
            if claim is not None:
                self.background(self.send_and_schedule, claim)
        return {step: outcome for step, (outcome, _) in claimed.items()}

    def send_and_schedule(self, claim: Claim) -> None:
        self.delivery.send_claimed(claim)
        if claim.next_due_at is not None:
            self.schedule(claim.escalation_id, claim.version, claim.next_due_at)
        if claim.incident.card_ts:
            self.delivery.refresh_card(claim.escalation_id)

    # ------------------------------------------------------------------ people
    def acknowledge(self, escalation_id: str, actor: str) -> Change:
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._change(conn, escalation_id, state.acknowledge(actor, now))
            paged = (f"level {row.current_level} {level_name(row.policy, row.current_level)} had been paged"
                     if row.current_level else "before anyone was paged")
            conn.execute(insert(EVENTS).values(event_values(row.id, now, "acknowledged", actor, row.current_level, paged)))
            webhooks = self.claims.webhook_followups(conn, row.id, row.version, row.step_seq, row.current_level,
                                                     "acknowledge", now)
        text = f":white_check_mark: *Acknowledged* by {mention(actor)} at {clock(now)}; {paged}. Timers stopped."
        return self._after(row, text, "ok", webhooks)

    def resolve(self, escalation_id: str, actor: str, why: str = "") -> Change:
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._change(conn, escalation_id, state.resolve(actor, now))
            conn.execute(insert(EVENTS).values(event_values(row.id, now, "resolved", actor, row.current_level, why)))
            webhooks = self.claims.webhook_followups(conn, row.id, row.version, row.step_seq, row.current_level,
                                                     "resolve", now)
        lasted = format_duration((now - (assume_utc(row.created_at) or now)).total_seconds())
        text = (f":large_green_circle: *Resolved* by {mention(actor)}{' (' + why + ')' if why else ''} after {lasted}. "
                "Nobody else will be paged.")
        return self._after(row, text, "ok", webhooks)

    def snooze(self, escalation_id: str, actor: str, seconds: float) -> Change:
        now = self.clock()
        until = now + timedelta(seconds=seconds)
        with self.engine.begin() as conn:
            current = conn.execute(select(ESCALATIONS.c.current_level, ESCALATIONS.c.next_level)
                                   .where(ESCALATIONS.c.id == escalation_id)).first()
            level = (current.current_level or current.next_level or 1) if current else 1
            row = self._change(conn, escalation_id, state.snooze(level, until))
            conn.execute(insert(EVENTS).values(event_values(
                row.id, now, "snoozed", actor, level, f"for {format_duration(seconds)}, until {clock(until)}")))
        text = (f":zzz: *Snoozed* by {mention(actor)} for {format_duration(seconds)}: "
                f"level {level} {level_name(row.policy, level)} is paged again at {clock(until)} unless acknowledged.")
        change = self._after(row, text, "info", ([], ""))
        self.schedule(row.id, row.version, until)
        return change

    def escalate_now(self, escalation_id: str, actor: str) -> Change:
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(select(*CLAIM_COLUMNS, ESCALATIONS.c.current_level)
                               .where(ESCALATIONS.c.id == escalation_id).with_for_update()).first()
            if row is None or row.status not in OPEN:
                raise self._refusal(conn, escalation_id, "escalate")
            levels = len(state.policy_of(row.policy).levels)
            level = min(row.current_level + 1, levels) if row.current_level else (row.next_level or 1)
            conn.execute(insert(EVENTS).values(event_values(row.id, now, "escalated_now", actor, level,
                                                            f"to level {level}")))
            claim = self.claims.claim_rows(conn, [row], now, OPEN, level=level, reason="escalate_now",
                                           actor=actor)[(row.id, row.version)]
            if claim is None:
                raise UserError("The escalation changed at this moment; look at the thread and try again.")
            fresh = conn.execute(select(ESCALATIONS).where(ESCALATIONS.c.id == escalation_id)).one()
        self.background(self.send_and_schedule, claim)
        return Change(view_of(fresh, self.clock), f"Escalating to level {level} {level_name(row.policy, level)} now.")

    # ------------------------------------------------------------------ alert groups
    def group_changed(self, escalation_id: str, policy: EscalationPolicy | None, current_level: int,
                      new_alerts: int) -> None:
        now = self.clock()
        if policy is None or not policy.repage_on_new_alerts:
            with self.engine.begin() as conn:
                conn.execute(insert(EVENTS).values(event_values(
                    escalation_id, now, "new_alerts", BOT_ACTOR, None, f"{new_alerts} new; not re-paged (policy)")))
            return
        with self.engine.begin() as conn:
            try:
                row = self._change(conn, escalation_id, state.repage(current_level or 1, now))
            except UserError:
                return  # no longer acknowledged
            conn.execute(insert(EVENTS).values(event_values(
                row.id, now, "new_alerts", BOT_ACTOR, row.next_level, f"{new_alerts} new; re-paging")))
        self.fire(row.id, row.version)

    # ------------------------------------------------------------------ helpers
    def _change(self, conn: Connection, escalation_id: str, transition: Transition) -> Any:
        """Compare-and-set on the status; the row as committed by us, or a refusal (UserError)."""
        changed = conn.execute(
            update(ESCALATIONS)
            .where(ESCALATIONS.c.id == escalation_id, ESCALATIONS.c.status.in_(transition.allowed))
            .values(version=ESCALATIONS.c.version + 1, **transition.values)
            .returning(*ESCALATIONS.c)
        ).first()
        if changed is None:
            raise self._refusal(conn, escalation_id, transition.verb)
        if transition.cancels_retries:
            conn.execute(update(PAGES).where(PAGES.c.escalation_id == escalation_id, PAGES.c.status == "pending")
                         .values(status="cancelled", claim_token=None))
        return changed

    def _refusal(self, conn: Connection, escalation_id: str, verb: str) -> UserError:
        row = conn.execute(select(ESCALATIONS).where(ESCALATIONS.c.id == escalation_id)).first()
        if row is None:
            return UserError(f"There is no escalation `{escalation_id}`.", "`/aia oncall` lists the open ones.")
        if row.status == Status.RESOLVED:
            return UserError(f"Escalation `{row.id}` is already resolved by {mention(row.resolved_by)} "
                             f"at {clock(assume_utc(row.resolved_at))}.")
        if row.status == Status.ACKNOWLEDGED and verb == "acknowledge":
            return UserError(f"Escalation `{row.id}` was already acknowledged by {mention(row.acknowledged_by)} "
                             f"at {clock(assume_utc(row.acknowledged_at))}.")
        return UserError(f"Escalation `{row.id}` cannot {verb} now: it is {row.status}.")

    def _after(self, row: Any, text: str, tone: str, webhooks: tuple[list[int], str]) -> Change:
        self.delivery.note(row, text, tone)
        self.delivery.refresh_card(row.id)
        if webhooks[0]:
            self.background(self.delivery.send, *webhooks)
        return Change(view_of(row, self.clock), text)
