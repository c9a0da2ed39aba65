"""The PagerDuty Events v2 sender against a real HTTP server: what it sends, and what each
kind of failure says."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bot.errors import PageFailed
from bot.escalation.channels import WebhookPager
from tests.harness.webhook_receiver import WebhookReceiver

ROUTING_KEY = "R0UTING-KEY-channels-0123456789"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def test_pages_carry_the_routing_and_dedup_keys(receiver: WebhookReceiver) -> None:
    pager = WebhookPager(ROUTING_KEY, timeout=5)
    for i in range(5):
        pager.send(receiver.url, "trigger", f"aia-EKEEP{i}", summary=f"incident {i}", details={"level": 3})
    events = receiver.received()
    assert [e.body["dedup_key"] for e in events] == [f"aia-EKEEP{i}" for i in range(5)]
    assert all(e.body["routing_key"] == ROUTING_KEY for e in events)
    assert events[0].body["payload"]["summary"] == "incident 0" and events[0].body["payload"]["severity"] == "critical"


@pytest.mark.parametrize(("status", "retry"), [(500, True), (429, True), (400, False), (302, False)])
def test_an_answer_that_is_not_success_fails_the_page_and_says_whether_to_retry(
        receiver: WebhookReceiver, status: int, retry: bool) -> None:
    receiver.failures.append(status)
    with pytest.raises(PageFailed) as failed:
        WebhookPager(ROUTING_KEY, timeout=5).send(receiver.url, "trigger", "aia-EFAIL01")
    assert f"HTTP {status}" in str(failed.value) and failed.value.retry is retry
    assert ROUTING_KEY not in str(failed.value)
    assert receiver.received() == []


def test_an_unreachable_webhook_says_so_without_the_key() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once the socket is closed
    with pytest.raises(PageFailed) as failed:
        WebhookPager(ROUTING_KEY, timeout=2).send(f"http://127.0.0.1:{port}/v2/enqueue", "trigger", "aia-EDOWN01")
    assert "unreachable" in str(failed.value) and "refused" in str(failed.value) and failed.value.retry
    assert ROUTING_KEY not in str(failed.value)
