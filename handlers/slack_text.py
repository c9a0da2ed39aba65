"""What Slack does to the text people type, undone."""

from __future__ import annotations

import re

from bot.mrkdwn import code_span, decode_entities, escape_mrkdwn

__all__ = ["code_span", "escape_mrkdwn", "slack_text_to_plain"]

_LABELLED = re.compile(r"<([^<>|]+)\|([^<>]*)>")
_BARE = re.compile(r"<([^<>|]+)>")


def slack_text_to_plain(text: str) -> str:
    """Slack sends ``<http://x|x>``, ``<@U1|ann>`` and escapes &, <, > as entities.

    PromQL like ``rate(x[5m]) > 0.1`` arrives as ``rate(x[5m]) &gt; 0.1``. Links
    and mentions are replaced by what the person typed, then entities decoded
    (in that order, so an escaped ``&lt;`` is never mistaken for markup).
    """
    text = _LABELLED.sub(lambda m: m.group(2) if not m.group(1).startswith(("@", "#")) else m.group(1)[1:], text)
    text = _BARE.sub(lambda m: m.group(1).lstrip("@#"), text)
    return decode_entities(text)
