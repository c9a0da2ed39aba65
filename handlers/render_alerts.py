"""Alert groups → Block Kit: the living parent message, the thread's context, the storm note.

Within Slack's limits whatever the group's size: the parent lists at most 10 alerts (the
thread's context carries all of them, as a file when long), every text is cut to its
block's limit, and annotations are escaped (a `<!channel>` in a description must not
ping anyone) and redacted.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.alerts.render import lasted
from bot.alerts.store import AlertView, GroupView
from bot.mrkdwn import code_span
from bot.outbox import OutMessage, Upload
from bot.ports import AlertStatus
from bot.redaction import redact
from bot.results import Result
from bot.settings import Settings
from bot.validators import format_duration
from handlers.render_blocks import MAX_BLOCKS, escape, render_result

PARENT_ALERTS = 10
SEVERITY_ICON = {"critical": ":red_circle:", "page": ":red_circle:", "error": ":red_circle:",
                 "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
RESOLVED_ICON = ":large_green_circle:"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link(url: str | None, label: str) -> str | None:
    """A mrkdwn link, or nothing when the URL is not a plain http(s) URL."""
    if not url or not url.startswith(("http://", "https://")) or any(c in url for c in "|<> \n"):
        return None
    return f"<{url}|{label}>"


def _date(moment: datetime) -> str:
    # Slack shows <!date^...> in the reader's own time zone; the fallback is UTC.
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _labels_text(alert: AlertView) -> str:
    shown = [f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in {"alertname", "severity"}]
    return ", ".join(shown) or alert.alertname


def _annotations(group: GroupView) -> dict[str, str]:
    if group.common_annotations:
        return group.common_annotations
    firing = [a for a in group.alerts if a.status == AlertStatus.FIRING] or group.alerts
    return firing[0].annotations if firing else {}


class BlockKitAlertRenderer:
    def __init__(self, settings: Settings) -> None:
        self.grafana_url = settings.aia_grafana_url
        self.max_lines = settings.aia_max_inline_lines

    # -- the parent message ---------------------------------------------------------
    def parent(self, group: GroupView) -> OutMessage:
        icon = SEVERITY_ICON.get(group.severity, ":large_blue_circle:") if group.firing else RESOLVED_ICON
        state = "Firing" if group.firing else f"Resolved after {lasted(group)}"
        title = _cut(f"{state}: {group.title}", 140)
        blocks: list[Block] = [HeaderBlock(text=title)]
        fields = [
            ("Severity", f"{icon} {group.severity}"),
            ("Alerts", f"{group.firing_count} firing · {group.resolved_count} resolved"),
            ("Since", _date(group.opened_at)),
            ("Lasted" if not group.firing else "Firing for", lasted(group)),
        ]
        blocks.append(SectionBlock(fields=[MarkdownTextObject(text=_cut(f"*{k}*\n{v}", 2000)) for k, v in fields]))
        notes = _annotations(group)
        lines = [f"*{escape(name.capitalize())}:* {escape(redact(notes[name]))}"
                 for name in ("summary", "description") if notes.get(name)]
        if lines:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut("\n".join(lines), 2900))))
        blocks.append(SectionBlock(text=MarkdownTextObject(text=self._alert_lines(group))))
        links = [
            _link(self.grafana_url, "Grafana"),
            _link(next((a.generator_url for a in group.alerts if a.generator_url), None), "Prometheus"),
            _link(group.external_url, "Alertmanager"),
            _link(group.previous_permalink, "previous thread (fired before)"),
        ]
        context = " · ".join(link for link in links if link)
        if group.truncated_alerts:
            context += f" · Alertmanager left out {group.truncated_alerts} alerts"
        if context:
            blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_cut(context, 2900))]))
        text = f"{'FIRING' if group.firing else 'RESOLVED'} [{escape(group.severity)}] {escape(group.title)}: " \
               f"{group.firing_count} firing, {group.resolved_count} resolved"
        return OutMessage(text=_cut(text, 3000), blocks=[b.to_dict() for b in blocks[:MAX_BLOCKS]])

    @staticmethod
    def _alert_lines(group: GroupView) -> str:
        lines = []
        for alert in group.alerts[:PARENT_ALERTS]:
            mark = SEVERITY_ICON.get(alert.severity, ":large_blue_circle:") if alert.status == AlertStatus.FIRING else RESOLVED_ICON
            when = alert.starts_at.strftime("%H:%M")
            end = f"–{alert.ends_at.strftime('%H:%M')}" if alert.ends_at and alert.status == AlertStatus.RESOLVED else ""
            lines.append(f"{mark} *{escape(alert.alertname[:80])}* {code_span(_cut(redact(_labels_text(alert)), 160))} {when}{end}")
        total = group.firing_count + group.resolved_count
        if total > len(lines):
            lines.append(f"_…and {total - len(lines)} more; all of them are listed in the thread._")
        return _cut("\n".join(lines) or "_no alerts_", 2900)

    # -- the thread's context -----------------------------------------------------------
    def context(self, result: Result, group: GroupView) -> OutMessage:
        rendered = render_result(result, "alerts", "", self.max_lines)
        blocks = list(rendered.blocks)
        note = ContextBlock(elements=[MarkdownTextObject(
            text=":robot_face: Gathered when the alert group opened. Buttons run `/aia` commands as whoever clicks "
                 "them, with their role; destructive ones need a second person."
        )]).to_dict()
        if len(blocks) > 1:
            blocks[1] = note  # render_result's second block names a command and a user: not here
        uploads = [Upload(u.filename, u.content, u.title) for u in rendered.uploads]
        return OutMessage(text=_cut(escape(result.title), 3000), blocks=blocks, uploads=uploads)

    # -- storms ----------------------------------------------------------------------------
    def storm(self, waiting: int, critical: int, posted: int, started: float | None) -> OutMessage:
        if waiting == 0:
            took = f" in {format_duration(time.time() - started)}" if started else ""
            text = f":white_check_mark: *Alert storm over:* {posted} alert groups posted{took}."
        else:
            text = (
                f":thunder_cloud_and_rain: *Alert storm:* {waiting} alert "
                f"{'group is' if waiting == 1 else 'groups are'} waiting to be posted"
                f" ({critical} critical). Slack allows about one message per second here, so they follow "
                "in priority order, critical first. `/aia alerts` lists everything firing right now."
            )
        stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
        blocks = [SectionBlock(text=MarkdownTextObject(text=text)),
                  ContextBlock(elements=[MarkdownTextObject(text=f"updated {stamp}")])]
        return OutMessage(text=text.replace("*", ""), blocks=[b.to_dict() for b in blocks])
