"""Persisting alerts: identity is (groupKey, fingerprint, startsAt); duplicates change nothing."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from bot.alerts.payload import WebhookPayload
from bot.store.models import AlertGroup, AlertRecord, OutboxMessage
from tests.bot.alerts.payloads import T0, alert, payload, resolved


def _p(alerts):  # type: ignore[no-untyped-def]
    return WebhookPayload.model_validate(payload(alerts))


def _count(core, model) -> int:  # type: ignore[no-untyped-def]
    with core.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)))


def test_new_duplicate_resolved_and_refired(alert_core) -> None:  # type: ignore[no-untyped-def]
    service = alert_core.alerts
    a, b = alert(pod="p-1"), alert(pod="p-2")
    first = service.receive(_p([a]))
    assert first.opened and first.new_alerts == 1
    # Alertmanager re-sends the whole group, and its HA peer sends it too.
    again = service.receive(_p([a, b]))
    assert again.group_id == first.group_id and again.new_alerts == 1 and not again.opened
    assert service.receive(_p([a, b])).changed is False
    assert _count(alert_core, AlertRecord) == 2
    half = service.receive(_p([resolved(a), b]))
    assert half.resolved_alerts == 1 and not half.resolved
    done = service.receive(_p([resolved(a), resolved(b)]))
    assert done.resolved and done.group_id == first.group_id
    # A late "firing" copy from the other Alertmanager does not reopen anything.
    stale = service.receive(_p([a]))
    assert stale.group_id is None and stale.stale == 1 and not stale.changed
    # Firing again later (new startsAt) is a new episode that links the old one.
    later = service.receive(_p([alert(pod="p-1", start=T0 + timedelta(hours=2))]))
    assert later.opened and later.group_id != first.group_id
    with alert_core.sessions() as session:
        group = session.get(AlertGroup, later.group_id)
        assert group.previous_id == first.group_id and group.status == "firing"
        old = session.get(AlertGroup, first.group_id)
        assert old.status == "resolved" and old.firing_count == 0 and old.resolved_count == 2


def test_changes_leave_one_pending_outbox_row_per_group(alert_core) -> None:  # type: ignore[no-untyped-def]
    service = alert_core.alerts
    for i in range(10):
        service.receive(_p([alert(pod=f"p-{n}") for n in range(i + 1)]))
    with alert_core.sessions() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "alert_group")).all()
    assert len(rows) == 1 and rows[0].state == "pending"


def test_severity_is_the_worst_of_the_group(alert_core) -> None:  # type: ignore[no-untyped-def]
    result = alert_core.alerts.receive(_p([alert(pod="a"), alert(pod="b", severity="critical")]))
    with alert_core.sessions() as session:
        group = session.get(AlertGroup, result.group_id)
        assert group.severity == "critical" and group.severity_rank == 0


def test_replicas_ingesting_the_same_payload_at_once_make_one_group(alert_core) -> None:  # type: ignore[no-untyped-def]
    data = _p([alert(pod=f"p-{n}") for n in range(20)])
    errors: list[BaseException] = []

    def send() -> None:  # each thread plays a replica with its own writer
        try:
            alert_core.alerts.store.ingest(data)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if alert_core.engine.dialect.name == "sqlite":
        errors = [e for e in errors if "locked" not in str(e)]
    assert not errors
    assert _count(alert_core, AlertGroup) == 1
    assert _count(alert_core, AlertRecord) == 20


def test_alert_statuses_are_the_ones_stored_and_indexed(alert_core) -> None:  # type: ignore[no-untyped-def]
    import re
    from pathlib import Path

    from bot.alerts.payload import AlertStatus

    for model in (AlertGroup, AlertRecord):
        assert all(len(status) <= model.__table__.c.status.type.length for status in AlertStatus)
    # The one-firing-episode-per-group index names the firing status in SQL.
    root = Path(__file__).parents[3]
    for source in ("bot/store/models.py", "bot/store/migrations/versions/0003_alerts_outbox.py"):
        assert set(re.findall(r"status = '(\w+)'", (root / source).read_text())) == {AlertStatus.FIRING.value}

    # A real flow: one group fires, a second fires and resolves; the rows hold the enum's values.
    a = alert(pod="p-1")
    alert_core.alerts.receive(WebhookPayload.model_validate(payload([alert(pod="p-2")], group="Other")))
    alert_core.alerts.receive(_p([a]))
    alert_core.alerts.receive(_p([resolved(a)]))
    with alert_core.sessions() as session:
        for model in (AlertGroup, AlertRecord):
            stored = set(session.scalars(select(model.status)))
            assert stored == {status.value for status in AlertStatus}, model
