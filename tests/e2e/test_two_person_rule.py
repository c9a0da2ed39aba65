"""The two-person rule, attacked end to end: signed HTTP into `aia-bot serve`, the local
Slack and Kubernetes servers, one PostgreSQL. Executions are counted at the Kubernetes server."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.harness.approvals import (
    ADMIN,
    APPROVER,
    APPROVER_2,
    GONE,
    GROUP_APPROVER,
    GROUP_OPS,
    GUEST,
    OPS,
    PLUS,
    ROBOT,
    TWIN,
    WIDE,
    Stack,
    approval_stack,
)

SCALE_TO_ZERO = "scale aia-api-green 0"
SCALE_PATH = "/deployments/aia-api-green/scale"


@pytest.fixture
def stack(approvals_stack: Stack) -> Stack:
    """One bot for the package; the cluster, Slack and database are made new for every test."""
    return approvals_stack.fresh()


def _replicas(stack: Stack, name: str = "aia-api-green") -> int:
    return int(stack.kube.get("Deployment", name, "aia-production")["spec"]["replicas"])


def test_happy_path_card_approve_execute_and_update(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    assert stack.status(card.request_id) == "pending"
    assert _replicas(stack) == 2 and not stack.writes(SCALE_PATH)
    url = stack.click(APPROVER, "approve", card)
    assert "Approved" in stack.response_text(url)
    stack.wait_status(card.request_id, "executed")
    assert _replicas(stack) == 0
    assert len(stack.writes(SCALE_PATH)) == 1
    updates = stack.slack.wait_for(lambda: [c for c in stack.slack.calls_to("chat.update")
                                            if c.args.get("ts") == card.ts and "Done" in json.dumps(c.args)])
    assert all(b["type"] != "actions" for b in updates[-1].args["blocks"])  # buttons gone
    thread = stack.slack.wait_for(lambda: [m for m in stack.slack.messages(card.channel) if m.thread_ts == card.ts])
    assert "Scaled aia-api-green" in json.dumps(thread[0].blocks)
    outcomes = [(a, o) for _, a, o, _ in stack.audit_rows()]
    assert ("scale", "requested") in outcomes and ("approval.approve", "ok") in outcomes
    assert ("scale", "executed") in outcomes


def test_self_approval_is_refused(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    assert "cannot decide your own request" in stack.response_text(stack.click(OPS, "approve", card))
    assert stack.status(card.request_id) == "pending" and not stack.writes(SCALE_PATH)


def test_same_email_under_another_user_id_is_refused(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    text = stack.response_text(stack.click(TWIN, "approve", card))
    assert "profile email is the requester's" in text
    assert stack.status(card.request_id) == "pending" and not stack.writes(SCALE_PATH)


@pytest.mark.parametrize(("approver", "why"), [(ROBOT, "bots cannot approve"), (GUEST, "Guests cannot approve"),
                                               (GONE, "Deactivated users")])
def test_bot_guest_and_deleted_approvers_are_refused(stack: Stack, approver: str, why: str) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    assert why in stack.response_text(stack.click(approver, "approve", card))
    assert stack.status(card.request_id) == "pending" and not stack.writes(SCALE_PATH)


def test_approver_who_lost_the_role_after_the_request_is_refused(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    stack.slack.add_usergroup("S0APPROVERS", "approvers", [])  # removed from the approvers' group
    assert "Only approvers" in stack.response_text(stack.click(GROUP_APPROVER, "approve", card))
    assert not stack.writes(SCALE_PATH)
    stack.slack.add_usergroup("S0APPROVERS", "approvers", [GROUP_APPROVER])
    stack.click(GROUP_APPROVER, "approve", card)
    stack.wait_status(card.request_id, "executed")


@pytest.mark.parametrize("second_account", [PLUS, WIDE])
def test_plus_addressed_or_look_alike_second_account_is_the_same_person(stack: Stack, second_account: str) -> None:
    """otto+ops@ and ｏｔｔｏ@ (full-width) are otto@'s own mailbox: not a second person."""
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    text = stack.response_text(stack.click(second_account, "approve", card))
    assert "profile email is the requester's" in text
    assert stack.status(card.request_id) == "pending" and not stack.writes(SCALE_PATH)
    assert ("approval.approve", "refused") in [(a, o) for _, a, o, _ in stack.audit_rows()]


