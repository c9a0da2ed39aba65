"""Escalation card and thread notes → Block Kit (typed, via slack_sdk.models.blocks).

The card sits at the top of the escalation's thread (or is the thread's parent for
a manual page) and is updated in place; its buttons carry only the escalation id,
and the clicker's role is checked at click time like any command.
"""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.escalation.channels import SlackMessageOut
from bot.escalation.state import Status
from bot.escalation.views import ACTION_PREFIX, SNOOZE_CHOICES
from bot.ports import EscalationView, clock, mention, status_line
from handlers.render_blocks import SECTION_LIMIT, escape

STATUS_ICON = {Status.ACTIVE: ":rotating_light:", Status.SNOOZED: ":zzz:", Status.ACKNOWLEDGED: ":eyes:",
               Status.RESOLVED: ":large_green_circle:"}
TONE_ICON = {"critical": "", "ok": "", "warning": "", "info": ""}


def _section(text: str) -> SectionBlock:
    text = text if text.strip() else "_(empty)_"
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    return SectionBlock(text=MarkdownTextObject(text=text))


def _button(label: str, action: str, escalation_id: str, style: str | None = None) -> ButtonElement:
    return ButtonElement(text=label, action_id=f"{ACTION_PREFIX}:{action}", value=escalation_id, style=style)


def card_buttons(view: EscalationView) -> list[ButtonElement]:
    if not view.is_open:
        return []
    buttons = []
    if view.status != Status.ACKNOWLEDGED:
        buttons.append(_button("Acknowledge", "ack", view.id, "primary"))
    buttons.append(_button("Escalate now", "escalate", view.id))
    buttons += [_button(f"Snooze {label}", f"snooze:{label}", view.id) for label, _ in SNOOZE_CHOICES]
    buttons.append(_button("Resolve", "resolve", view.id, "danger"))
    return buttons


def _chain(view: EscalationView) -> str:
    steps = []
    for level in view.levels:
        marker = "*" if level.number == view.current_level else ""
        steps.append(f"{marker}{level.number} {escape(level.name)}{marker} ({level.wait})")
    chain = " → ".join(steps)
    if view.repeat:
        chain += f" · chain runs {view.repeat + 1}×"
    return chain


class BlockKitEscalationRenderer:
    def card(self, view: EscalationView) -> SlackMessageOut:
        icon = STATUS_ICON.get(view.status, ":rotating_light:")
        title = f"Escalation {view.id} · {view.status}"
        blocks: list[Block] = [
            HeaderBlock(text=title[:150]),
            _section(f"{icon} *{escape(view.title)}*\n{status_line(view)}"),
            ContextBlock(elements=[MarkdownTextObject(text=(
                f"Levels: {_chain(view)}\nStarted {clock(view.created_at)} by {mention(view.created_by)} "
                f"({view.source}) · `/aia ack {view.id}` · `/aia timeline {view.id}`"
            )[:3000])]),
        ]
        buttons = card_buttons(view)
        if buttons:
            blocks.append(ActionsBlock(elements=buttons))
        text = f"{title}: {escape(view.title)} · {status_line(view)}"
        return SlackMessageOut(text=text[:3000], blocks=[b.to_dict() for b in blocks])

    def note(self, text: str, tone: str) -> SlackMessageOut:
        return SlackMessageOut(text=text[:3000], blocks=[_section(text).to_dict()])
