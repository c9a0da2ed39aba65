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


# -- the keyed chain ------------------------------------------------------------------------
KEY = "audit-key-for-tests-0123456789"


def _rewrite_with_plain_sha256(engine, row_id: int, detail: str) -> None:  # type: ignore[no-untyped-def]
    """What someone with database access but without the key can do: edit a row and recompute
    every hash after it the way the old unkeyed chain did."""
    from datetime import UTC

    from sqlalchemy.orm import Session

    from bot.store.audit import GENESIS, _hash
    from bot.store.models import AuditEntry, AuditHead

    with Session(engine) as session, session.begin():
        prev = GENESIS
        for entry in session.query(AuditEntry).order_by(AuditEntry.id):
            if entry.id == row_id:
                entry.detail = detail
            at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)
            entry.prev_hash = prev
            entry.entry_hash = _hash(prev, at, entry)
            prev = entry.entry_hash
            session.flush()
        session.get(AuditHead, 1).last_hash = prev  # type: ignore[union-attr]


def test_keyed_chain_cannot_be_rewritten_without_the_key(audit_log) -> None:  # type: ignore[no-untyped-def]
    _, engine = audit_log
    keyed = AuditLog(make_sessionmaker(engine), KEY)
    ids = [keyed.append(_record(i)).id for i in range(3)]
    assert keyed.verify() == []
    _rewrite_with_plain_sha256(engine, ids[1], "nothing happened here")
    problems = keyed.verify()
    assert any(f"entry {ids[1]}" in p for p in problems), problems
    # The same rows checked with another key fail too: the key is what makes the chain.
    assert AuditLog(make_sessionmaker(engine), "another-key-0000000000").verify()


def test_verify_without_the_key_says_so(audit_log) -> None:  # type: ignore[no-untyped-def]
    _, engine = audit_log
    AuditLog(make_sessionmaker(engine), KEY).append(_record(1))
    report = AuditLog(make_sessionmaker(engine)).verify_report()
    assert any("AIA_AUDIT_KEY is not set" in note for note in report.notes)
    assert report.keyed == 1


def test_unkeyed_rows_before_the_key_are_noted_then_rekeyed_and_downgrades_are_caught(audit_log) -> None:  # type: ignore[no-untyped-def]
    legacy, engine = audit_log  # no key: rows as written before migration 0007_audit_hmac
    legacy.append(_record(1))
    legacy.append(_record(2))
    keyed = AuditLog(make_sessionmaker(engine), KEY)
    keyed.append(_record(3))
    report = keyed.verify_report()
    assert report.problems == [] and report.unkeyed == 2 and any("rekey" in n for n in report.notes)
    legacy.append(_record(4))  # an unkeyed row after keyed ones: a downgrade
    assert any("downgrade" in p for p in keyed.verify())
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)"))
        last = conn.execute(text("SELECT id, entry_hash FROM audit_log ORDER BY id DESC LIMIT 1")).one()
        conn.execute(text("UPDATE audit_head SET last_id = :i, last_hash = :h"), {"i": last[0], "h": last[1]})
    assert keyed.verify() == []
    assert keyed.rekey() == 3
    after = keyed.verify_report()
    assert after.problems == [] and after.unkeyed == 0 and after.keyed == 3


def test_rekey_refuses_a_broken_chain(audit_log) -> None:  # type: ignore[no-untyped-def]
    legacy, engine = audit_log
    legacy.append(_record(1))
    legacy.append(_record(2))
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET detail = 'laundered' WHERE id = (SELECT min(id) FROM audit_log)"))
    with pytest.raises(ValueError, match="not re-keyed"):
        AuditLog(make_sessionmaker(engine), KEY).rekey()


def test_secret_arguments_are_masked_by_key_at_any_depth(audit_log) -> None:  # type: ignore[no-untyped-def]
    log, _ = audit_log
    entry = log.append(AuditRecord(actor="U0OPS01", action="config set", outcome="ok",
                                   arguments='{"pairs": {"DB_PASSWORD": "p4ss-w0rd-1", "LOG_LEVEL": "DEBUG"}}'))
    assert "p4ss-w0rd-1" not in entry.arguments and "DEBUG" in entry.arguments