def test_requester_who_lost_the_operator_role_gets_nothing_run(stack: Stack) -> None:
    card = stack.request_change(GROUP_OPS, SCALE_TO_ZERO)
    stack.slack.add_usergroup("S0OPERATORS", "operators", [])  # removed from the operators meanwhile
    try:
        stack.click(APPROVER, "approve", card)
        stack.wait_status(card.request_id, "failed")
    finally:
        stack.slack.add_usergroup("S0OPERATORS", "operators", [GROUP_OPS])
    assert not stack.writes(SCALE_PATH) and _replicas(stack) == 2
    failed = [d for _, a, o, d in stack.audit_rows() if a == "scale" and o == "failed"]
    assert failed and "no longer holds the operator role" in failed[-1]


def test_audit_intent_is_written_before_an_approved_change_runs(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    stack.click(APPROVER, "approve", card)
    stack.wait_status(card.request_id, "executed")
    outcomes = [o for _, a, o, _ in stack.audit_rows() if a == "scale"]
    assert outcomes.index("intent") < outcomes.index("executed")


def test_double_click_executes_once(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    first = stack.click(APPROVER, "approve", card)
    second = stack.click(APPROVER, "approve", card)
    stack.wait_status(card.request_id, "executed")
    texts = [stack.response_text(first), stack.response_text(second)]
    assert sum("Approved" in t for t in texts) == 1
    assert any("already" in t for t in texts)
    assert len(stack.writes(SCALE_PATH)) == 1


def test_two_approvers_at_once_on_two_replicas_execute_once(stack: Stack, tmp_path: Path) -> None:
    with stack.extra_bot(tmp_path) as second:
        card = stack.request_change(OPS, SCALE_TO_ZERO)
        stack.kube.delay_seconds = 0.3  # widen the race: both replicas are inside their decision together
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            urls = list(pool.map(lambda args: stack.click(args[0], "approve", card, bot=args[1]),
                                 [(APPROVER, stack.bots[0]), (APPROVER_2, second)]))
        stack.wait_status(card.request_id, "executed", timeout=30)
        texts = [stack.response_text(u, timeout=30) for u in urls]
        stack.kube.delay_seconds = 0
        assert sum("Approved" in t for t in texts) == 1, texts
        assert len(stack.writes(SCALE_PATH)) == 1


def test_replayed_approve_request_after_execution_runs_nothing(stack: Stack) -> None:
    from tests.harness.approvals import click_payload

    card = stack.request_change(OPS, SCALE_TO_ZERO)
    url = stack.slack.new_response_url()
    body = __import__("urllib.parse").parse.urlencode(
        {"payload": json.dumps(click_payload(APPROVER, "approve", card, url))})
    headers = stack.bot.signed_headers(body)
    assert stack.bot.http.post("/slack/events", content=body, headers=headers).status_code == 200
    stack.wait_status(card.request_id, "executed")
    stack.kube.put({**stack.kube.get("Deployment", "aia-api-green", "aia-production")})  # anything may change later
    # The same signed bytes again, well inside the 5-minute window.
    assert stack.bot.http.post("/slack/events", content=body, headers=headers).status_code == 200
    time.sleep(1)
    assert len(stack.writes(SCALE_PATH)) == 1
    assert stack.status(card.request_id) == "executed"


def test_slack_retry_headers_run_nothing_twice(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    stack.click(APPROVER, "approve", card)
    stack.click(APPROVER, "approve", card, extra_headers={"X-Slack-Retry-Num": "1",
                                                         "X-Slack-Retry-Reason": "http_timeout"})
    stack.wait_status(card.request_id, "executed")
    time.sleep(1)
    assert len(stack.writes(SCALE_PATH)) == 1


def test_expiry_at_click_time_and_by_the_sweep(stack: Stack, tmp_path: Path) -> None:
    # The requests are made on a replica with a short time to live: their expiry is stored with them,
    # so the shared replica's sweep expires them too.
    with stack.extra_bot(tmp_path, AIA_APPROVAL_TTL_SECONDS="5") as short:
        clicked = stack.request_change(OPS, SCALE_TO_ZERO, bot=short)
        swept = stack.request_change(OPS, "isolate aia-frontend", bot=short)
        time.sleep(5.5)
        # Approval after expiry: refused, nothing runs (whether the sweep got there first or not).
        assert "expired" in stack.response_text(stack.click(APPROVER, "approve", clicked, bot=short))
        assert stack.status(clicked.request_id) == "expired" and not stack.writes(SCALE_PATH)
        # Nobody clicks: the sweep expires it and the card says so.
        stack.wait_status(swept.request_id, "expired", timeout=20)
        stack.slack.wait_for(lambda: [c for c in stack.slack.calls_to("chat.update")
                                      if c.args.get("ts") == swept.ts and "Expired" in json.dumps(c.args)])
        assert not stack.writes()


def test_deny_after_approve_and_approve_after_deny(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    stack.click(APPROVER, "approve", card)
    stack.wait_status(card.request_id, "executed")
    assert "already executed" in stack.response_text(stack.click(APPROVER_2, "deny", card))

    other = stack.request_change(OPS, "scale aia-api-blue 0")
    assert "Denied" in stack.response_text(stack.click(APPROVER_2, "deny", other))
    assert "already denied" in stack.response_text(stack.click(APPROVER, "approve", other))
    assert not stack.writes("/deployments/aia-api-blue/scale")


def test_cancel_by_requester_only(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    assert "Only the requester" in stack.response_text(stack.click(APPROVER, "cancel", card))
    assert "Cancelled" in stack.response_text(stack.click(OPS, "cancel", card))
    assert "already cancelled" in stack.response_text(stack.click(APPROVER, "approve", card))
    assert stack.status(card.request_id) == "cancelled" and not stack.writes(SCALE_PATH)


def test_target_changed_between_request_and_approval_goes_stale(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    dep = stack.kube.get("Deployment", "aia-api-green", "aia-production")
    dep["spec"]["replicas"] = 3  # someone scaled it by hand meanwhile
    stack.kube.put(dep)
    stack.click(APPROVER, "approve", card)
    stack.wait_status(card.request_id, "stale")
    assert _replicas(stack) == 3 and not stack.writes(SCALE_PATH)
    stack.slack.wait_for(lambda: [m for m in stack.slack.messages(card.channel)
                                  if m.thread_ts == card.ts and "changed" in m.text])


def test_edited_button_value_cannot_approve_another_request(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    other = stack.request_change(OPS, "scale aia-api-blue 0")
    # The value of card's button swapped for the other request's id (a different card).
    text = stack.response_text(stack.click(APPROVER, "approve", card, value=other.request_id))
    assert "own card" in text
    assert "no such request" in stack.response_text(stack.click(APPROVER, "approve", card, value="x" * 40))
    assert stack.status(other.request_id) == "pending" and not stack.writes("/scale")


def test_click_from_another_channel_is_refused(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    assert "own card, in its channel" in stack.response_text(stack.click(APPROVER, "approve", card, channel="C0OTHER"))
    assert stack.status(card.request_id) == "pending" and not stack.writes(SCALE_PATH)


def test_click_from_another_workspace_is_refused(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    stack.click(APPROVER, "approve", card, team="T0EVIL")
    deadline = time.monotonic() + 10
    while not any("another workspace T0EVIL" in d for *_, d in stack.audit_rows()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(o == "refused" and "another workspace T0EVIL" in d for _, _, o, d in stack.audit_rows())
    assert stack.status(card.request_id) == "pending" and not stack.writes(SCALE_PATH)


def test_one_pending_request_per_target(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    text = stack.slash_answer(OPS, "isolate aia-api-green")
    assert "already has an open request" in text and card.request_id in text


def test_restart_between_approval_and_execution_loses_nothing_runs_once(stack: Stack, tmp_path: Path) -> None:
    """The shared bot is the one killed; the one started in its place serves the later tests."""
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    stack.kube.delay_seconds = 3  # execution re-reads the target first: kill the bot during that read
    stack.click(APPROVER, "approve", card)
    stack.wait_status(card.request_id, "executing", timeout=10)
    victim = stack.bots.pop(0)
    assert victim.process is not None
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(5)
    stack.kube.delay_seconds = 0
    assert not stack.writes(SCALE_PATH)
    stack.start_bot(tmp_path)  # the sweep finds the abandoned claim and finishes the job once
    stack.wait_status(card.request_id, "executed", timeout=30)
    assert len(stack.writes(SCALE_PATH)) == 1 and _replicas(stack) == 0


def test_database_unreachable_at_click_time_refuses_and_runs_nothing(stack: Stack) -> None:
    card = stack.request_change(OPS, SCALE_TO_ZERO)
    name = stack.database_url.rsplit("/", 1)[1]
    admin = os.environ.get("AIA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        text = stack.response_text(stack.click(APPROVER, "approve", card))
        assert "database is unreachable" in text and "nothing was run" in text
        time.sleep(1)
        assert not stack.writes(SCALE_PATH)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert stack.status(card.request_id) == "pending"


def test_two_approvers_required_by_configuration(stack: Stack) -> None:
    card = stack.request_change(OPS, "isolate aia-api-green")
    assert "1 of 2" in stack.response_text(stack.click(APPROVER, "approve", card))
    assert "already approved" in stack.response_text(stack.click(APPROVER, "approve", card))
    assert not stack.writes(SCALE_PATH)
    stack.click(APPROVER_2, "approve", card)
    stack.wait_status(card.request_id, "executed")
    assert _replicas(stack) == 0


def test_break_glass_is_off_by_default(stack: Stack) -> None:
    text = stack.slash_answer(ADMIN, 'scale aia-api-green 0 --break-glass "database is on fire, no approver awake"')
    assert "Break-glass is off" in text and not stack.writes(SCALE_PATH)


def test_break_glass_when_enabled_runs_alone_and_is_marked(tmp_path: Path) -> None:
    with approval_stack(tmp_path, AIA_BREAK_GLASS_ENABLED="true") as stack:
        refused = stack.slash_answer(OPS, 'scale aia-api-green 0 --break-glass "nobody else is awake at all"')
        assert "Only admins" in refused and not stack.writes(SCALE_PATH)
        stack.bot.slash('scale aia-api-green 0 --break-glass "nobody else is awake at all"', ADMIN,
                        stack.slack.new_response_url())
        stack.slack.wait_for(lambda: stack.writes(SCALE_PATH))
        assert _replicas(stack) == 0
        rows = stack.audit_rows()
        assert any(o == "break_glass" and "nobody else is awake" in d for _, _, o, d in rows)
        stack.slack.wait_for(lambda: [m for m in stack.slack.messages("C0ALERTS") if "BREAK-GLASS" in m.text])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("scale aia-api-purple 0", "`aia-api-purple` does not exist"),
        ("scale aia-api-green -1", "must be 0 or more"),
        ("scale aia-api-green lots", "must be a whole number"),
        ("set-image aia-api-green api=Not A Valid:Image", "Unexpected"),
        ("set-image aia-api-green api=gcr.io/a-467519/aia-system", "give a tag or digest"),
        ("config set LOG_LEVEL", "is not KEY=VALUE"),
        ("maintenance sideways", "say on or off"),
    ],
)
def test_bad_input_requests_and_changes_nothing(stack: Stack, text: str, fragment: str) -> None:
    answer = stack.slash_answer(OPS, text)
    assert fragment in answer, answer
    assert "Usage" in answer or "does not exist" in answer
    assert not stack.writes() and not [c for c in stack.slack.calls_to("chat.postMessage")
                                       if "Approval needed" in json.dumps(c.args.get("blocks"))]
