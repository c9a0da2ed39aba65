"""Mask secret-looking values in text we did not write ourselves (logs, errors, arguments).

This is a second line of defence: the bot never reads Secret values in the
first place, but an application may print its DATABASE_URL into its own logs.
"""

from __future__ import annotations

import re

MASK = "«redacted»"

_PATTERNS = [
    # Slack tokens: bot, user, app, refresh, config.
    re.compile(r"xox[abposre]-[A-Za-z0-9-]{6,}"),
    re.compile(r"xapp-[A-Za-z0-9-]{6,}"),
    # Authorization headers.
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # scheme://user:password@host — keep the user, hide the password.
    re.compile(r"(?<=://)([^:/@\s]+):([^@\s/]+)(?=@)"),
    # key=value / key: value for keys that name secrets.
    re.compile(
        r"(?i)\b((?:[a-z0-9_]*_)?(?:password|passwd|secret|token|api[_-]?key|private[_-]?key))"
        r"(\"?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
    ),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    # Google service-account private key ids and API keys.
    re.compile(r"AIza[0-9A-Za-z_-]{30,}"),
]


def redact(text: str) -> str:
    if not text:
        return text
    for index, pattern in enumerate(_PATTERNS):
        if index == 3:
            text = pattern.sub(lambda m: f"{m.group(1)}:{MASK}", text)
        elif index == 4:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        else:
            text = pattern.sub(MASK, text)
    return text
