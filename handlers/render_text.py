"""Result → plain text for the terminal console and for uploaded files."""

from __future__ import annotations

from bot.redaction import redact
from bot.results import Fields, Image, Preformatted, Result, Table, Text

STATUS_MARK = {"ok": "[OK]", "info": "[i]", "warning": "[!]", "critical": "[!!]"}


def table_text(table: Table) -> str:
    rows = [table.columns, *table.rows]
    widths = [max(len(str(row[i])) if i < len(row) else 0 for row in rows) for i in range(len(table.columns))]
    return "\n".join(
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def render_text(result: Result, files_dir: str | None = None) -> tuple[str, list[tuple[str, bytes]]]:
    """The text, and the binary files (graphs) it mentions."""
    out = [f"{STATUS_MARK.get(result.status.value, '')} {result.title}"]
    files: list[tuple[str, bytes]] = []
    for part in result.parts:
        if isinstance(part, Text):
            out.append(part.text)
        elif isinstance(part, Fields):
            width = max((len(k) for k, _ in part.pairs), default=0)
            out.extend(f"{k.ljust(width)}  {v}" for k, v in part.pairs)
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
