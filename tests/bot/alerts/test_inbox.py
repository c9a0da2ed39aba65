"""The alert inbox: the webhook stores the body with one INSERT and answers; a background
folder applies it (groups, alerts, outbox rows) in batches, in order, exactly once in effect."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.routing import Route

from bot.alerts.inbox import FoldRound, InboxFolder
from bot.alerts.payload import parse_payload
from bot.events import AlertGroupChanged, AlertGroupResolved
from bot.store.models import AlertGroup, AlertInboxEntry, AlertRecord, AuditEntry, OutboxMessage
from bot.timeutil import assume_utc
from handlers.alertmanager import AlertmanagerWebhook
from tests.bot.alerts.conftest import Recorder, make_core
from tests.bot.alerts.payloads import T0, alert, payload, resolved

TOKEN = "inbox-test-webhook-token-5c2f"


def _body(alerts: list[dict[str, Any]], group: str = "HighErrorRate") -> bytes:
    return json.dumps(payload(alerts, group=group)).encode()


def _accept(core, body: bytes) -> None:  # type: ignore[no-untyped-def]
    core.alerts.accept(parse_payload(body), body)


def _fold_all(core) -> list[FoldRound]:  # type: ignore[no-untyped-def]
    rounds = []
    while True:
        rounds.append(core.alerts.fold_inbox())
        if not rounds[-1].more:
            return rounds


def _count(core, model, *where) -> int:  # type: ignore[no-untyped-def]
    with core.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)))


def test_a_webhook_is_one_inbox_row_until_it_is_folded(alert_core) -> None:  # type: ignore[no-untyped-def]
    _accept(alert_core, _body([alert(pod=f"p-{n}") for n in range(3)]))
    assert _count(alert_core, AlertInboxEntry) == 1
    assert _count(alert_core, AlertRecord) == 0 and _count(alert_core, AlertGroup) == 0

    rounds = _fold_all(alert_core)
    assert sum(r.folded for r in rounds) == 1
    assert [(r.new_alerts, r.opened) for r in rounds[0].results] == [(3, True)]
    assert _count(alert_core, AlertInboxEntry) == 0
    assert _count(alert_core, AlertRecord) == 3 and _count(alert_core, AlertGroup) == 1
    assert _count(alert_core, OutboxMessage, OutboxMessage.kind == "alert_group") == 1


def test_metrics_say_how_many_webhooks_wait(alert_core) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY, generate_latest

    def waiting() -> str:
        line = next(x for x in generate_latest(REGISTRY).decode().splitlines()
                    if x.startswith("aia_bot_alert_inbox_waiting "))
        return line.split()[1]

    _accept(alert_core, _body([alert(pod="p-1")]))
    _accept(alert_core, _body([alert(pod="p-1"), alert(pod="p-2")]))
    assert waiting() == "2.0"
    _fold_all(alert_core)
    assert waiting() == "0.0"


def test_duplicates_and_retries_change_nothing(alert_core) -> None:  # type: ignore[no-untyped-def]
    a, b = alert(pod="p-1"), alert(pod="p-2")
    first = _body([a])
    for body in (first, first, _body([a, b]), _body([a, b]), first):  # HA pair, a late retry
        _accept(alert_core, body)
    _fold_all(alert_core)
    _accept(alert_core, first)  # a retry after everything was folded
    _fold_all(alert_core)
    assert _count(alert_core, AlertGroup) == 1 and _count(alert_core, AlertRecord) == 2
    assert _count(alert_core, OutboxMessage) == 1 and _count(alert_core, AlertInboxEntry) == 0
    with alert_core.sessions() as session:
        group = session.scalars(select(AlertGroup)).one()
        assert (group.status, group.firing_count, group.resolved_count) == ("firing", 2, 0)


def test_the_same_body_after_another_one_is_applied_again(alert_core) -> None:  # type: ignore[no-untyped-def]
    """Only a copy directly after its twin is skipped unread: here the resolved copy must win.

    Alertmanager never saw "firing" for this alert (the bot was away): the first "resolved"
    stores nothing, a stale firing copy then opens it, and the HA peer's resolved copy closes it.
    """
    a = alert(pod="p-1")
    gone = _body([resolved(a)])
    for body in (gone, _body([a]), gone):
        _accept(alert_core, body)
    _fold_all(alert_core)
    with alert_core.sessions() as session:
        group = session.scalars(select(AlertGroup)).one()
        assert group.status == "resolved" and group.resolved_count == 1
        assert session.scalars(select(AlertRecord.status)).all() == ["resolved"]


def test_order_is_kept_within_a_batch(alert_core) -> None:  # type: ignore[no-untyped-def]
    """Fire, resolve and fire again (a new startsAt) folded in one transaction: two episodes."""
    a = alert(pod="p-1")
    again = alert(pod="p-1", start=T0 + timedelta(hours=1))
    for body in (_body([a]), _body([a, alert(pod="p-2")]), _body([resolved(a), resolved(alert(pod="p-2"))]),
                 _body([again])):
        _accept(alert_core, body)
    rounds = _fold_all(alert_core)
    assert len(rounds) == 1 and rounds[0].folded == 4
    with alert_core.sessions() as session:
        old, new = session.scalars(select(AlertGroup).order_by(AlertGroup.id)).all()
        assert (old.status, old.firing_count, old.resolved_count) == ("resolved", 0, 2)
        assert (new.status, new.firing_count, new.previous_id) == ("firing", 1, old.id)
        assert assume_utc(new.opened_at) == T0 + timedelta(hours=1)


def test_folding_publishes_events_for_threads_that_exist(alert_core) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder(alert_core)
    a = alert(pod="p-1")
    _accept(alert_core, _body([a]))
    _fold_all(alert_core)
    with alert_core.sessions.begin() as session:  # the parent is posted
        group = session.scalars(select(AlertGroup)).one()
        group.thread_ts, group.channel_id, group.opened_published = "1.000001", "C0ALERTS", True
    _accept(alert_core, _body([a, alert(pod="p-2")]))
    _accept(alert_core, _body([resolved(a), resolved(alert(pod="p-2"))]))
    _fold_all(alert_core)
    assert [e.new_alert_count for e in recorder.of(AlertGroupChanged)] == [1]
    assert len(recorder.of(AlertGroupResolved)) == 1


def test_rows_left_by_a_stopped_replica_are_folded_after_a_restart(bot_env, tmp_path, roles) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/restart.db"
    first = make_core(bot_env, url, roles)
    for i in range(5):
        _accept(first, _body([alert(f"Alert{i}", pod="p")], group=f"Alert{i}"))
    first.alerts.folder.stop()
    first.engine.dispose()  # "crashed" before its folder ran

    second = make_core(bot_env, url, roles)
    try:
        assert _count(second, AlertInboxEntry) == 5
        second.alerts.folder.start()
        deadline = time.monotonic() + 10
        while _count(second, AlertInboxEntry) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _count(second, AlertInboxEntry) == 0
        assert _count(second, AlertGroup) == 5
        assert _count(second, OutboxMessage, OutboxMessage.kind == "alert_group") == 5
    finally:
        second.alerts.folder.stop()
        second.engine.dispose()


def test_a_row_that_cannot_be_applied_does_not_hold_up_the_others(alert_core, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("First", "Poison", "Third"):
        _accept(alert_core, _body([alert(name, pod="p")], group=name))
    real = alert_core.alerts.store._refresh_group

    def refuse_poison(batch, group, data, new, resolving):  # type: ignore[no-untyped-def]
        if data.group_key.endswith('"Poison"}'):
            raise ValueError("cannot apply this one")
        return real(batch, group, data, new, resolving)

    monkeypatch.setattr(alert_core.alerts.store, "_refresh_group", refuse_poison)
    _fold_all(alert_core)
    # The batch rolled back as a whole, then went row by row: two applied, one kept with its error.
    assert _count(alert_core, AlertGroup) == 2 and _count(alert_core, AlertRecord) == 2
    with alert_core.sessions() as session:
        left = session.scalars(select(AlertInboxEntry)).one()
        assert left.attempts == 1 and "cannot apply this one" in (left.last_error or "")
    monkeypatch.setattr(alert_core.alerts.store, "_refresh_group", real)
    _fold_all(alert_core)
    assert _count(alert_core, AlertGroup) == 3 and _count(alert_core, AlertInboxEntry) == 0


def test_the_folder_survives_a_database_outage() -> None:
    calls: list[float] = []
    folded = threading.Event()

    def fold() -> FoldRound:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        folded.set()
        return FoldRound()

    folder = InboxFolder(fold, poll_seconds=0.05)
    folder.start()
    try:
        assert folded.wait(10)
    finally:
        folder.stop()
    assert len(calls) >= 3 and calls[2] - calls[1] >= 0.2  # backed off between tries


class _Stream:
    """Pokes a folder like a replica's webhooks: every ``every`` seconds for ``seconds``."""

    def __init__(self, folder: InboxFolder, every: float, seconds: float) -> None:
        self.folder, self.every, self.seconds = folder, every, seconds
        self.first = self.last = 0.0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.first = time.monotonic()
        while time.monotonic() - self.first < self.seconds:
            self.folder.poke()
            self.last = time.monotonic()
            time.sleep(self.every)

    def __enter__(self) -> _Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


