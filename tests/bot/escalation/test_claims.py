"""Claims, sent marks and membership alone, on real PostgreSQL, without Slack or timers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from bot.escalation.claims import ESCALATIONS, EVENTS, PAGES, Claims
from bot.escalation.delivery import SentMarks
from bot.escalation.membership import Membership
from bot.escalation_policy import EscalationPolicy
from bot.store.db import make_engine, migrate
from tests.bot.escalation.conftest import ShiftedClock
from tests.conftest import fresh_pg_database

POLICY = EscalationPolicy.model_validate({"levels": [
    {"name": "on-call", "notify": ["U0OPS01"], "wait": "5m"},
    {"name": "phone", "webhook": "https://events.example/v2/enqueue", "wait": "10m"},
]})


@pytest.fixture
def engine() -> Iterator[Engine]:
    with fresh_pg_database() as url:
        engine = make_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


def _escalation(engine: Engine, esc_id: str, due: datetime, version: int = 3, **extra: Any) -> None:
    with engine.begin() as conn:
        conn.execute(insert(ESCALATIONS).values(
            id=esc_id, source="manual", title=f"incident {esc_id}", severity="critical", alert_group_id=None,
            channel_id="C0ALERTS", thread_ts="1.000001", card_ts=None, policy=POLICY.model_dump_json(),
            **{"status": "active", "version": version, "step_seq": 0, "current_level": 0, "cycle": 0,
               "next_level": 1, "next_reason": "start", "next_due_at": due, "created_by": "U0OPS01",
               "created_at": due, **extra}))


def _claims(engine: Engine, clock: ShiftedClock, replica: str = "pod-a:1:aaaa") -> Claims:
    return Claims(engine, engine, Membership(engine, 2.0, clock, replica), clock, lease_seconds=60, late_after=5)


def test_one_batch_fires_due_steps_and_sorts_out_the_rest(engine: Engine) -> None:
    clock = ShiftedClock()
    now = clock()
    _escalation(engine, "EDUE001", now - timedelta(seconds=1))
    _escalation(engine, "EDUE002", now - timedelta(seconds=2))
    _escalation(engine, "ELATER1", now + timedelta(minutes=1))
    _escalation(engine, "EOLDVER", now - timedelta(seconds=1), version=7)
    outcomes = _claims(engine, clock).claim_due(
        [("EDUE001", 3), ("EDUE002", 3), ("ELATER1", 3), ("EOLDVER", 6), ("ENOSUCH", 1)])
    assert {step: outcome for step, (outcome, _) in outcomes.items()} == {
        ("EDUE001", 3): "fired", ("EDUE002", 3): "fired", ("ELATER1", 3): "later",
        ("EOLDVER", 6): "stale", ("ENOSUCH", 1): "stale"}
    claim = outcomes[("EDUE001", 3)][1]
    assert claim is not None and claim.version == 4 and [p.kind for p in claim.pages] == ["slack_thread", "slack_dm"]
    assert claim.next_due_at is not None and claim.incident.thread_ts == "1.000001"
    with engine.connect() as conn:
        row = conn.execute(select(ESCALATIONS).where(ESCALATIONS.c.id == "EDUE001")).one()
        pages = conn.execute(select(PAGES).where(PAGES.c.escalation_id == "EDUE001")).all()
    assert (row.version, row.current_level, row.next_level, row.step_seq) == (4, 1, 2, 1)
    assert {p.id for p in pages} == set(claim.delivery_ids)
    assert all(p.status == "sending" and p.claim_token == claim.token for p in pages)
    # The same step again (a backup timer): stale, nothing new.
    assert _claims(engine, clock, "pod-b:1:bbbb").claim_due([("EDUE001", 3)])[("EDUE001", 3)] == ("stale", None)


def test_a_row_locked_by_another_claim_is_later_not_waited_for(engine: Engine) -> None:
    clock = ShiftedClock()
    _escalation(engine, "ELOCKED", clock() - timedelta(seconds=1))
    with engine.begin() as other:
        other.execute(select(ESCALATIONS.c.id).where(ESCALATIONS.c.id == "ELOCKED").with_for_update())
        assert _claims(engine, clock).claim_due([("ELOCKED", 3)])[("ELOCKED", 3)] == ("later", None)
    assert _claims(engine, clock).claim_due([("ELOCKED", 3)])[("ELOCKED", 3)][0] == "fired"


def test_sent_marks_count_only_for_the_token_holder_even_with_concurrent_senders(engine: Engine) -> None:
    clock = ShiftedClock()
    _escalation(engine, "EMARKS1", clock() - timedelta(seconds=1))
    claim = _claims(engine, clock).claim_due([("EMARKS1", 3)])[("EMARKS1", 3)][1]
    assert claim is not None
    thread_page, dm_page = claim.delivery_ids
    with engine.begin() as conn:  # the DM was taken over by another replica meanwhile
        conn.execute(update(PAGES).where(PAGES.c.id == dm_page).values(claim_token="someone-else"))
    marks = SentMarks(engine, "pod-a:1:aaaa", clock)
    senders = [threading.Thread(target=marks.record, args=([page], claim.token)) for page in claim.delivery_ids * 4]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(PAGES).where(PAGES.c.escalation_id == "EMARKS1"))}
    assert rows[thread_page].status == "sent" and rows[thread_page].claim_token is None
    assert rows[thread_page].attempts == 1 and rows[thread_page].sent_by == "pod-a:1:aaaa"
    assert rows[dm_page].status == "sending" and rows[dm_page].claim_token == "someone-else"


def test_replicas_that_stop_beating_drop_out_of_the_live_list(engine: Engine) -> None:
    clock = ShiftedClock()
    alive, silent = Membership(engine, 2.0, clock, "pod-a:1:aaaa"), Membership(engine, 2.0, clock, "pod-b:1:bbbb")
    alive.heartbeat()
    silent.heartbeat()
    assert alive.live_replicas() == ["pod-a:1:aaaa", "pod-b:1:bbbb"]
    clock.advance(alive.dead_after + 1)  # 3 polls and a second pass without a beat from pod-b
    alive.heartbeat()
    assert alive.live_replicas() == ["pod-a:1:aaaa"]
    assert alive.dead_after == 7.0



def test_the_batch_statements_select_the_claim_columns() -> None:
    from bot.escalation import pg_batches
    from bot.escalation.claims import CLAIM_COLUMNS

    selected = pg_batches.LOCK_DUE.text.split("FROM")[0].replace("SELECT", "").replace("e.", "")
    assert [name.strip() for name in selected.split(",")] == [c.name for c in CLAIM_COLUMNS]


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_last_steps_of_their_chains_fire_as_one_batch_on_both_databases(
        engine: Engine, database: str, tmp_path: Any) -> None:
    """Every row of the batch pages its last level: the arrays of next steps are all NULL
    (PostgreSQL cannot guess a type from them) and the portable path must agree."""
    if database == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'claims.db'}")
        migrate(engine)
    clock = ShiftedClock()
    now = clock()
    ids = [f"ELAST{i:02d}" for i in range(5)]
    for esc_id in ids:
        _escalation(engine, esc_id, now - timedelta(seconds=1), next_level=2)
    outcomes = _claims(engine, clock).claim_due([(esc_id, 3) for esc_id in ids])
    assert {outcome for outcome, _ in outcomes.values()} == {"fired"}
    with engine.connect() as conn:
        rows = conn.execute(select(ESCALATIONS).where(ESCALATIONS.c.id.in_(ids))).all()
        pages = conn.execute(select(PAGES).where(PAGES.c.escalation_id.in_(ids))).all()
        events = conn.execute(select(EVENTS).where(EVENTS.c.escalation_id.in_(ids))).all()
    assert {(r.version, r.current_level, r.next_level, r.next_due_at, r.status) for r in rows} == {
        (4, 2, None, None, "active")}
    claimed = {page_id for _, claim in outcomes.values() if claim is not None for page_id in claim.delivery_ids}
    assert {p.id for p in pages} == claimed and {p.kind for p in pages} == {"slack_thread", "webhook"}
    assert all(p.status == "sending" and p.claimed_by == "pod-a:1:aaaa" for p in pages)
    assert len(events) == 5 and {e.kind for e in events} == {"paged"}
    # The holder marks them sent in one statement; a wrong token marks nothing.
    marks = SentMarks(engine, "pod-a:1:aaaa", clock)
    first = outcomes[(ids[0], 3)][1]
    assert first is not None
    marks.record(first.delivery_ids, "not-the-token")
    marks.record([p for _, c in outcomes.values() if c is not None for p in c.delivery_ids], first.token)
    with engine.connect() as conn:
        statuses = conn.execute(select(PAGES.c.status, PAGES.c.attempts).where(PAGES.c.escalation_id.in_(ids))).all()
    assert set(statuses) == {("sent", 1)}
