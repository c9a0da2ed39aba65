"""The card and notes as Block Kit, and the buttons' commands."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.escalation.views import EscalationView, LevelView, PlainRenderer
from handlers.escalation_actions import command_for
from handlers.render_escalation import BlockKitEscalationRenderer
from sandbox.slack_server import block_kit_errors

NOW = datetime(2026, 11, 27, 3, 12, tzinfo=UTC)


def view(status: str = "active", **changes: object) -> EscalationView:
    fields: dict[str, object] = dict(
        id="E7K3Q2A"[:7], title="HighErrorRate <!channel> (critical)", source="alert", severity="critical",
        status=status, current_level=1,
        levels=tuple(LevelView(i, n, "<@U0OPS01>", "5m") for i, n in enumerate(["on-call", "devops"], 1)),
        created_by="aia-bot", created_at=NOW, next_level=2, next_due_at=NOW, snoozed_until=None,
        acknowledged_by=None, acknowledged_at=None, resolved_by=None, resolved_at=None, cycle=0, repeat=0,
    )
    fields.update(changes)
    return EscalationView(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["active", "snoozed", "acknowledged", "resolved"])
def test_card_is_valid_block_kit(status: str) -> None:
    card = BlockKitEscalationRenderer().card(view(status, acknowledged_by="U0OPS01", acknowledged_at=NOW,
                                                  resolved_by="U0OPS01", resolved_at=NOW, snoozed_until=NOW))
    assert block_kit_errors(card.blocks) == []
    actions = [b for b in card.blocks or [] if b["type"] == "actions"]
    ids = [e["action_id"] for a in actions for e in a["elements"]]
    if status == "resolved":
        assert ids == []
    else:
        assert "aia_esc:resolve" in ids and "aia_esc:snooze:4h" in ids
        assert ("aia_esc:ack" in ids) == (status != "acknowledged")
    assert "&lt;!channel&gt;" in str(card.blocks)  # an alert title cannot ping the channel


def test_long_note_fits_a_section() -> None:
    note = BlockKitEscalationRenderer().note("x" * 5000, "warning")
    assert block_kit_errors(note.blocks) == []
    assert PlainRenderer().card(view()).blocks is None


@pytest.mark.parametrize(("action", "value", "command"), [
    ("aia_esc:ack", "E7K3Q2A", "ack E7K3Q2A"),
    ("aia_esc:escalate", "e7k3q2a", "escalate E7K3Q2A"),
    ("aia_esc:snooze:1h", "E7K3Q2A", "snooze 1h E7K3Q2A"),
    ("aia_esc:resolve", "E7K3Q2A", "resolve E7K3Q2A"),
])
def test_buttons_become_commands(action: str, value: str, command: str) -> None:
    assert command_for(action, value) == command


@pytest.mark.parametrize(("action", "value"), [
    ("aia_esc:snooze:10y", "E7K3Q2A"), ("aia_esc:delete", "E7K3Q2A"), ("aia_esc:ack", "E7K3Q2A; rm -rf"),
    ("aia_esc:ack", ""),
])
def test_edited_buttons_are_refused(action: str, value: str) -> None:
    with pytest.raises(ValueError):
        command_for(action, value)


def test_every_status_has_an_icon() -> None:
    from bot.escalation.state import Status
    from handlers.render_escalation import STATUS_ICON

    assert set(STATUS_ICON) == set(Status)