def test_a_lone_webhook_is_folded_at_once() -> None:
    folds: list[float] = []
    folder = InboxFolder(lambda: folds.append(time.monotonic()) or FoldRound(), poll_seconds=5, hold_seconds=2)
    folder.start()
    try:
        time.sleep(0.2)
        folds.clear()
        poked = time.monotonic()
        folder.poke()
        time.sleep(0.5)
    finally:
        folder.stop()
    assert folds and 0.015 <= folds[0] - poked < 0.3


def test_folding_waits_while_webhooks_keep_arriving_but_no_longer_than_the_hold() -> None:
    folds: list[float] = []
    folder = InboxFolder(lambda: folds.append(time.monotonic()) or FoldRound(), poll_seconds=5, hold_seconds=0.4)
    folder.start()
    try:
        time.sleep(0.2)
        folds.clear()
        with _Stream(folder, every=0.005, seconds=1.5) as stream:
            pass
        time.sleep(0.3)
    finally:
        folder.stop()
    during = [t for t in folds if t <= stream.last]
    # Answering comes first: no fold before the hold, then one per hold at most...
    assert during and during[0] - stream.first >= 0.35
    assert len(during) <= 5
    # ...and never a wait longer than the hold (plus a scheduling margin).
    gaps = [b - a for a, b in zip([stream.first, *during], during, strict=False)]
    assert max(gaps) < 0.4 + 0.25
    # Once the webhooks stop, what is left is folded after a short pause.
    assert any(0 < t - stream.last < 0.25 for t in folds)


