"""Alert messages stay inside Slack's Block Kit limits, whatever the group looks like."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.alerts.store import AlertView, GroupView
from bot.results import Action, Result, Table
from bot.settings import load_settings
from handlers.render_alerts import BlockKitAlertRenderer
from sandbox.slack_server import block_kit_errors

NOW = datetime.now(UTC)


def _group(n: int, status: str = "firing", **extra: object) -> GroupView:
    alerts = [
        AlertView(alertname="HighErrorRate", status="firing", severity="critical",
                  labels={"alertname": "HighErrorRate", "pod": f"aia-api-blue-{i:04d}", "instance": "x" * 300},
                  annotations={"summary": "s"}, starts_at=NOW - timedelta(minutes=5), ends_at=None,
                  generator_url="http://prom:9090/graph?g0.expr=up", fingerprint=f"{i:016x}")
        for i in range(n)
    ]
    fields: dict[str, object] = dict(
        id=1, status=status, severity="critical", alertnames=["HighErrorRate"] * 40, group_labels={},
        common_labels={}, common_annotations={"summary": "<!channel> 5xx " * 400, "description": "d" * 5000},
        external_url="http://am:9093", firing_count=n if status == "firing" else 0,
        resolved_count=0 if status == "firing" else n, truncated_alerts=3, opened_at=NOW - timedelta(minutes=5),
        updated_at=NOW, resolved_at=None if status == "firing" else NOW, channel_id=None, thread_ts=None,
        permalink=None, previous_permalink="http://slack/archives/C/p1", alerts=alerts,
    )
    fields.update(extra)
    return GroupView(**fields)  # type: ignore[arg-type]


def test_a_huge_group_fits_in_one_parent_message() -> None:
    renderer = BlockKitAlertRenderer(load_settings({}))
    message = renderer.parent(_group(120))
    assert block_kit_errors(message.blocks) == []
    text = json.dumps(message.blocks)
    assert "and 110 more" in text
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "previous thread" in text and "Alertmanager left out 3 alerts" in text


def test_a_resolved_group_says_how_long_it_lasted() -> None:
    renderer = BlockKitAlertRenderer(load_settings({}))
    message = renderer.parent(_group(2, status="resolved"))
    assert message.blocks[0]["text"]["text"].startswith("Resolved after 5m")
    assert ":large_green_circle:" in json.dumps(message.blocks)


def test_the_context_message_keeps_buttons_and_limits() -> None:
    renderer = BlockKitAlertRenderer(load_settings({}))
    result = Result(title="Context · HighErrorRate")
    result.add(Table(["A"], [[str(i)] for i in range(500)], title="All alerts"))
    result.actions = [Action("top pods --sort cpu", "top pods --sort cpu")]
    message = renderer.context(result, _group(1))
    assert block_kit_errors(message.blocks) == []
    assert "aia_run:0" in json.dumps(message.blocks)
    assert message.uploads and message.uploads[0].filename.endswith(".txt")


def test_storm_messages() -> None:
    renderer = BlockKitAlertRenderer(load_settings({}))
    assert "40 alert groups are waiting" in renderer.storm(40, 3, 0, None).text
    assert "storm over" in renderer.storm(0, 0, 40, 0.0).text.lower()
