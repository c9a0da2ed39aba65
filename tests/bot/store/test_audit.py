from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.store.audit import AuditLog, AuditRecord
from bot.store.db import make_engine, make_sessionmaker, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_log(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/audit.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    migrate(engine)
    yield AuditLog(make_sessionmaker(engine)), engine
    engine.dispose()


def _record(i: int) -> AuditRecord:
    return AuditRecord(actor="U0OPS01", action="pods", outcome="ok", arguments=f'{{"i": {i}}}', detail="3 pods",
                       team_id="T0AIA", channel_id="C0ALERTS", risk="read")


def test_append_and_read_back_newest_first(audit_log) -> None:  # type: ignore[no-untyped-def]
    log, _ = audit_log
    for i in range(3):
        log.append(_record(i))
    entries = log.recent(2)
    assert [e.arguments for e in entries] == ['{"i": 2}', '{"i": 1}']
    assert log.verify() == []


def test_edited_row_is_detected(audit_log) -> None:  # type: ignore[no-untyped-def]
    log, engine = audit_log
    for i in range(3):
        log.append(_record(i))
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET outcome='refused' WHERE id = 2"))
    assert log.verify() == ["entry 2: content was edited"]


def test_deleted_row_is_detected(audit_log) -> None:  # type: ignore[no-untyped-def]
    log, engine = audit_log
    for i in range(3):
        log.append(_record(i))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = 2"))
    assert any("previous entry missing" in p for p in log.verify())


def test_deleted_newest_row_is_detected(audit_log) -> None:  # type: ignore[no-untyped-def]
    log, engine = audit_log
    for i in range(3):
        log.append(_record(i))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = 3"))
    assert any("newest entries missing" in p for p in log.verify())


def test_secrets_in_arguments_are_redacted(audit_log) -> None:  # type: ignore[no-untyped-def]
    log, _ = audit_log
    log.append(AuditRecord(actor="U1", action="x", outcome="ok",
                           arguments="token=xoxb-1234567890-abcdef postgres://app:hunter2@db/aia"))
    stored = log.recent(1)[0].arguments
    assert "xoxb-1234567890" not in stored and "hunter2" not in stored


def test_concurrent_appends_keep_one_chain(audit_log) -> None:  # type: ignore[no-untyped-def]
    log, _ = audit_log
    threads = [threading.Thread(target=lambda i=i: [log.append(_record(i * 10 + j)) for j in range(10)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log.recent(100)) == 40
    assert log.verify() == []


def test_two_engines_on_one_postgresql_keep_one_chain(pg_url: str) -> None:
    """Two replicas: separate engines and locks, one database."""
    engines = [make_engine(pg_url) for _ in range(2)]
    migrate(engines[0])
    migrate(engines[1])  # a second replica starting: a no-op, not an error
    logs = [AuditLog(make_sessionmaker(e)) for e in engines]
    threads = [threading.Thread(target=lambda lg=lg: [lg.append(_record(j)) for j in range(15)]) for lg in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(logs[0].recent(100)) == 30
    assert logs[1].verify() == []
    for e in engines:
        e.dispose()