def test_a_storm_longer_than_the_hold_is_folded_as_it_arrives() -> None:
    """A backlog older than the hold is never held again: the folder works through it
    back to back while the webhooks go on (the inbox cannot grow without bound)."""
    folds: list[float] = []
    stream_on = threading.Event()

    def fold() -> FoldRound:
        folds.append(time.monotonic())
        time.sleep(0.005)
        return FoldRound(more=stream_on.is_set())  # a backlog while the storm lasts

    folder = InboxFolder(fold, poll_seconds=5, hold_seconds=0.3)
    folder.start()
    try:
        time.sleep(0.2)
        folds.clear()
        stream_on.set()
        with _Stream(folder, every=0.005, seconds=1.2) as stream:
            pass
        stream_on.clear()
        time.sleep(0.2)
    finally:
        folder.stop()
    assert folds[0] - stream.first >= 0.25  # the first hold
    after_hold = [t for t in folds if stream.first + 0.6 <= t <= stream.last]
    assert len(after_hold) >= 20  # back to back, not one per hold


# -- the HTTP endpoint --------------------------------------------------------------------
def _post(core, body: bytes, token: str | None = TOKEN) -> httpx.Response:  # type: ignore[no-untyped-def]
    app = Starlette(routes=[Route("/alertmanager", AlertmanagerWebhook(core).handle, methods=["POST"])])
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as client:
            return await client.post("/alertmanager", content=body, headers=headers)

    return asyncio.run(send())


def test_the_endpoint_answers_once_the_body_is_stored(bot_env, database_url, roles) -> None:  # type: ignore[no-untyped-def]
    core = make_core(bot_env, database_url, roles, ALERTMANAGER_WEBHOOK_TOKEN=TOKEN)
    try:
        answer = _post(core, _body([alert(pod="p-1"), alert(pod="p-2")]))
        assert answer.status_code == 200 and answer.json() == {"status": "ok", "alerts": 2}
        assert _count(core, AlertInboxEntry) == 1
        assert _post(core, b"{not json").status_code == 400
        assert _post(core, _body([alert()]), token="wrong").status_code == 401
        assert _count(core, AlertInboxEntry) == 1
        _fold_all(core)
        assert _count(core, AlertRecord) == 2
    finally:
        core.alerts.folder.stop()
        core.engine.dispose()


def test_database_down_is_503_and_nothing_is_half_stored(bot_env, pg_url, roles, tmp_path) -> None:  # type: ignore[no-untyped-def]
    core = make_core(bot_env, pg_url, roles, ALERTMANAGER_WEBHOOK_TOKEN=TOKEN)
    inbox = core.alerts.inbox
    try:
        # Nothing listens there: every connection attempt is refused, as when PostgreSQL is down.
        live, inbox._writer = inbox._writer, create_engine("postgresql+psycopg://postgres@127.0.0.1:9/aia",
                                                           isolation_level="AUTOCOMMIT")
        answer = _post(core, _body([alert(pod="p-1")]))
        assert answer.status_code == 503 and "retry" in answer.json()["error"]
        assert _count(core, AlertInboxEntry) == 0 and _count(core, AlertRecord) == 0
        # Database back: Alertmanager's retry goes through, once.
        inbox._writer.dispose()
        inbox._writer = live
        assert _post(core, _body([alert(pod="p-1")])).status_code == 200
        _fold_all(core)
        assert _count(core, AlertRecord) == 1 and _count(core, AlertGroup) == 1
        # Successful webhooks are not audited; refused ones are (and never with the token).
        with core.sessions() as session:
            assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    finally:
        core.alerts.folder.stop()
        core.engine.dispose()
