"""Claiming steps and pages, with a token and a lease: the at-most-once part.

Firing a step is a compare-and-set on the escalation row (``version``) in the same
transaction as inserting the step's pages *already claimed* (token + lease + replica).
A timer for an old version, a second replica or a retried job finds a newer version and
does nothing. Pages whose holder died (lease over, or heartbeat missed) are claimed again
by another replica, with a new token; the old holder's token no longer matches (fencing):
that part is page_claims.py.

Everything here is SQLAlchemy Core on a Connection: under a burst of due steps the ORM's
unit of work cost more CPU than the rest of a page together (see docs/benchmarks.md).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    exists,
    insert,
    select,
    tuple_,
    update,
)

from bot.escalation import pg_batches
from bot.escalation.engines import retry_once
from bot.escalation.membership import Membership
from bot.escalation.pages import Incident, Page, StepPlan, paged_detail, step_pages
from bot.escalation.state import BOT_ACTOR, FIRING, Status, plan_after, policy_of
from bot.store.models import Escalation, EscalationDelivery, EscalationEvent
from bot.timeutil import assume_utc

ESCALATIONS = typed(Table, Escalation.__table__)
PAGES = typed(Table, EscalationDelivery.__table__)
EVENTS = typed(Table, EscalationEvent.__table__)
# Columns a claim reads from the escalation row: enough to page without reading it again.
CLAIM_COLUMNS = tuple(ESCALATIONS.c[name] for name in (
    "id", "version", "status", "next_level", "next_due_at", "next_reason", "step_seq", "cycle", "policy",
    "title", "severity", "channel_id", "thread_ts", "card_ts"))
PAGE_COLUMNS = (PAGES.c.id, PAGES.c.key, PAGES.c.kind, PAGES.c.target, PAGES.c.level, PAGES.c.payload,
                 PAGES.c.attempts)
Step = tuple[str, int]  # (escalation id, version the timer was set for)


@dataclass(frozen=True)
class Claim:
    escalation_id: str
    token: str
    delivery_ids: list[int]
    version: int
    next_due_at: datetime | None
    incident: Incident
    pages: tuple[Page, ...]
    # Monotonic time until which nobody can take these pages over (the lease's end).
    lease_end: float


def incident_of(row: Any) -> Incident:
    return Incident(row.id, row.title, row.severity, row.channel_id, row.thread_ts, row.card_ts, row.status)


def event_values(escalation_id: str, at: datetime, kind: str, actor: str | None, level: int | None, detail: str,
                 late: float | None = None) -> dict[str, Any]:
    return {"escalation_id": escalation_id, "at": at, "kind": kind, "actor": actor, "level": level,
            "detail": detail[:2000], "late_seconds": late}


class Claims:
    def __init__(self, engine: Engine, hot: Engine, membership: Membership, clock: Callable[[], datetime],
                 lease_seconds: float, late_after: float) -> None:
        self.engine = engine
        self.hot = hot  # the claimer's own pool (engines.py)
        self.membership = membership
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.late_after = late_after

    # ------------------------------------------------------------------ steps
    def claim_due(self, steps: Iterable[Step]) -> dict[Step, tuple[str, Claim | None]]:
        """Claim every due step of the batch in one transaction.

        Outcome per step: ``fired`` (with its claim), ``stale`` (old version, not firing any
        more, unknown) or ``later`` (not due yet, locked by another claim this instant, or the
        previous step's thread message is still being posted).
        """
        wanted = sorted(set(steps))
        results: dict[Step, tuple[str, Claim | None]] = {}
        if not wanted:
            return results
        def claim() -> dict[Step, tuple[str, Claim | None]]:
            results.clear()
            now = self.clock()
            with self.hot.begin() as conn:
                self._claim_due(conn, wanted, now, results)
            return results

        return retry_once(claim)

    def _claim_due(self, conn: Connection, wanted: list[Step], now: datetime,
                   results: dict[Step, tuple[str, Claim | None]]) -> None:
        # Lock the rows still at the version their timers were set for and due. SKIP LOCKED:
        # a row another replica is claiming (or a person acknowledging) right now is tried
        # again shortly, and then found fired; nobody waits on anybody. A row whose previous
        # step's thread message is still being posted waits too: steps that fire back to
        # back (catching up after a restart) keep their order in the thread.
        postgres = conn.dialect.name == "postgresql"
        locked = pg_batches.lock_due(conn, wanted, now, FIRING) if postgres else conn.execute(
            select(*CLAIM_COLUMNS)
            .where(tuple_(ESCALATIONS.c.id, ESCALATIONS.c.version).in_(wanted),
                   ESCALATIONS.c.status.in_(FIRING), ESCALATIONS.c.next_level.is_not(None),
                   ESCALATIONS.c.next_due_at <= now,
                   ~exists().where(PAGES.c.escalation_id == ESCALATIONS.c.id, PAGES.c.kind == "slack_thread",
                                   PAGES.c.status == "sending", PAGES.c.claimed_until > now))
            .order_by(ESCALATIONS.c.id)
            .with_for_update(of=ESCALATIONS, skip_locked=True)
        ).all()
        by_step = {(row.id, row.version): row for row in locked}
        missing = [step for step in wanted if step not in by_step]
        if missing:
            # Why not: a plain read, no locks. Mostly steps another replica fired meanwhile.
            missing_ids = sorted({esc_id for esc_id, _ in missing})
            current = {r.id: r for r in (pg_batches.current(conn, missing_ids) if postgres else conn.execute(
                select(ESCALATIONS.c.id, ESCALATIONS.c.version, ESCALATIONS.c.status, ESCALATIONS.c.next_level,
                       ESCALATIONS.c.next_due_at)
                .where(ESCALATIONS.c.id.in_(missing_ids))
            ))}
            for esc_id, version in missing:
                row = current.get(esc_id)
                if (row is None or row.version != version or row.status not in FIRING or row.next_level is None
                        or row.next_due_at is None):
                    results[(esc_id, version)] = ("stale", None)
                else:
                    results[(esc_id, version)] = ("later", None)  # not due, locked, or its thread is busy
        for step, claim in self.claim_rows(conn, list(by_step.values()), now, FIRING).items():
            results[step] = ("fired", claim) if claim is not None else ("stale", None)

    def claim_rows(self, conn: Connection, rows: Sequence[Any], now: datetime, allowed: tuple[str, ...],
                   level: int | None = None, reason: str | None = None,
                   actor: str = BOT_ACTOR) -> dict[Step, Claim | None]:
        """Compare-and-set each row to "level paged" and insert its pages, claimed by us.

        One compare-and-set per row, one multi-row INSERT of all pages and one of all events.
        ``level``/``reason``: escalate now; by default each row's planned next step. Returns
        the claim of each (id, version), None where the row had changed.
        """
        if not rows:
            return {}
        token = secrets.token_hex(8)
        lease = now + timedelta(seconds=self.lease_seconds)
        lease_end = time.monotonic() + self.lease_seconds
        replica = self.membership.replica
        updates: list[dict[str, Any]] = []
        page_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        plans: list[tuple[Any, StepPlan, int]] = []  # row, step, index of its first page
        payloads: list[dict[str, Any]] = []
        for row in rows:
            policy = policy_of(row.policy)
            paged = max(1, min(level if level is not None else row.next_level, len(policy.levels)))
            due = now if level is not None else (assume_utc(row.next_due_at) or now)
            next_level, next_cycle, next_due = plan_after(policy, paged, row.cycle, due)
            why = reason or row.next_reason or "timer"
            step = StepPlan(paged, row.step_seq + 1, why, actor, max(0.0, (now - due).total_seconds()), due,
                            next_level, next_due)
            updates.append({"b_id": row.id, "b_version": row.version, "b_next_version": row.version + 1,
                            "b_seq": step.seq, "b_level": paged, "b_cycle": next_cycle, "b_next_level": next_level,
                            "b_next_reason": "timer" if next_level else None, "b_next_due": next_due})
            plans.append((row, step, len(page_rows)))
            for kind, key, target, payload in step_pages(incident_of(row), policy, step, self.late_after):
                page_rows.append({
                    "escalation_id": row.id, "key": key, "step_seq": step.seq, "level": paged, "kind": kind,
                    "target": target, "payload": json.dumps(payload), "status": "sending", "attempts": 0, "next_attempt_at": now,
                    "claim_token": token, "claimed_until": lease, "created_at": now, "due_at": due,
                    "claimed_by": replica, "last_error": None, "sent_at": None, "sent_by": None,
                })
                payloads.append(payload)
            event_rows.append(event_values(row.id, now, "paged", actor, paged, paged_detail(policy, paged, why),
                                           step.late if step.late >= self.late_after else None))
        fired = self._compare_and_set(conn, updates, allowed, replica)
        plans = [plan for plan in plans if plan[0].id in fired]
        keep = {plan[0].id for plan in plans}
        if len(keep) < len(updates):
            payloads = [p for p, r in zip(payloads, page_rows, strict=True) if r["escalation_id"] in keep]
            page_rows = [r for r in page_rows if r["escalation_id"] in keep]
            event_rows = [e for e in event_rows if e["escalation_id"] in keep]
            plans = _renumber(plans, page_rows)
        outcome: dict[Step, Claim | None] = {(row.id, row.version): None for row in rows}
        if not plans:
            return outcome
        if conn.dialect.name == "postgresql":
            ids = pg_batches.insert_pages(conn, page_rows, now, token, lease, replica)
            pg_batches.insert_events(conn, event_rows)
        else:
            ids = list(conn.execute(insert(PAGES).returning(PAGES.c.id, sort_by_parameter_order=True),
                                    page_rows).scalars())
            conn.execute(insert(EVENTS), event_rows)
        ends = [first for _, _, first in plans[1:]] + [len(page_rows)]
        for (row, step, first), end in zip(plans, ends, strict=True):
            pages = tuple(Page(ids[i], page_rows[i]["key"], page_rows[i]["kind"], page_rows[i]["target"], step.level,
                               payloads[i], 0) for i in range(first, end))
            outcome[(row.id, row.version)] = Claim(row.id, token, [p.id for p in pages], row.version + 1, step.next_due,
                                                   incident_of(row), pages, lease_end)
        return outcome

    @staticmethod
    def _compare_and_set(conn: Connection, updates: list[dict[str, Any]], allowed: tuple[str, ...],
                         replica: str) -> set[str]:
        """Move each row to its next step if still at its version; the ids that moved.

        PostgreSQL: one UPDATE … FROM unnest(…) for the batch (the rows are locked FOR UPDATE
        already, so it cannot miss one). SQLite: one statement per row.
        """
        if conn.dialect.name == "postgresql":
            return pg_batches.compare_and_set(conn, updates, allowed, Status.ACTIVE.value, replica)
        common = {"status": Status.ACTIVE.value, "snoozed_until": None, "fired_by": replica}
        cas = (update(ESCALATIONS)
               .where(ESCALATIONS.c.id == bindparam("b_id"), ESCALATIONS.c.version == bindparam("b_version"),
                      ESCALATIONS.c.status.in_(allowed))
               .values(version=bindparam("b_next_version"), step_seq=bindparam("b_seq"),
                       current_level=bindparam("b_level"), cycle=bindparam("b_cycle"),
                       next_level=bindparam("b_next_level"), next_reason=bindparam("b_next_reason"),
                       next_due_at=bindparam("b_next_due"), **common))
        return {u["b_id"] for u in updates if conn.execute(cas, u).rowcount == 1}

    # ------------------------------------------------------------------ pages
    def webhook_followups(self, conn: Connection, escalation_id: str, version: int, step_seq: int, level: int,
                          action: str, now: datetime) -> tuple[list[int], str]:
        """PagerDuty acknowledge/resolve for each webhook a trigger went (or is going) to."""
        urls = conn.execute(
            select(PAGES.c.target).where(
                PAGES.c.escalation_id == escalation_id, PAGES.c.kind == "webhook",
                PAGES.c.status.in_(("sent", "sending", "pending")), PAGES.c.key.like("s%"),
            ).distinct()
        ).scalars().all()
        if not urls:
            return [], ""
        token = secrets.token_hex(8)
        rows = [{
            "escalation_id": escalation_id, "key": f"v{version}:{action}:{i}", "step_seq": step_seq, "level": level,
            "kind": "webhook", "target": url, "payload": json.dumps({"action": action, "level": level, "seq": step_seq}),
            "status": "sending", "attempts": 0, "next_attempt_at": now, "claim_token": token,
            "claimed_until": now + timedelta(seconds=self.lease_seconds), "created_at": now,
            "claimed_by": self.membership.replica,
        } for i, url in enumerate(sorted(urls))]
        ids = conn.execute(insert(PAGES).returning(PAGES.c.id, sort_by_parameter_order=True), rows).scalars().all()
        return list(ids), token


def _renumber(plans: list[tuple[Any, StepPlan, int]], page_rows: list[dict[str, Any]]) -> list[tuple[Any, StepPlan, int]]:
    """Each plan's index of its first page, after pages of stale rows were left out."""
    first: dict[str, int] = {}
    for index, page in enumerate(page_rows):
        first.setdefault(page["escalation_id"], index)
    return [(row, step, first[row.id]) for row, step, _ in plans]
