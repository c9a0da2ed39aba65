"""Result → Block Kit (typed, via slack_sdk.models.blocks), within Slack's limits.

Slack allows 50 blocks a message and 3000 characters a section; long tables and
logs are cut here and their whole text goes up as a file into the thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.mrkdwn import code_span, escape_mrkdwn
from bot.redaction import redact
from bot.results import Action, Fields, Image, Preformatted, Result, Status, Table, Text
from bot.service import Outcome, OutcomeKind
from handlers.render_text import table_text

MAX_BLOCKS = 50
SECTION_LIMIT = 3000
CODE_LIMIT = SECTION_LIMIT - 8  # room for the ``` fences
ICON = {Status.OK: ":large_green_circle:", Status.INFO: ":large_blue_circle:",
        Status.WARNING: ":large_orange_circle:", Status.CRITICAL: ":red_circle:"}
RUN_ACTION_ID = "aia_run"


@dataclass
class Upload:
    filename: str
    content: bytes
    title: str


@dataclass
class SlackMessage:
    text: str  # notification / fallback text
    blocks: list[dict] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)


def escape(text: str) -> str:
    """Text from a person, an alert or a backend, placed in mrkdwn: no pings, links or formatting."""
    return escape_mrkdwn(text)


def escape_code(text: str) -> str:
    """The same, for inside a code span or block (formatting characters are inert there)."""
    return escape_mrkdwn(text, "code")


def _code(text: str, max_lines: int) -> tuple[str, bool]:
    lines = text.splitlines()
    cut = len(lines) > max_lines
    shown = "\n".join(lines[-max_lines:] if cut else lines)
    if len(shown) > CODE_LIMIT:
        shown = shown[-CODE_LIMIT:]
        shown = shown.split("\n", 1)[-1] if "\n" in shown else shown
        cut = True
    return "```" + escape_code(redact(shown))[: CODE_LIMIT] + "```", cut


def _section(text: str) -> SectionBlock:
    # Slack rejects an empty section text. Procedures write this mrkdwn (escaping what they
    # quote); what a backend said may still hold a credential.
    text = redact(text) if text.strip() else "_(empty)_"
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    return SectionBlock(text=MarkdownTextObject(text=text))


def render_result(result: Result, command: str, user_id: str, max_lines: int) -> SlackMessage:
    blocks: list[Block] = [
        HeaderBlock(text=(result.title.strip() or "Result")[:150]),
        ContextBlock(
            elements=[MarkdownTextObject(text=f"{ICON[result.status]} {code_span(redact('/aia ' + command[:200]))} · <@{user_id}>")]
        ),
    ]
    uploads: list[Upload] = []
    for part in result.parts:
        if isinstance(part, Text):
            blocks.append(_section(part.text))
        elif isinstance(part, Fields):
            for start in range(0, len(part.pairs), 10):
                chunk = part.pairs[start : start + 10]
                blocks.append(SectionBlock(fields=[
                    MarkdownTextObject(text=f"*{escape_mrkdwn(k, 'markup')}*\n{escape_mrkdwn(redact(v), 'markup')}"[:2000]) for k, v in chunk
                ]))
        elif isinstance(part, Table):
            heading = f"*{escape(part.title)}*\n" if part.title else ""
            if not part.rows:
                blocks.append(_section(f"{heading}_{part.empty_text}_"))
                continue
            full = table_text(part)
            code, cut = _code(full, max_lines + 1)  # +1: the header line
            if cut:
                name = (part.title or result.title).lower().replace(" ", "-")[:40]
                uploads.append(Upload(f"{name}.txt", redact(full).encode(), part.title or result.title))
                heading += f"_{len(part.rows)} rows; the first ones below, all of them in the thread._\n"
                code, _ = _code("\n".join(full.splitlines()[: max_lines + 1]), max_lines + 1)
            blocks.append(_section(heading + code))
        elif isinstance(part, Preformatted):
            heading = f"*{escape(part.title)}*\n" if part.title else ""
            code, cut = _code(part.text, max_lines)
            if cut:
                uploads.append(Upload(part.filename, redact(part.text).encode(), part.title or result.title))
                heading += f"_{len(part.text.splitlines())} lines; the last ones below, all of them in the thread._\n"
            blocks.append(_section(heading + code))
        elif isinstance(part, Image):
            uploads.append(Upload(part.filename, part.png, part.title))
            blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f":chart_with_upwards_trend: {escape(part.title)}: graph in the thread")]))
    if result.actions:
        blocks.append(DividerBlock())
        blocks.append(ActionsBlock(elements=[_button(a, i) for i, a in enumerate(result.actions[:25])]))
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1] + [_section("_Output cut to fit one message._")]
    text = f"{result.title}: {result.summary}" if result.summary else result.title
    # The fallback text is what notifications show, and Slack parses it: escaped as well.
    return SlackMessage(text=escape(redact(text))[:3000], blocks=[b.to_dict() for b in blocks], uploads=uploads)


def _button(action: Action, index: int) -> ButtonElement:
    # The value is only the command text: the clicker's role is checked again on
    # click, so an edited value can do no more than typing the command could.
    return ButtonElement(
        text=action.label[:75],
        action_id=f"{RUN_ACTION_ID}:{index}",
        value=json.dumps({"command": action.command})[:2000],
        style=action.style,
    )


def render_problem(outcome: Outcome) -> SlackMessage:
    icon = {OutcomeKind.REFUSED: ":no_entry:", OutcomeKind.FAILED: ":warning:"}.get(outcome.kind, ":x:")
    text = f"{icon} {redact(outcome.message)}"
    if outcome.usage:
        text += f"\n{outcome.usage}"
    return SlackMessage(text=text[:3000], blocks=[_section(text).to_dict()])
