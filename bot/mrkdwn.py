"""The one escaping function for text that came from a person, an alert or a backend.

Slack parses mrkdwn in every message text, section and field: ``<!channel>`` pings the
whole channel, ``<https://evil|Grafana>`` shows a disguised link, ``<@U123>`` mentions
someone, ``*``/``_``/``~``/backticks change how the rest of the line reads. A user's
query, a page's message, a break-glass reason or an alert's labels must never do any of
that, wherever they are placed.

:func:`escape_mrkdwn` has one job and three placements:

- ``"text"`` (default): running mrkdwn. ``&``, ``<`` and ``>`` become the entities Slack
  documents; Slack has no escape for formatting characters, so ``*``, ``_`` and ``~`` that
  could open or close formatting (at a word boundary: ``kubernetes_pods`` stays as it is)
  and every backtick become look-alikes Slack does not parse (∗ U+2217, ＿ U+FF3F,
  ∼ U+223C, ˋ U+02CB).
- ``"code"``: inside a code span or block, where formatting is inert: the entities, and
  backticks (which would close the span) become ˋ. A query or log line reads as typed.
- ``"markup"``: mrkdwn a procedure wrote on purpose (bold labels, code spans), which may
  quote a backend: only the entities, so nothing in it can ping, mention or link.

Escaping is idempotent (an ``&`` that starts ``&amp;``, ``&lt;`` or ``&gt;`` is kept), so
text escaped where it was made can safely be escaped again where it is shown.
"""

from __future__ import annotations

import re
from typing import Literal

_AMPERSAND = re.compile(r"&(?!(?:amp|lt|gt);)")
_FORMATTING = re.compile(r"(?<![A-Za-z0-9])[*_~]|[*_~](?![A-Za-z0-9])")
_LOOK_ALIKE = {"*": "\u2217", "_": "\uff3f", "~": "\u223c"}
BACKTICK_LOOK_ALIKE = "\u02cb"

Placement = Literal["text", "code", "markup"]


def escape_mrkdwn(text: str, placement: Placement = "text") -> str:
    """``text`` as literal characters in Slack mrkdwn, for where it is placed."""
    text = _AMPERSAND.sub("&amp;", str(text)).replace("<", "&lt;").replace(">", "&gt;")
    if placement == "markup":
        return text
    text = text.replace("`", BACKTICK_LOOK_ALIKE)
    if placement == "code":
        return text
    return _FORMATTING.sub(lambda m: _LOOK_ALIKE[m.group(0)], text)


def decode_entities(text: str) -> str:
    """The reverse of the entities: ``&lt;``, ``&gt;`` and ``&amp;`` as the characters.

    For text leaving Slack (what people typed, what a terminal shows). ``&amp;`` goes last,
    so ``&amp;lt;`` (an escaped entity) decodes to the text ``&lt;``, not to ``<``.
    """
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def code_span(text: str) -> str:
    """``text`` shown as inline code, escaped: for commands, queries, label values.

    An inline span ends at a line break, so line breaks become spaces.
    """
    text = " ".join(str(text).splitlines())
    return f"`{escape_mrkdwn(text, 'code')}`" if text.strip() else "_(empty)_"
