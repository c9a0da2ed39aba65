"""The one escaping function for text that came from a person or an alert.

Slack parses mrkdwn in every message text, section and field: ``<!channel>`` pings the
whole channel, ``<https://evil|Grafana>`` shows a disguised link, ``<@U123>`` mentions
someone, ``*``/``_``/``~``/backticks change how the rest of the line reads. A user's
query, a page's message, a break-glass reason or an alert's labels must never do any of
that, wherever they are placed. Slack has no escape for the formatting characters, so
they become look-alikes that Slack does not parse (U+2217 ∗, U+FF3F ＿, U+223C ∼,
U+02CB ˋ); ``&``, ``<`` and ``>`` become the entities Slack documents.

Inside a code span or block (``code=True``) formatting characters are already inert;
only ``&<>`` and the backtick (which would close the span) are replaced, so a PromQL
query or a log line still reads (and copies) as typed.
"""

from __future__ import annotations

_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_FORMATTING = str.maketrans({"*": "\u2217", "_": "\uff3f", "~": "\u223c", "`": "\u02cb"})
_CODE = str.maketrans({"`": "\u02cb"})


def escape_mrkdwn(text: str, *, code: bool = False) -> str:
    """``text`` as literal characters in Slack mrkdwn (``code``: inside backticks)."""
    text = str(text)
    for raw, entity in _ENTITIES:
        text = text.replace(raw, entity)
    return text.translate(_CODE if code else _FORMATTING)


def code_span(text: str) -> str:
    """``text`` shown as inline code, escaped: for commands, queries, label values."""
    return f"`{escape_mrkdwn(text, code=True)}`" if text else "_(empty)_"
