"""Bolt listeners for the escalation card's buttons: ack at once, work on the pool.

A click becomes the matching command (``ack E7K3Q2X``, ``snooze 30m E7K3Q2X``...) run
through the dispatcher as the person who clicked: the same role check and audit
entry as typing it. The answer is the card update and the note in the thread;
only a refusal or a mistake is answered privately.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.webhook import WebhookClient

from bot.context import Caller
from bot.escalation.views import ACTION_PREFIX, SNOOZE_CHOICES
from bot.procedures.escalation import escalation_id
from bot.service import OutcomeKind
from bot.store.audit import AuditRecord
from handlers.render_blocks import SlackMessage, render_problem

if TYPE_CHECKING:
    from handlers.slack_app import SlackFrontend

log = logging.getLogger(__name__)
_SNOOZES = {label for label, _ in SNOOZE_CHOICES}


def register_escalation_actions(app: AsyncApp, frontend: SlackFrontend) -> None:
    @app.action({"action_id": re.compile(f"^{ACTION_PREFIX}:")})
    async def on_escalation_button(ack: Callable[..., Any], body: dict[str, Any]) -> None:
        await ack()
        frontend.submit(functools.partial(handle_escalation_click, frontend), body)


def command_for(action_id: str, value: str) -> str:
    """The command a button stands for; ValueError when the payload was edited."""
    esc_id = escalation_id(value)
    verb = action_id.split(":", 1)[1] if ":" in action_id else ""
    if verb in ("ack", "escalate", "resolve"):
        return f"{verb} {esc_id}"
    if verb.startswith("snooze:") and verb.split(":", 1)[1] in _SNOOZES:
        return f"snooze {verb.split(':', 1)[1]} {esc_id}"
    raise ValueError(f"unknown escalation button {action_id!r}")


def handle_escalation_click(frontend: SlackFrontend, body: dict[str, Any]) -> None:
    user = body.get("user") or {}
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    caller = Caller(user_id=str(user.get("id")), team_id=(body.get("team") or {}).get("id"), channel_id=channel)
    action = (body.get("actions") or [{}])[0]
    try:
        command = command_for(str(action.get("action_id") or ""), str(action.get("value") or ""))
    except ValueError:
        frontend.core.audit.append(AuditRecord(actor=caller.user_id, action="(escalation button)",
                                               outcome="user_error", detail="malformed button",
                                               team_id=caller.team_id, channel_id=caller.channel_id))
        _private(frontend, SlackMessage(text=":x: That button is malformed; use `/aia ack ID` instead."),
                 caller, body.get("response_url"))
        return
    outcome = frontend.core.dispatcher.handle(command, caller)
    if outcome.kind is not OutcomeKind.OK:
        _private(frontend, render_problem(outcome), caller, body.get("response_url"))


def _private(frontend: SlackFrontend, message: SlackMessage, caller: Caller, response_url: str | None) -> None:
    if response_url:
        response = WebhookClient(response_url).send(
            text=message.text, blocks=message.blocks or None, response_type="ephemeral", replace_original=False
        )
        if response.status_code == 200:
            return
    if caller.channel_id:
        frontend.web.chat_postEphemeral(channel=caller.channel_id, user=caller.user_id, text=message.text,
                                        blocks=message.blocks or None)
