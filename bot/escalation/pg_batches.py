"""The hot path's batch statements on PostgreSQL: one fixed SQL text per statement, the
batch passed as arrays and spread with ``unnest``.

A batch written as ``IN ((…), (…))``, ``VALUES (…), (…)`` or a multi-row INSERT is a new SQL
text for every batch size: SQLAlchemy compiles it again and psycopg parses it again, and
under a burst of due steps that compiling cost more CPU than the database's work. Here the
text never changes, so both caches hold it; only the arrays grow. SQLite (one process, tests
and the console) keeps the portable statements in claims.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, TextClause, text

# Selects the same columns as claims.CLAIM_COLUMNS (a test compares them).
LOCK_DUE: TextClause = text("""
    SELECT e.id, e.version, e.status, e.next_level, e.next_due_at, e.next_reason, e.step_seq, e.cycle,
           e.policy, e.title, e.severity, e.channel_id, e.thread_ts, e.card_ts
    FROM escalations AS e
    JOIN unnest(CAST(:ids AS varchar[]), CAST(:versions AS integer[])) AS w(id, version)
      ON e.id = w.id AND e.version = w.version
    WHERE e.status = ANY(CAST(:firing AS varchar[])) AND e.next_level IS NOT NULL AND e.next_due_at <= :now
      AND NOT EXISTS (
        SELECT 1 FROM escalation_deliveries AS p
        WHERE p.escalation_id = e.id AND p.kind = 'slack_thread' AND p.status = 'sending'
          AND p.claimed_until > :now)
    ORDER BY e.id
    FOR UPDATE OF e SKIP LOCKED
""")

CURRENT: TextClause = text("""
    SELECT id, version, status, next_level, next_due_at FROM escalations
    WHERE id = ANY(CAST(:ids AS varchar[]))
""")

COMPARE_AND_SET: TextClause = text("""
    UPDATE escalations AS e
    SET version = b.next_version, step_seq = b.seq, current_level = b.level, cycle = b.cycle,
        next_level = b.next_level, next_reason = b.next_reason, next_due_at = b.next_due,
        status = :status, snoozed_until = NULL, fired_by = :replica
    FROM unnest(CAST(:ids AS varchar[]), CAST(:versions AS integer[]), CAST(:next_versions AS integer[]),
                CAST(:seqs AS integer[]), CAST(:levels AS integer[]), CAST(:cycles AS integer[]),
                CAST(:next_levels AS integer[]), CAST(:next_reasons AS varchar[]),
                CAST(:next_dues AS timestamptz[]))
         AS b(id, version, next_version, seq, level, cycle, next_level, next_reason, next_due)
    WHERE e.id = b.id AND e.version = b.version AND e.status = ANY(CAST(:allowed AS varchar[]))
    RETURNING e.id
""")

INSERT_PAGES: TextClause = text("""
    INSERT INTO escalation_deliveries
        (escalation_id, key, step_seq, level, kind, target, payload, due_at,
         status, attempts, next_attempt_at, claim_token, claimed_until, created_at, claimed_by)
    SELECT p.escalation_id, p.key, p.step_seq, p.level, p.kind, p.target, p.payload, p.due_at,
           'sending', 0, :now, :token, :lease, :now, :replica
    FROM unnest(CAST(:escalation_ids AS varchar[]), CAST(:keys AS varchar[]), CAST(:seqs AS integer[]),
                CAST(:levels AS integer[]), CAST(:kinds AS varchar[]), CAST(:targets AS varchar[]),
                CAST(:payloads AS text[]), CAST(:dues AS timestamptz[]))
         AS p(escalation_id, key, step_seq, level, kind, target, payload, due_at)
    RETURNING id, escalation_id, key
""")

INSERT_EVENTS: TextClause = text("""
    INSERT INTO escalation_events (escalation_id, at, kind, actor, level, detail, late_seconds)
    SELECT * FROM unnest(CAST(:escalation_ids AS varchar[]), CAST(:ats AS timestamptz[]),
                         CAST(:kinds AS varchar[]), CAST(:actors AS varchar[]), CAST(:levels AS integer[]),
                         CAST(:details AS text[]), CAST(:lates AS double precision[]))
""")

MARK_SENT: TextClause = text("""
    UPDATE escalation_deliveries AS d
    SET status = 'sent', sent_at = :now, sent_by = :replica, attempts = d.attempts + 1,
        claim_token = NULL, claimed_until = NULL
    FROM unnest(CAST(:ids AS integer[]), CAST(:tokens AS varchar[])) AS m(id, token)
    WHERE d.id = m.id AND d.claim_token = m.token
""")


def lock_due(conn: Connection, wanted: Sequence[tuple[str, int]], now: datetime,
             firing: Sequence[str]) -> list[Any]:
    return list(conn.execute(LOCK_DUE, {"ids": [w[0] for w in wanted], "versions": [w[1] for w in wanted],
                                        "firing": list(firing), "now": now}))


def current(conn: Connection, ids: Sequence[str]) -> list[Any]:
    return list(conn.execute(CURRENT, {"ids": list(ids)}))


def compare_and_set(conn: Connection, updates: Sequence[dict[str, Any]], allowed: Sequence[str], status: str,
                    replica: str) -> set[str]:
    def column(name: str) -> list[Any]:
        return [u[name] for u in updates]

    return set(conn.execute(COMPARE_AND_SET, {
        "ids": column("b_id"), "versions": column("b_version"), "next_versions": column("b_next_version"),
        "seqs": column("b_seq"), "levels": column("b_level"), "cycles": column("b_cycle"),
        "next_levels": column("b_next_level"), "next_reasons": column("b_next_reason"),
        "next_dues": column("b_next_due"), "allowed": list(allowed), "status": status, "replica": replica,
    }).scalars())


def insert_pages(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime, token: str, lease: datetime,
                 replica: str) -> list[int]:
    """Insert pages already claimed by ``token``; their ids in the order of ``rows``."""
    def column(name: str) -> list[Any]:
        return [r[name] for r in rows]

    inserted = conn.execute(INSERT_PAGES, {
        "escalation_ids": column("escalation_id"), "keys": column("key"), "seqs": column("step_seq"),
        "levels": column("level"), "kinds": column("kind"), "targets": column("target"),
        "payloads": [r["payload"] if isinstance(r["payload"], str) else json.dumps(r["payload"]) for r in rows],
        "dues": column("due_at"), "now": now, "token": token, "lease": lease, "replica": replica,
    }).all()
    # (escalation, key) is unique: map the ids back without relying on RETURNING's order.
    ids = {(row.escalation_id, row.key): row.id for row in inserted}
    return [ids[(r["escalation_id"], r["key"])] for r in rows]


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    def column(name: str) -> list[Any]:
        return [r[name] for r in rows]

    conn.execute(INSERT_EVENTS, {
        "escalation_ids": column("escalation_id"), "ats": column("at"), "kinds": column("kind"),
        "actors": column("actor"), "levels": column("level"), "details": column("detail"),
        "lates": column("late_seconds"),
    })


def mark_sent(conn: Connection, batch: Sequence[tuple[int, str]], now: datetime, replica: str) -> None:
    conn.execute(MARK_SENT, {"ids": [b[0] for b in batch], "tokens": [b[1] for b in batch], "now": now,
                             "replica": replica})
