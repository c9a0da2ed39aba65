"""`/aia dr plan|restore` end to end: signed HTTP into `aia-bot serve` on PostgreSQL, two approvers
by default, every write counted at the local Kubernetes server."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.harness.approvals import APPROVER, APPROVER_2, OPS, TWIN, Stack

VIEWER = "U0VIEW1"
NS = "aia-production"


@pytest.fixture
def stack(approvals_stack: Stack) -> Stack:
    return approvals_stack.fresh()  # no configuration backups either


def _backups(stack: Stack) -> list[tuple[str, str]]:
    with psycopg.connect(stack.database_url) as conn:
        return [(str(r[0]), str(r[1])) for r in conn.execute(
            "SELECT id, actor FROM config_backups ORDER BY created_at").fetchall()]


def _take_backup(stack: Stack) -> str:
    before = len(_backups(stack))
    stack.bot.slash("config backup", OPS, stack.slack.new_response_url())
    return stack.slack.wait_for(lambda: _backups(stack)[before:], timeout=15)[0][0]


def _disaster(stack: Stack) -> None:
    stack.kube.delete("ConfigMap", "aia-config", NS)
    stack.kube.delete("Ingress", "aia-ingress", NS)
    stack.kube.requests.clear()


def _posted(stack: Stack, user: str, text: str, marker: str) -> str:
    before = len(stack.slack.calls_to("chat.postMessage"))
    stack.bot.slash(text, user, stack.slack.new_response_url())
    posts = stack.slack.wait_for(lambda: [c for c in stack.slack.calls_to("chat.postMessage")[before:]
                                          if marker in json.dumps(c.args)], timeout=20)
    return json.dumps(posts[0].args, ensure_ascii=False)


def test_viewer_plans_with_a_dry_run_and_nothing_changes(stack: Stack) -> None:
    backup = _take_backup(stack)
    _disaster(stack)
    posted = _posted(stack, VIEWER, f"dr plan {backup}", "Disaster recovery plan")
    assert "ConfigMap/aia-config" in posted and "Ingress/aia-ingress" in posted
    assert "2 missing and would be created" in posted and "Secrets are not restored from a backup" in posted
    assert f"dr restore {backup}" in posted  # the button
    assert not stack.writes()
    assert [r.path for r in stack.kube.requests if r.query.get("dryRun") == "All"]


def test_restore_with_two_approvers_self_approval_refused_and_a_fresh_backup(stack: Stack) -> None:
    backup = _take_backup(stack)
    _disaster(stack)
    card = stack.request_change(OPS, f"dr restore {backup}")
    assert "cannot decide your own request" in stack.response_text(stack.click(OPS, "approve", card))
    assert "profile email is the requester's" in stack.response_text(stack.click(TWIN, "approve", card))
    assert "1 of 2" in stack.response_text(stack.click(APPROVER, "approve", card))
    assert "already approved" in stack.response_text(stack.click(APPROVER, "approve", card))
    assert stack.status(card.request_id) == "pending" and not stack.writes()
    stack.click(APPROVER_2, "approve", card)
    stack.wait_status(card.request_id, "executed")
    assert stack.kube.get("ConfigMap", "aia-config", NS) and stack.kube.get("Ingress", "aia-ingress", NS)
    assert {w.method for w in stack.writes()} == {"POST"} and len(stack.writes()) == 2
    fresh = [b for b, _ in _backups(stack) if b != backup]
    assert len(fresh) == 1
    thread = stack.slack.wait_for(lambda: [m for m in stack.slack.messages(card.channel)
                                           if m.thread_ts == card.ts and "Recreated 2 objects" in json.dumps(m.blocks)])
    assert f"Fresh backup `{fresh[0]}`" in json.dumps(thread[0].blocks)
    outcomes = [(a, o) for _, a, o, _ in stack.audit_rows()]
    assert ("dr restore", "requested") in outcomes and ("dr restore", "executed") in outcomes


def test_object_recreated_by_hand_between_approvals_is_stale(stack: Stack) -> None:
    backup = _take_backup(stack)
    _disaster(stack)
    card = stack.request_change(OPS, f"dr restore {backup}")
    stack.click(APPROVER, "approve", card)
    stack.kube.put({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": "aia-ingress", "namespace": NS}, "spec": {"rules": []}})
    stack.kube.requests.clear()
    stack.click(APPROVER_2, "approve", card)
    stack.wait_status(card.request_id, "stale")
    assert not stack.writes()
    assert stack.kube.get("ConfigMap", "aia-config", NS) is None
    assert stack.kube.get("Ingress", "aia-ingress", NS)["spec"] == {"rules": []}


def test_tampered_backup_is_refused_and_nothing_is_requested(stack: Stack) -> None:
    backup = _take_backup(stack)
    _disaster(stack)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("UPDATE config_backups SET content = replace(content, 'aia-config', 'aia-evil') WHERE id = %s",
                     (backup,))
    for user, text in ((VIEWER, f"dr plan {backup}"), (OPS, f"dr restore {backup}")):
        answer = stack.slash_answer(user, text)
        assert "fails its checksum" in answer and "Nothing was planned or restored" in answer
    assert not stack.writes()
    assert not [c for c in stack.slack.calls_to("chat.postMessage") if "Approval needed" in json.dumps(c.args)]
    assert any(a == "dr restore" and o in ("user_error", "refused", "error") for _, a, o, _ in stack.audit_rows())


def test_unknown_backup_id_lists_the_recent_ones(stack: Stack) -> None:
    backup = _take_backup(stack)
    answer = stack.slash_answer(OPS, "dr restore ffffffffffff")
    assert "No configuration backup `ffffffffffff`" in answer and f"`{backup}`" in answer
    assert not stack.writes()


def test_viewer_cannot_request_a_restore(stack: Stack) -> None:
    backup = _take_backup(stack)
    _disaster(stack)
    assert "operator" in stack.slash_answer(VIEWER, f"dr restore {backup}")
    assert not stack.writes()
