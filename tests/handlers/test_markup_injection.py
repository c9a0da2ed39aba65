"""Chat markup injection, property-tested through every renderer.

Hostile text (what a person types or an alert carries: ``<!channel>``, ``<!here>``,
``<@U…>``, ``<http…|…>``, ``*``, ``_``, ``~``, backticks, ``&``) is fed into every field a
user or an alert controls. Whatever the renderer builds, Slack must find no ping, no
mention, no link and no formatting that came from that text: inside code spans and blocks
formatting characters are inert, everywhere else they must arrive as look-alikes.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerts.store import AlertView, GroupView
from bot.approvals.service import ApprovalStatus, ApprovalView
from bot.escalation.views import EscalationView, LevelView
from bot.mrkdwn import code_span, escape_mrkdwn
from bot.results import Fields, Image, Preformatted, Result, Table
from bot.settings import load_settings
from handlers.render_alerts import BlockKitAlertRenderer
from handlers.render_approvals import render_card
from handlers.render_blocks import render_result
from handlers.render_escalation import BlockKitEscalationRenderer

NOW = datetime(2026, 11, 27, 3, 12, tzinfo=UTC)
PINGS = ("<!channel>", "<!here>", "<!everyone>", "<@U0EVIL01>", "<#C0EVIL01>", "<https://evil.example|Grafana>",
         "<mailto:x@evil.example|help>")
FORMATTING = ("*PWN*", "_PWN_", "~PWN~", "`PWN`")
TOKENS = st.sampled_from([*PINGS, *FORMATTING, "&", "&amp;", "&lt;!here&gt;", ">", "<", " ", "word", "a_b", "\n"])
HOSTILE = st.lists(TOKENS, min_size=1, max_size=12).map(" ".join)


def _mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every string Slack parses as mrkdwn in these blocks (plain_text is not parsed)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


def assert_inert(fallback: str, blocks: list[dict[str, Any]], check_formatting: bool = True) -> None:
    for text in [fallback, *_mrkdwn_texts(blocks)]:
        for ping in PINGS:
            assert ping not in text, (ping, text)
        assert "<https://evil" not in text and "<mailto:" not in text
        if check_formatting:
            outside_code = re.sub(r"```.*?```|`[^`\n]*`", "", text, flags=re.S)
            for token in FORMATTING:
                assert token not in outside_code, (token, text)


@settings(max_examples=40, deadline=None)
@given(hostile=HOSTILE)
def test_result_renderer(hostile: str) -> None:
    result = Result(title=hostile, summary=hostile)
    result.add(Table(["NAME", "VALUE"], [[hostile, hostile]], title=hostile))
    result.add(Preformatted(hostile, filename="x.txt", title=hostile))
    result.add(Image(b"\x89PNG", filename="g.png", title=hostile))
    message = render_result(result, hostile, "U0OPS01", 25)
    assert_inert(message.text, message.blocks)
    # Fields hold mrkdwn a procedure wrote (bold labels, code spans): what they quote can
    # still never ping or link.
    fields = Result(title="x")
    fields.add(Fields([(hostile, hostile)]))
    rendered = render_result(fields, "pods", "U0OPS01", 25)
    assert_inert(rendered.text, rendered.blocks, check_formatting=False)


@settings(max_examples=40, deadline=None)
@given(hostile=HOSTILE)
def test_approval_card_renderer(hostile: str) -> None:
    view = ApprovalView(
        id="abc123", procedure="scale", command=hostile, summary=hostile, preview=hostile, warning=hostile,
        requester_id="U0OPS01", status=ApprovalStatus.EXECUTED, created_at=NOW, expires_at=NOW + timedelta(minutes=15),
        required_approvals=1, approvals=[{"user": "U0APR01"}], decided_by="U0APR01", result=hostile,
        channel_id="C0ALERTS", message_ts="1.2", break_glass_reason=hostile,
    )
    text, blocks = render_card(view)
    assert_inert(text, blocks)


@settings(max_examples=40, deadline=None)
@given(hostile=HOSTILE)
def test_alert_renderer(hostile: str) -> None:
    alert = AlertView(alertname=hostile, status="firing", severity="critical",
                      labels={"alertname": hostile, "pod": hostile, hostile: hostile},
                      annotations={"summary": hostile, "description": hostile}, starts_at=NOW, ends_at=None,
                      generator_url="http://prom:9090/graph?g0.expr=up", fingerprint="0" * 16)
    group = GroupView(
        id=1, status="firing", severity="critical", alertnames=[hostile], group_labels={"alertname": hostile},
        common_labels={"alertname": hostile}, common_annotations={"summary": hostile, "description": hostile},
        external_url="http://am:9093", firing_count=1, resolved_count=0, truncated_alerts=0, opened_at=NOW,
        updated_at=NOW, resolved_at=None, channel_id=None, thread_ts=None, permalink=None, previous_permalink=None,
        alerts=[alert],
    )
    message = BlockKitAlertRenderer(load_settings({})).parent(group)
    assert_inert(message.text, message.blocks)


@settings(max_examples=40, deadline=None)
@given(hostile=HOSTILE)
def test_escalation_card_renderer(hostile: str) -> None:
    view = EscalationView(
        id="E7K3Q2A", title=hostile, source="manual", severity="critical", status="active", current_level=1,
        levels=(LevelView(1, "on-call", "<@U0OPS01>", "5m"),), created_by="U0OPS01", created_at=NOW, next_level=2,
        next_due_at=NOW, snoozed_until=None, acknowledged_by=None, acknowledged_at=None, resolved_by=None,
        resolved_at=None, cycle=0, repeat=0,
    )
    message = BlockKitEscalationRenderer().card(view)
    assert_inert(message.text, message.blocks)


@given(hostile=HOSTILE)
def test_escaping_is_idempotent_and_keeps_identifiers(hostile: str) -> None:
    once = escape_mrkdwn(hostile)
    assert escape_mrkdwn(once) == once
    assert escape_mrkdwn("kubernetes_pods rate(x[5m])") == "kubernetes_pods rate(x[5m])"
    assert code_span("a`b") == "`a\u02cbb`"


def test_the_texts_are_still_readable() -> None:
    shown = json.dumps(render_card(ApprovalView(
        id="abc123", procedure="config set", command="config set A=<!channel>", summary="Set A", preview="+ A",
        warning=None, requester_id="U0OPS01", status=ApprovalStatus.PENDING, created_at=NOW, expires_at=NOW, required_approvals=1,
        approvals=[], decided_by=None, result=None, channel_id="C", message_ts="1.2"))[1])
    assert "A=&lt;!channel&gt;" in shown  # Slack shows the characters, does not parse them
