"""The approval service on SQLite (one replica): many threads, one execution."""

from __future__ import annotations

import concurrent.futures

from bot.context import Caller
from bot.service import OutcomeKind
from tests.harness.calls import run_as
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID

TS = "1700000000.000200"


def _writes(kube) -> list:  # type: ignore[no-untyped-def, type-arg]
    return [r for r in kube.requests if r.method == "PATCH" and r.query.get("dryRun") != "All"]


def test_sixteen_simultaneous_approvals_execute_once(core, kube, slack) -> None:  # type: ignore[no-untyped-def]
    slack.add_user("U0APR02", "arne", "arne@013a.tech")
    core.config.roles.approver.append("U0APR02")
    outcome = run_as(core, "operator", "scale aia-api-green 0")
    assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED
    core.approvals.attach_card(outcome.approval.id, CHANNEL_ID, TS)
    approvers = [SLACK_USERS["approver"].user_id, "U0APR02"] * 8
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(
            lambda user: core.approvals.decide(outcome.approval.id, "approve", Caller(user, TEAM_ID, CHANNEL_ID), TS),
            approvers))
    assert sum(d.accepted for d in decisions) == 1
    assert sum(d.executed is not None for d in decisions) == 1
    assert len([r for r in _writes(kube) if r.path.endswith("/scale")]) == 1
    assert core.approvals.get(outcome.approval.id).status == "executed"


def test_sweep_expires_and_keeps_the_audit_chain(core) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from bot.store.models import ApprovalRequest

    outcome = run_as(core, "operator", "isolate aia-api-green")
    with core.sessions.begin() as session:
        session.execute(update(ApprovalRequest).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert core.approvals.sweep() == [outcome.approval.id]
    assert core.approvals.get(outcome.approval.id).status == "expired"
    assert core.audit.verify() == []


def test_slack_profile_unreadable_refuses_and_runs_nothing(core, kube, slack) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", "scale aia-api-green 0")
    core.approvals.attach_card(outcome.approval.id, CHANNEL_ID, TS)
    slack.fail("users.info", status=500, times=10)
    decision = core.approvals.decide(outcome.approval.id, "approve",
                                     Caller(SLACK_USERS["approver"].user_id, TEAM_ID, CHANNEL_ID), TS)
    assert not decision.accepted and "Could not read your Slack profile" in decision.message
    assert not [r for r in _writes(kube) if r.path.endswith("/scale")]
    assert core.approvals.get(outcome.approval.id).status == "pending"


def test_request_needs_the_requesters_profile(core, kube, slack) -> None:  # type: ignore[no-untyped-def]
    slack.fail("users.info", status=500, times=10)
    outcome = run_as(core, "operator", "scale aia-api-green 0")
    assert outcome.kind is OutcomeKind.USER_ERROR and "profile email" in outcome.message
    assert "Traceback" not in outcome.message


def test_approval_statuses_are_the_ones_stored_and_indexed(core, kube, slack) -> None:  # type: ignore[no-untyped-def]
    import re
    from pathlib import Path

    from sqlalchemy import select

    from bot.approvals.service import FINAL, OPEN, ApprovalStatus
    from bot.store.models import ApprovalRequest
    from handlers.render_approvals import STATUS_LINE

    assert set(OPEN) | set(FINAL) == set(ApprovalStatus) and not set(OPEN) & set(FINAL)
    assert set(STATUS_LINE) == set(ApprovalStatus)
    assert all(len(status) <= ApprovalRequest.__table__.c.status.type.length for status in ApprovalStatus)
    # The one-open-request-per-target index names the open statuses in SQL.
    migration = Path(__file__).parents[3] / "bot/store/migrations/versions/0002_approval_requests.py"
    for listed in re.findall(r"status IN \(([^)]*)\)", migration.read_text()):
        assert {v.strip(" '") for v in listed.split(",")} == {s.value for s in OPEN}

    # A real flow: the strings written to the rows are the enum's values.
    approver = Caller(SLACK_USERS["approver"].user_id, TEAM_ID, CHANNEL_ID)
    operator = Caller(SLACK_USERS["operator"].user_id, TEAM_ID, CHANNEL_ID)
    for command, who, decision in (("scale aia-api-green 0", approver, "approve"),
                                   ("isolate aia-api-green", approver, "deny"),
                                   ("scale aia-api-blue 0", operator, "cancel")):
        outcome = run_as(core, "operator", command)
        core.approvals.attach_card(outcome.approval.id, CHANNEL_ID, TS)
        assert core.approvals.decide(outcome.approval.id, decision, who, TS).accepted
    with core.sessions() as session:
        stored = set(session.execute(select(ApprovalRequest.status)).scalars())
    assert stored == {ApprovalStatus.EXECUTED.value, ApprovalStatus.DENIED.value, ApprovalStatus.CANCELLED.value}
