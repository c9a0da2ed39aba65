"""The refusal sampler: counted always, audited once per source per interval."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.store.audit import AuditLog
from bot.store.db import make_engine, make_sessionmaker, migrate
from handlers.request_guard import RefusalSampler


def test_one_audit_row_per_source_per_interval_with_the_count(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/a.db")
    migrate(engine)
    audit = AuditLog(make_sessionmaker(engine), "key-0123456789abcdef")
    now = [1000.0]
    sampler = RefusalSampler(audit, interval=60, clock=lambda: now[0])

    async def flood(source: str, times: int) -> None:
        for _ in range(times):
            await sampler.refused("/slack/events", source, "bad signature")

    asyncio.run(flood("10.0.0.1", 500))
    asyncio.run(flood("10.0.0.2", 3))
    rows = audit.recent(100)
    assert len(rows) == 2  # the first refusal of each source, at once
    now[0] += 61
    asyncio.run(flood("10.0.0.1", 1))
    newest = audit.recent(1)[0]
    assert len(audit.recent(100)) == 3 and '"count": 500' in newest.arguments  # 499 held back + this one
    assert audit.verify() == []


def test_the_source_table_is_bounded() -> None:
    sampler = RefusalSampler(None, interval=60, max_sources=10)  # type: ignore[arg-type]
    for i in range(100):
        sampler.due("/alertmanager", f"10.0.{i}.1")
    assert len(sampler._seen) == 10
