"""Alert threads through the persistent outbox, against the local Slack server."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from bot.alerts.payload import WebhookPayload
from bot.events import AlertGroupOpened, AlertGroupResolved
from bot.store.models import OutboxMessage
from sandbox.slack_server import block_kit_errors
from tests.bot.alerts.conftest import Recorder, make_core, parents
from tests.bot.alerts.payloads import alert, payload, resolved
from tests.harness.users import CHANNEL_ID


def _p(alerts: list[dict[str, Any]], group: str = "HighErrorRate") -> WebhookPayload:
    return WebhookPayload.model_validate(payload(alerts, group=group))


def _states(core) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with core.sessions() as session:
        counts: dict[str, int] = {}
        for state in session.scalars(select(OutboxMessage.state)):
            counts[state] = counts.get(state, 0) + 1
        return counts


def test_a_group_becomes_a_thread_that_resolves(alert_core, slack) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder(alert_core)
    bad_pod = next(p["metadata"]["name"] for p in _kube_pods(alert_core) if "blue" in p["metadata"]["name"])
    a = alert(pod=bad_pod)
    alert_core.alerts.receive(_p([a]))
    alert_core.alerts.outbox.start()
    parent = slack.wait_for(lambda: parents(slack))[0]
    assert "HighErrorRate" in parent.text and not block_kit_errors(parent.blocks)
    replies = slack.wait_for(lambda: [m for m in slack.messages(CHANNEL_ID) if m.thread_ts == parent.ts
                                      and m.ts != parent.ts], timeout=15)
    context = json.dumps(replies[0].blocks)
    assert "aia_run:" in context and bad_pod in context
    assert "top pods --sort cpu" in context
    opened = slack.wait_for(lambda: recorder.of(AlertGroupOpened))
    assert len(opened) == 1 and opened[0].channel_id == CHANNEL_ID and opened[0].thread_ts == parent.ts

    alert_core.alerts.receive(_p([resolved(a)]))
    updated = slack.wait_for(lambda: [m for m in slack.messages(CHANNEL_ID) if m.ts == parent.ts and "RESOLVED" in m.text])
    assert updated[0].edited and "Resolved after 12m" in json.dumps(updated[0].blocks)
    assert len(recorder.of(AlertGroupResolved)) == 1
    assert len(recorder.of(AlertGroupOpened)) == 1
    assert len(parents(slack)) == 1

    # Firing again later opens a new thread that links the old one.
    again = alert(pod=bad_pod, start=datetime.now(UTC))
    alert_core.alerts.receive(_p([again]))
    second = slack.wait_for(lambda: [m for m in parents(slack) if m.ts != parent.ts])[0]
    permalink = slack.calls_to("chat.getPermalink")[0].response["permalink"]
    assert f"<{permalink}|previous thread" in json.dumps(second.blocks)
    assert len(slack.wait_for(lambda: recorder.of(AlertGroupOpened) if len(recorder.of(AlertGroupOpened)) == 2
                              else None)) == 2


def _kube_pods(core) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return core.backends.kube.pods()


def test_updates_to_one_message_are_coalesced(sqlite_core, slack) -> None:  # type: ignore[no-untyped-def]
    service = sqlite_core.alerts
    service.receive(_p([alert(pod="p-0")]))
    service.outbox.start()
    parent = slack.wait_for(lambda: parents(slack))[0]
    service.outbox.stop()
    for i in range(1, 30):
        service.receive(_p([alert(pod=f"p-{n}") for n in range(i + 1)]))
    before = len(slack.calls_to("chat.update"))
    service.outbox.start()
    slack.wait_for(lambda: [m for m in slack.messages(CHANNEL_ID) if m.ts == parent.ts and "30 firing" in m.text])
    time.sleep(0.3)
    assert len(slack.calls_to("chat.update")) - before == 1
    assert len(parents(slack)) == 1


def test_429_and_500_for_a_while_lose_nothing(alert_core, slack) -> None:  # type: ignore[no-untyped-def]
    slack.fail("chat.postMessage", retry_after=1, times=2)
    slack.fail("chat.postMessage", status=500, times=2)
    slack.fail("chat.postMessage", status=503, times=1)
    service = alert_core.alerts
    for name in ("HighErrorRate", "HighMemoryUsage", "PodNotReady"):
        service.receive(_p([alert(name, pod="p-1")], group=name))
    service.outbox.start()
    slack.wait_for(lambda: len(parents(slack)) == 3, timeout=20)
    slack.wait_for(lambda: len([m for m in slack.messages(CHANNEL_ID) if m.is_reply]) == 3, timeout=20)
    time.sleep(0.3)
    assert len(parents(slack)) == 3
    ratelimited = [c for c in slack.calls_to("chat.postMessage") if c.http_status == 429]
    assert len(ratelimited) == 2
    assert _states(alert_core).get("failed", 0) == 0


def test_pacing_keeps_below_the_channel_rate_limit(bot_env, tmp_path, roles, slack) -> None:  # type: ignore[no-untyped-def]
    slack.post_rate_per_channel = 5.0
    core = make_core(bot_env, f"sqlite:///{tmp_path}/pace.db", roles, AIA_OUTBOX_POST_INTERVAL_SECONDS="0.25",
                     AIA_ALERT_CONTEXT="false")
    try:
        for i in range(6):
            core.alerts.receive(_p([alert(f"Alert{i}", pod="p")], group=f"Alert{i}"))
        started = time.monotonic()
        core.alerts.outbox.start()
        slack.wait_for(lambda: len(parents(slack)) == 6, timeout=20)
        assert time.monotonic() - started >= 1.2  # 6 posts, 0.25 s apart
        # Unpaced, 5 of the 6 would be refused; one 429 is jitter on an overloaded test machine.
        assert len([c for c in slack.calls_to("chat.postMessage") if c.http_status == 429]) <= 1
    finally:
        core.alerts.outbox.stop()
        core.engine.dispose()


def test_a_storm_posts_a_summary_and_critical_groups_first(bot_env, tmp_path, roles, slack) -> None:  # type: ignore[no-untyped-def]
    core = make_core(bot_env, f"sqlite:///{tmp_path}/storm.db", roles, AIA_ALERT_STORM_THRESHOLD="5",
                     AIA_ALERT_CONTEXT="false")
    try:
        for i in range(12):
            severity = "critical" if i % 4 == 3 else "warning"
            core.alerts.receive(_p([alert(f"Alert{i:02d}", severity=severity, pod="p")], group=f"Alert{i:02d}"))
        core.alerts.outbox.start()
        slack.wait_for(lambda: len(parents(slack)) == 12, timeout=20)
        top = [m for m in slack.messages(CHANNEL_ID) if not m.is_reply]
        first_post = slack.calls_to("chat.postMessage")[0].args["text"]
        assert "storm" in first_post.lower() and "12 alert groups" in first_post
        order = [m.text for m in top[1:]]
        assert all("[critical]" in t for t in order[:3]) and all("[warning]" in t for t in order[3:])
        over = slack.wait_for(lambda: [m for m in slack.messages(CHANNEL_ID) if "storm over" in m.text.lower()])
        assert over[0].ts == top[0].ts and "12 alert groups posted" in over[0].text
    finally:
        core.alerts.outbox.stop()
        core.engine.dispose()


def test_a_restart_loses_nothing(bot_env, database_url, roles, slack) -> None:  # type: ignore[no-untyped-def]
    first = make_core(bot_env, database_url, roles, AIA_ALERT_CONTEXT="false")
    for i in range(4):
        first.alerts.receive(_p([alert(f"Alert{i}", pod="p")], group=f"Alert{i}"))
    # A replica died while sending one row: its lease runs out and someone else sends it.
    with first.sessions() as session, session.begin():
        session.execute(update(OutboxMessage).where(OutboxMessage.id == 1)
                        .values(state="sending", lease_until=time.time() - 1, claimed_by="dead"))
    first.engine.dispose()
    second = make_core(bot_env, database_url, roles, AIA_ALERT_CONTEXT="false")
    try:
        second.alerts.outbox.start()
        slack.wait_for(lambda: len(parents(slack)) == 4, timeout=20)
        time.sleep(0.3)
        assert len(parents(slack)) == 4
    finally:
        second.alerts.outbox.stop()
        second.engine.dispose()


def test_two_replicas_share_the_work_without_duplicates(bot_env, roles, slack) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import fresh_pg_database

    slack.post_rate_per_channel = 10.0
    with fresh_pg_database() as url:
        replicas = [make_core(bot_env, url, roles, AIA_OUTBOX_POST_INTERVAL_SECONDS="0.15",
                              AIA_ALERT_CONTEXT="false") for _ in range(2)]
        try:
            for i in range(10):
                replicas[i % 2].alerts.receive(_p([alert(f"Alert{i}", pod="p")], group=f"Alert{i}"))
            for core in replicas:
                core.alerts.outbox.start()
            slack.wait_for(lambda: len(parents(slack)) == 10, timeout=20)
            time.sleep(0.5)
            assert len(parents(slack)) == 10
            # Each replica pacing alone would post twice as fast and earn a 429 every other post.
            assert len([c for c in slack.calls_to("chat.postMessage") if c.http_status == 429]) <= 1
        finally:
            for core in replicas:
                core.alerts.outbox.stop()
                core.engine.dispose()


def test_outbox_states_are_the_ones_stored_and_indexed(alert_core, slack) -> None:  # type: ignore[no-untyped-def]
    import re
    from pathlib import Path

    from bot.outbox import OutboxState

    assert all(len(state) <= OutboxMessage.__table__.c.state.type.length for state in OutboxState)
    # The coalescing index (model, migration, and the insert that must match it) is on pending rows.
    root = Path(__file__).parents[3]
    for source in ("bot/store/models.py", "bot/store/migrations/versions/0003_alerts_outbox.py", "bot/outbox.py"):
        assert set(re.findall(r"state = '(\w+)'", (root / source).read_text())) == {OutboxState.PENDING.value}

    # A real flow: queued rows are pending; one Slack refuses for good fails, the others are done.
    slack.fail("chat.postMessage", error="channel_not_found", times=1)
    service = alert_core.alerts
    for name in ("HighErrorRate", "HighMemoryUsage"):
        service.receive(_p([alert(name, pod="p-1")], group=name))
    assert set(_states(alert_core)) == {OutboxState.PENDING.value}
    service.outbox.start()
    slack.wait_for(lambda: set(_states(alert_core)) == {OutboxState.DONE.value, OutboxState.FAILED.value},
                   timeout=20)
