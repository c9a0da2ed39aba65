"""The stored operations: leases, claims after a crash, one winner per claim (real PostgreSQL)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from bot.store.cloud_operations import CloudOperationStore
from bot.store.db import make_engine, make_sessionmaker, migrate


@pytest.fixture
def store(pg_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(pg_url)
    migrate(engine)
    yield CloudOperationStore(make_sessionmaker(engine))
    engine.dispose()


def _create(store: CloudOperationStore, lease: float = 60.0):  # type: ignore[no-untyped-def]
    return store.create(kind="backup", project="a-467519", instance="mas-system-postgres", operation="op-1",
                        phase="backup", request={"description": "x"}, state={"backup_id": 7}, requested_by="U0OPS01",
                        command="db backup", channel_id="C0ALERTS", lease_seconds=lease)


def test_a_live_lease_is_not_claimed_and_its_owner_can_renew(store: CloudOperationStore) -> None:
    row, token = _create(store)
    assert store.claim_abandoned(60) == []
    assert store.renew(row.id, token, 60, phase="restore", state={"backup_id": 8})
    again = store.get(row.id)
    assert again is not None and again.phase == "restore" and again.state_data() == {"backup_id": 8}


def test_an_expired_lease_is_claimed_once_and_the_old_follower_is_locked_out(store: CloudOperationStore) -> None:
    row, old_token = _create(store, lease=0.2)
    time.sleep(0.4)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(lambda _: store.claim_abandoned(60), range(4)))
    winners = [c for c in claims if c]
    assert len(winners) == 1 and winners[0][0][0].id == row.id
    new_token = winners[0][0][1]
    assert not store.renew(row.id, old_token, 60)  # the follower that lost its lease stops
    assert not store.finish(row.id, old_token, "done", "late")
    assert store.finish(row.id, new_token, "done", "backup 7 done")
    finished = store.get(row.id)
    assert finished is not None and finished.status == "done" and finished.finished_at is not None
    assert store.claim_abandoned(0.1) == []  # finished rows are never resumed


def test_release_hands_the_row_over_without_waiting_for_the_lease(store: CloudOperationStore) -> None:
    row, token = _create(store, lease=3600)
    store.attach(row.id, "C0ALERTS", "1700000000.000100", "1700000000.000200")
    store.release(row.id, token)
    claimed = store.claim_abandoned(60)
    assert [r.id for r, _ in claimed] == [row.id]
    assert claimed[0][0].progress_ts == "1700000000.000200"
