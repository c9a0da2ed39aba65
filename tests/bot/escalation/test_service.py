"""Escalation service against real PostgreSQL, SMTP and a webhook receiver, with the local Slack."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.core import Core
from bot.escalation.service import EscalationService
from bot.events import AlertGroupChanged, AlertGroupOpened, AlertGroupResolved, BreakGlassUsed
from bot.service import OutcomeKind
from bot.store.models import AuditEntry, Escalation, EscalationDelivery
from sandbox.slack_server import FakeSlackServer
from tests.bot.escalation.conftest import ROUTING_KEY, CoreFactory, ShiftedClock, policy_dict
from tests.harness.calls import run_as
from tests.harness.smtp import SMTP_PASSWORD, SmtpServer
from tests.harness.users import CHANNEL_ID
from tests.harness.webhook_receiver import WebhookReceiver

LONG = "1h"  # a wait no test sits out: the next level only comes by hand


def _esc(core: Core) -> EscalationService:
    assert core.escalation is not None
    return core.escalation


def _page(core: Core, text: str = "page 1 API answers 500", who: str = "operator") -> str:
    outcome = run_as(core, who, text)
    assert outcome.kind is OutcomeKind.OK, outcome.message
    return outcome.message.split()[1]  # "escalation EXXXXXX started at level N"


def _thread(slack: FakeSlackServer, core: Core, esc_id: str) -> list[str]:
    row = _esc(core).get(esc_id)
    assert row is not None and row.thread_ts
    return [m.text for m in slack.thread(CHANNEL_ID, row.thread_ts) if m.ts != row.card_ts]


def _wait_thread(slack: FakeSlackServer, core: Core, esc_id: str, needle: str, timeout: float = 10) -> list[str]:
    return slack.wait_for(lambda: (t := _thread(slack, core, esc_id)) and any(needle in x for x in t) and t,
                          timeout=timeout)


def _dms(slack: FakeSlackServer, esc_id: str) -> Counter[str]:
    return Counter(m.channel for m in slack.messages() if m.channel.startswith("D") and esc_id in m.text)


def test_manual_page_walks_the_chain_once(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                          smtp_server: SmtpServer, webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait="1s"))
    esc_id = _page(core)
    thread = _wait_thread(slack, core, esc_id, "Paging level 4", timeout=15)
    time.sleep(0.5)
    thread = _thread(slack, core, esc_id)
    pages = [t for t in thread if "Paging level" in t]
    assert [p.split("·")[0].split("level ")[1].strip() for p in pages] == ["1", "2", "3", "4"]
    assert "last page of the chain" in pages[-1]
    # Mention + DM for users and user-group members, exactly once each.
    assert _dms(slack, esc_id) == Counter({"D0OPS01": 1, "D0ONCALL": 1, "D0APR01": 1, "D0ADM01": 1, "D0VIEW1": 1})
    mails = smtp_server.received(esc_id)
    assert sorted((m.rcpt_tos[0], m.message["X-AIA-Level"]) for m in mails) == [
        ("devops@013a.tech", "3"), ("oncall@013a.tech", "1")]
    events = webhook.received(esc_id)
    assert [(e.action, e.details["level"]) for e in events] == [("trigger", 3)]
    assert events[0].body["routing_key"] == ROUTING_KEY
    # The card says where things stand, updated in place.
    row = _esc(core).get(esc_id)
    assert row is not None and row.card_ts
    card = next(m for m in slack.messages(CHANNEL_ID) if m.ts == row.card_ts)
    assert "chain has run out" in card.text and card.edited


def test_ack_stops_the_timers_and_says_who(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                           webhook: WebhookReceiver, esc_clock: ShiftedClock) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait="2s"))
    esc_id = _page(core)
    _wait_thread(slack, core, esc_id, "Paging level 1")
    level2 = _esc(core).get(esc_id)
    assert level2 is not None and level2.next_level == 2
    outcome = run_as(core, "oncall", "ack")  # the only open escalation of the channel; viewer via S0ONCALL
    assert outcome.kind is OutcomeKind.OK, outcome.message
    thread = _wait_thread(slack, core, esc_id, "Acknowledged")
    assert any("<@U0ONCALL>" in t and "level 1 on-call had been paged" in t for t in thread)
    esc_clock.advance(3)  # level 2 was due by now: its timer finds the acknowledgement
    assert _esc(core).fire(esc_id, level2.version) == "stale"
    assert esc_id not in {e for e, _, _ in _esc(core).due_steps(horizon_seconds=3600)}
    assert not any("Paging level 2" in t for t in _thread(slack, core, esc_id))
    again = run_as(core, "operator", f"ack {esc_id}")
    assert again.kind is OutcomeKind.USER_ERROR and "already acknowledged by <@U0ONCALL>" in again.message
    assert run_as(core, "nobody", f"ack {esc_id}").kind is OutcomeKind.REFUSED


def _race(timer: EscalationService, person: EscalationService, esc_id: str, version: int,
          ack_delay: float) -> dict[str, object]:
    """The timer of one replica and an acknowledgement on another, released together
    (the acknowledgement a few milliseconds later or earlier, so both orders happen)."""
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def fire() -> None:
        barrier.wait()
        results["fire"] = timer.fire(esc_id, version)

    def ack() -> None:
        barrier.wait()
        time.sleep(ack_delay)
        results["ack"] = person.acknowledge(esc_id, "U0OPS01").text

    threads = [threading.Thread(target=fire), threading.Thread(target=ack)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_ack_racing_the_timer_exactly_one_wins(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                               webhook: WebhookReceiver) -> None:
    replica_a = esc_core_factory(policy_dict(webhook.url, wait=LONG), scheduler=False)
    replica_b = esc_core_factory(policy_dict(webhook.url, wait=LONG), scheduler=False)
    outcomes = Counter()
    for trial in range(8):
        esc_id = _page(replica_a)
        _wait_thread(slack, replica_a, esc_id, "Paging level 1")
        with replica_a.sessions.begin() as session:  # level 2 is due right now
            row = session.get(Escalation, esc_id)
            assert row is not None
            version = row.version
            row.next_due_at = row.next_due_at - timedelta(hours=1, seconds=1)  # type: ignore[operator]
        results = _race(_esc(replica_b), _esc(replica_a), esc_id, version,
                        ack_delay=random.uniform(0, 0.004) if trial % 2 else random.uniform(0.004, 0.02))
        level2 = [d for d in _esc(replica_a).pages_of(esc_id) if d.level == 2]
        if results["fire"] == "fired":
            outcomes["timer"] += 1
            assert "level 2 troubleshooting had been paged" in str(results["ack"])
            assert level2
        else:
            outcomes["ack"] += 1
            assert "level 1 on-call had been paged" in str(results["ack"])
            assert not level2
        thread = _wait_thread(slack, replica_a, esc_id, "Acknowledged")
        assert sum("Acknowledged" in t for t in thread) == 1
        run_as(replica_a, "operator", f"resolve {esc_id}")
    assert sum(outcomes.values()) == 8
    print("race outcomes:", dict(outcomes))


def test_batches_of_due_steps_on_two_replicas_page_each_step_once(
    esc_core_factory: CoreFactory, slack: FakeSlackServer, webhook: WebhookReceiver
) -> None:
    """The claimer's batches: two replicas handed the same due steps at the same moment (as
    first choice and backup timers are under load) page each step exactly once; stale and
    unknown steps in a batch change nothing."""
    replica_a = esc_core_factory(policy_dict(webhook.url, wait=LONG), scheduler=False)
    replica_b = esc_core_factory(policy_dict(webhook.url, wait=LONG), scheduler=False)
    ids = [_page(replica_a, f"page 1 batch {i}") for i in range(6)]
    for esc_id in ids:
        _wait_thread(slack, replica_a, esc_id, "Paging level 1")
    steps: list[tuple[str, int]] = []
    with replica_a.sessions.begin() as session:  # level 2 of each is due right now
        for esc_id in ids:
            row = session.get(Escalation, esc_id)
            assert row is not None
            row.next_due_at = row.next_due_at - timedelta(hours=1, seconds=1)  # type: ignore[operator]
            steps.append((esc_id, row.version))
    extra = [(ids[0], steps[0][1] - 1), ("ENOSUCH", 1)]
    barrier = threading.Barrier(2)
    results: dict[str, dict[tuple[str, int], str]] = {}

    def claim(replica: Core, batch: list[tuple[str, int]]) -> None:
        barrier.wait()
        results["a" if replica is replica_a else "b"] = _esc(replica).fire_many(batch)

    threads = [threading.Thread(target=claim, args=(replica_a, steps + extra)),
               threading.Thread(target=claim, args=(replica_b, list(reversed(steps))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fired = Counter(step for result in results.values() for step, outcome in result.items() if outcome == "fired")
    # A step locked by the other replica's claim at that instant comes back "later" (tried again
    # shortly, then found fired); none is fired twice.
    assert all(count == 1 for count in fired.values()), fired
    assert results["a"][extra[0]] == "stale" and results["a"][extra[1]] == "stale"
    for step in steps:
        if step not in fired:
            assert _esc(replica_a).fire(*step) == "stale"
    for esc_id in ids:
        _wait_thread(slack, replica_a, esc_id, "Paging level 2")
    time.sleep(0.5)
    for esc_id in ids:
        assert sum("Paging level 2" in t for t in _thread(slack, replica_a, esc_id)) == 1
        assert sum(d.kind == "slack_thread" and d.level == 2 for d in _esc(replica_a).pages_of(esc_id)) == 1


def test_replicas_page_each_step_exactly_once(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                              smtp_server: SmtpServer, webhook: WebhookReceiver) -> None:
    replicas = [esc_core_factory(policy_dict(webhook.url, wait="1s")) for _ in range(3)]
    esc_id = _page(replicas[1])
    _wait_thread(slack, replicas[0], esc_id, "Paging level 4", timeout=15)
    time.sleep(1.5)
    pages = [t for t in _thread(slack, replicas[0], esc_id) if "Paging level" in t]
    assert len(pages) == 4
    assert sum(_dms(slack, esc_id).values()) == 5
    assert len(smtp_server.received(esc_id)) == 2
    assert len(webhook.received(esc_id)) == 1
    fired_by = {d.sent_by for d in _esc(replicas[0]).pages_of(esc_id)}
    assert fired_by  # whoever won; the counts above are what matters


def test_restart_fires_overdue_steps_in_order_and_says_how_late(
    esc_core_factory: CoreFactory, slack: FakeSlackServer, webhook: WebhookReceiver, esc_clock: ShiftedClock
) -> None:
    # "Process A" has no scheduler: it dies right after the first page.
    crashed = esc_core_factory(policy_dict(webhook.url, wait="1s"), scheduler=False)
    esc_id = _page(crashed)
    _wait_thread(slack, crashed, esc_id, "Paging level 1")
    esc_clock.advance(3.2)  # levels 2, 3 and 4 fall due while nobody runs
    esc_core_factory(policy_dict(webhook.url, wait="1s"))  # the restart
    thread = _wait_thread(slack, crashed, esc_id, "Paging level 4")
    pages = [t for t in thread if "Paging level" in t]
    assert [p.split("·")[0].split("level ")[1].strip() for p in pages] == ["1", "2", "3", "4"]
    assert all("late" in p for p in pages[1:3]), pages
    assert "late" not in pages[0]


def test_snooze_pauses_then_pages_the_level_again(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                                  webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait="3s"))
    esc_id = _page(core)
    _wait_thread(slack, core, esc_id, "Paging level 1")
    assert run_as(core, "oncall", "snooze 1s").kind is OutcomeKind.REFUSED  # silencing paging is a write: operator
    assert run_as(core, "operator", "snooze 1s").kind is OutcomeKind.OK
    thread = _wait_thread(slack, core, esc_id, "the snooze is over")
    assert any("Snoozed" in t for t in thread)
    pages = [t for t in thread if "Paging level" in t]
    assert [p.split("·")[0].split("level ")[1].strip() for p in pages] == ["1", "1"]


def test_escalate_now_pages_the_next_level(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                           webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    esc_id = _page(core)
    _wait_thread(slack, core, esc_id, "Paging level 1")
    assert run_as(core, "operator", "escalate").kind is OutcomeKind.OK
    thread = _wait_thread(slack, core, esc_id, "Paging level 2")
    assert any("<@U0OPS01> escalated now" in t for t in thread)


def test_alert_groups_start_stop_and_repage(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                            webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG, repage_on_new_alerts=True))
    assert core.web is not None
    parent = core.web.chat_postMessage(channel=CHANNEL_ID, text="HighErrorRate firing")["ts"]
    opened = AlertGroupOpened(7, "{}:{alertname=\"HighErrorRate\"}", "critical", {"alertname": "HighErrorRate"},
                              CHANNEL_ID, parent)
    core.events.publish(opened)
    core.events.publish(opened)  # a replay (another replica, a retry) starts nothing more
    core.events.publish(AlertGroupOpened(8, "k8", "warning", {"alertname": "Slow"}, CHANNEL_ID, parent))
    slack.wait_for(lambda: any("Paging level 1" in m.text for m in slack.thread(CHANNEL_ID, parent)))
    time.sleep(0.5)
    assert len(_esc(core).open_escalations()) == 1
    card = next(m for m in slack.thread(CHANNEL_ID, parent) if m.text.startswith("Escalation"))
    assert card.thread_ts == parent and "HighErrorRate" in card.text
    esc_id = _esc(core).open_escalations()[0].id
    run_as(core, "oncall", "ack")
    core.events.publish(AlertGroupChanged(7, 2))
    _wait_thread(slack, core, esc_id, "new alerts joined")
    core.events.publish(AlertGroupResolved(7))
    thread = _wait_thread(slack, core, esc_id, "Resolved")
    assert any("alertmanager" in t and "the alert group resolved" in t for t in thread)
    assert _esc(core).open_escalations() == []


def test_new_alerts_do_not_repage_by_default(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                             webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    core.events.publish(AlertGroupOpened(9, "k9", "critical", {"alertname": "PodDown"}, CHANNEL_ID, "1.000001"))
    slack.wait_for(lambda: _esc(core).open_escalations())
    esc_id = _esc(core).open_escalations()[0].id
    _wait_thread(slack, core, esc_id, "Paging level 1")
    run_as(core, "oncall", f"ack {esc_id}")
    core.events.publish(AlertGroupChanged(9, 3))
    slack.wait_for(lambda: any(e.kind == "new_alerts" and "not re-paged" in e.detail
                               for e in _esc(core).events_of(esc_id)))
    assert sum("Paging level" in t for t in _thread(slack, core, esc_id)) == 1


def test_break_glass_pages_level_3(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                   smtp_server: SmtpServer, webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    core.events.publish(BreakGlassUsed("U0ADM01", "bluegreen switch", "prod is down", CHANNEL_ID, None))
    views = slack.wait_for(lambda: _esc(core).open_escalations())
    esc_id = views[0].id
    thread = _wait_thread(slack, core, esc_id, "Paging level 3")
    assert views[0].source == "break_glass" and "Break-glass" in views[0].title
    assert not any("Paging level 1" in t for t in thread)
    slack.wait_for(lambda: webhook.received(esc_id) and smtp_server.received(esc_id))
    assert smtp_server.received(esc_id)[0].rcpt_tos == ["devops@013a.tech"]


def test_smtp_down_retries_and_slack_paging_goes_on(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                                    smtp_server: SmtpServer, webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    smtp_server.down()
    try:
        esc_id = _page(core)
        thread = _wait_thread(slack, core, esc_id, "failed")
        note = next(t for t in thread if "failed" in t)
        assert "Email page to oncall@013a.tech failed" in note and "refused the connection" in note
        assert "Retrying in" in note and "Slack paging goes on" in note
        assert _dms(slack, esc_id) == Counter({"D0OPS01": 1, "D0ONCALL": 1})
    finally:
        smtp_server.up()
    _wait_thread(slack, core, esc_id, "went out on attempt", timeout=15)
    assert len(smtp_server.received(esc_id)) == 1


def test_webhook_lifecycle_shares_one_dedup_key(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                                webhook: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    esc_id = _page(core, "page devops-team database unreachable")
    slack.wait_for(lambda: webhook.received(esc_id))
    webhook.failures.append(503)  # the acknowledge is retried
    run_as(core, "admin", "ack")
    slack.wait_for(lambda: len(webhook.received(esc_id)) == 2, timeout=10)
    run_as(core, "admin", f"resolve {esc_id}")
    slack.wait_for(lambda: len(webhook.received(esc_id)) == 3, timeout=10)
    events = webhook.received(esc_id)
    assert [e.action for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e.dedup_key for e in events} == {f"aia-escalation-{esc_id}"}
    # Secrets: never in Slack, the audit log or the logs.
    with core.sessions() as session:
        audit_text = " ".join(f"{e.arguments} {e.detail}" for e in session.query(AuditEntry).all())
    everything = str([c.args for c in slack.calls]) + audit_text + caplog.text
    assert ROUTING_KEY not in everything and SMTP_PASSWORD not in everything


def test_timeline_holds_pages_acks_and_procedures(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                                  webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    esc_id = _page(core)
    _wait_thread(slack, core, esc_id, "Paging level 1")
    run_as(core, "viewer", "endpoints")
    run_as(core, "oncall", "ack")
    outcome = run_as(core, "operator", "timeline")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    upload = slack.wait_for(lambda: [f for f in slack.files if f.completed and f.filename == f"timeline-{esc_id}.md"])[0]
    row = _esc(core).get(esc_id)
    assert row is not None and upload.thread_ts == row.thread_ts
    text = upload.content.decode()
    for needle in ("# Incident timeline", "Escalation started", "Paged: level 1 on-call", "U0OPS01",
                   "`/aia endpoints`", "Acknowledged", "U0ONCALL", "`/aia page`"):
        assert needle in text, needle


def test_commands_that_need_one_escalation_say_which(esc_core_factory: CoreFactory, webhook: WebhookReceiver,
                                                     slack: FakeSlackServer) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    none = run_as(core, "operator", "ack")
    assert none.kind is OutcomeKind.USER_ERROR and "no open escalation in this channel" in none.message
    first, second = _page(core), _page(core, "page 2 disk full")
    several = run_as(core, "operator", "resolve")
    assert several.kind is OutcomeKind.USER_ERROR and first in several.message and second in several.message
    bad = run_as(core, "operator", "page 9 x")
    assert bad.kind is OutcomeKind.USER_ERROR and "no level `9`" in bad.message and "4 architect" in bad.message
    assert run_as(core, "operator", "ack not-an-id").kind is OutcomeKind.USER_ERROR
    oncall = run_as(core, "viewer", "oncall")
    assert oncall.kind is OutcomeKind.OK and oncall.result is not None
    shown = str(oncall.result.parts)
    assert "<@U0ONCALL>" in shown and "on-call" in shown and first in shown


def test_a_dead_claim_holder_is_covered_after_its_lease(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                                        webhook: WebhookReceiver) -> None:
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    esc_id = _page(core)
    slack.wait_for(lambda: sum(_dms(slack, esc_id).values()) == 2)
    now = _esc(core).clock()
    with core.sessions.begin() as session:
        # As if a replica claimed these pages and was killed: the DMs it had sent...
        session.execute(update(EscalationDelivery).where(EscalationDelivery.escalation_id == esc_id,
                                                         EscalationDelivery.kind == "slack_dm")
                        .values(status="sending", claim_token="dead", claimed_until=now))
        # ...and one it never got to.
        session.add(EscalationDelivery(
            escalation_id=esc_id, key="s1:dm:U0ADM01", step_seq=1, level=1, kind="slack_dm", target="U0ADM01",
            payload='{"level": 1, "level_name": "on-call", "seq": 1}', status="sending", attempts=0,
            next_attempt_at=now, claim_token="dead", claimed_until=now, created_at=now))
    slack.wait_for(lambda: _dms(slack, esc_id)["D0ADM01"] == 1, timeout=10)
    slack.wait_for(lambda: all(d.status == "sent" for d in _esc(core).pages_of(esc_id) if d.kind == "slack_dm"))
    assert _dms(slack, esc_id) == Counter({"D0OPS01": 1, "D0ONCALL": 1, "D0ADM01": 1})


def test_a_batch_of_last_steps_ends_each_chain(esc_core_factory: CoreFactory, slack: FakeSlackServer,
                                               webhook: WebhookReceiver) -> None:
    """A batch whose steps are all the chain's last (nothing planned after them) is claimed in
    one statement too, and leaves every escalation open with no next step."""
    two_levels = {"start_on": {"severity": ["critical"]}, "levels": [
        {"name": "on-call", "notify": ["U0OPS01"], "wait": LONG},
        {"name": "devops-team", "notify": ["U0ADM01"], "wait": LONG}]}
    core = esc_core_factory(two_levels, scheduler=False)
    ids = [_page(core, f"page 1 last {i}") for i in range(3)]
    for esc_id in ids:
        _wait_thread(slack, core, esc_id, "Paging level 1")
    steps = []
    with core.sessions.begin() as session:
        for esc_id in ids:
            row = session.get(Escalation, esc_id)
            assert row is not None and row.next_level == 2
            row.next_due_at = row.next_due_at - timedelta(hours=1, seconds=1)  # type: ignore[operator]
            steps.append((esc_id, row.version))
    outcomes = _esc(core).fire_many(steps)
    assert set(outcomes.values()) == {"fired"}, outcomes
    for esc_id in ids:
        thread = _wait_thread(slack, core, esc_id, "Paging level 2")
        assert any("last page of the chain" in t for t in thread)
        row = _esc(core).get(esc_id)
        assert row is not None and row.status == "active" and row.current_level == 2
        assert row.next_level is None and row.next_due_at is None


def test_escalation_statuses_are_the_ones_stored(esc_core_factory: CoreFactory, webhook: WebhookReceiver) -> None:
    from sqlalchemy import select

    from bot.escalation.state import Status

    assert all(len(status) <= Escalation.__table__.c.status.type.length for status in Status)
    core = esc_core_factory(policy_dict(webhook.url, wait=LONG))
    service = _esc(core)
    ids = [service.start(1, f"status {n}", "manual", "U0OPS01", CHANNEL_ID).id for n in range(4)]
    service.snooze(ids[1], "U0OPS01", 3600)
    service.acknowledge(ids[2], "U0OPS01")
    service.resolve(ids[3], "U0OPS01")
    with core.sessions() as session:
        stored = dict(session.execute(select(Escalation.id, Escalation.status)).all())
    assert [stored[i] for i in ids] == [s.value for s in Status]
    views = [service.view(row) for i in ids if (row := service.get(i)) is not None]
    assert all(view.status is status for view, status in zip(views, Status, strict=True))
