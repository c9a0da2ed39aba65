"""`/aia alerts`: what is firing, grouped, with links to the threads."""

from __future__ import annotations

from bot.alerts.payload import WebhookPayload
from bot.service import OutcomeKind
from tests.bot.alerts.conftest import parents
from tests.bot.alerts.payloads import alert, payload, resolved
from tests.harness.calls import run_as


def test_lists_open_groups_with_thread_links(sqlite_core, slack) -> None:  # type: ignore[no-untyped-def]
    empty = run_as(sqlite_core, "viewer", "alerts")
    # Alertmanager is connected (its webhook token is set) and nothing fires. Without a token
    # the answer is "unknown" (tests/bot/procedures/test_alerts_not_connected.py).
    assert empty.kind is OutcomeKind.OK and "Nothing is firing" in str(empty.result.parts)
    service = sqlite_core.alerts
    service.receive(WebhookPayload.model_validate(payload([alert(pod="a"), alert(pod="b")])))
    gone = alert("HighMemoryUsage", pod="c")
    service.receive(WebhookPayload.model_validate(payload([gone], group="HighMemoryUsage")))
    service.receive(WebhookPayload.model_validate(payload([resolved(gone)], group="HighMemoryUsage")))
    service.receive(WebhookPayload.model_validate(payload([alert("PodNotReady", severity="critical", pod="d")],
                                                          group="PodNotReady")))
    before = str(run_as(sqlite_core, "viewer", "alerts").result.parts)
    assert "thread not posted yet" in before
    service.outbox.start()
    slack.wait_for(lambda: len(parents(slack)) == 3)
    outcome = run_as(sqlite_core, "viewer", "alerts")
    text = str(outcome.result.parts)
    assert outcome.result.title == "Firing alerts · 2 groups, 3 alerts"
    assert text.index("PodNotReady") < text.index("HighErrorRate")  # critical first
    assert "HighMemoryUsage" not in text and text.count("|thread>") == 2
    assert run_as(sqlite_core, "nobody", "alerts").kind is OutcomeKind.REFUSED
