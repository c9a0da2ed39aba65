"""Result → plain text for the terminal console and for uploaded files."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import emoji

from bot.mrkdwn import decode_entities
from bot.redaction import redact
from bot.results import Fields, Image, Preformatted, Result, Table, Text

BOLD, NORMAL = "\033[1m", "\033[22m"
# Slack's mrkdwn: a *bold* or _italic_ run starts and ends next to non-space, not inside a word
# (so snake_case and 2*3*4 are left alone).
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_ANGLE = re.compile(r"<([^<>]+)>")


def terminal_markup(names: Mapping[str, str] | None = None, ansi: bool = False) -> Callable[[str], str]:
    """A converter of Slack mrkdwn for a terminal.

    Mentions become ``@name`` and channels ``#name`` (``names``: user or channel id → name), links ``label (url)``, shortcodes
    emoji, ``*bold*`` bold (ANSI on a terminal, the bare words in a pipe), ``_italic_`` and
    ``code`` their words; entities are decoded last, so an escaped ``&lt;`` stays text.
    """
    names = names or {}

    def angle(match: re.Match[str]) -> str:
        inside, _, label = match.group(1).partition("|")
        if inside.startswith("@"):
            return "@" + (label or names.get(inside[1:], inside[1:]))
        if inside.startswith("#"):
            return "#" + (label or names.get(inside[1:], inside[1:]))
        if inside.startswith("!"):
            return label or "@" + inside[1:].split("^")[0]
        return f"{label} ({inside})" if label and label != inside else inside

    def convert(text: str) -> str:
        text = _ANGLE.sub(angle, text)
        text = emoji.emojize(text, language="alias")
        text = _BOLD.sub((lambda m: f"{BOLD}{m.group(1)}{NORMAL}") if ansi else (lambda m: m.group(1)), text)
        text = _ITALIC.sub(lambda m: m.group(1), text)
        text = _CODE.sub(lambda m: m.group(1), text)
        return decode_entities(text)

    return convert


def _plain(text: str) -> str:
    return text

STATUS_MARK = {"ok": "[OK]", "info": "[i]", "warning": "[!]", "critical": "[!!]"}


def table_text(table: Table) -> str:
    rows = [table.columns, *table.rows]
    widths = [max(len(str(row[i])) if i < len(row) else 0 for row in rows) for i in range(len(table.columns))]
    return "\n".join(
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def render_text(
    result: Result, files_dir: str | None = None, markup: Callable[[str], str] = _plain
) -> tuple[str, list[tuple[str, bytes]]]:
    """The text, and the binary files (graphs) it mentions.

    ``markup`` converts the Slack mrkdwn of titles and text (``terminal_markup`` for the
    console); tables and logs are data and stay as they are.
    """
    out = [f"{STATUS_MARK.get(result.status.value, '')} {markup(result.title)}"]
    files: list[tuple[str, bytes]] = []
    for part in result.parts:
        if isinstance(part, Text):
            out.append(markup(part.text))
        elif isinstance(part, Fields):
            width = max((len(markup(k)) for k, _ in part.pairs), default=0)
            out.extend(f"{markup(k).ljust(width)}  {markup(v)}" for k, v in part.pairs)
        elif isinstance(part, Table):
            if part.title:
                out.append(f"-- {part.title}")
            out.append(table_text(part) if part.rows else f"({part.empty_text})")
        elif isinstance(part, Preformatted):
            if part.title:
                out.append(f"-- {part.title}")
            out.append(part.text)
        elif isinstance(part, Image):
            files.append((part.filename, part.png))
            out.append(f"[graph: {part.title} -> {part.filename}]")
    if result.actions:
        out.append("Buttons: " + "  ".join(f"[{i + 1}] {a.label}" for i, a in enumerate(result.actions)))
    # The terminal is a screen too: the same redaction as Slack.
    return redact("\n".join(out)), files
