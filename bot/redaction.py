"""Mask secret-looking values in text we did not write ourselves (logs, errors, arguments).

This is the one redaction module: logs, `describe`, events, configuration backups,
the audit log, error messages and everything the Slack renderers post go through
:func:`redact`. It is a second line of defence (the bot never reads Secret values
on purpose), but an application prints its DATABASE_URL into its own logs, a
config map gets a password by mistake, a person pastes a token into a command.

What counts as a secret (tests/bot/test_redaction.py checks each shape with
hypothesis):

- Slack tokens (``xoxb-``, ``xoxp-``, ``xoxa-``, ``xoxe.xoxp-``, ``xapp-``) and
  incoming-webhook URLs (``hooks.slack.com/services/...``);
- ``Authorization: Bearer|Basic|Token ...`` and ``Bearer ...`` anywhere;
- the password in ``scheme://user:password@host`` and ``redis://:password@host``;
- values of keys that name a secret (``PGPASSWORD=``, ``AWS_SECRET_ACCESS_KEY=``,
  ``SECRET_KEY:``, ``"api_key": "..."``, ``'DB_PASSWORD': '...'``, ``--password=...``),
  but not keys that only *refer* to one (``secretName``, ``secretKeyRef``,
  ``tokenPath``: those are names, and backups need them to rebuild the namespace);
- JSON Web Tokens, PEM private keys (also cut off without their END line),
  AWS access key ids, Google API keys, GitHub and GitLab tokens.

The mask keeps what is needed to read the line (the key, the user, the scheme).
"""

from __future__ import annotations

import re

MASK = "«redacted»"

# Words that make a key name a secret's name. "pass" alone catches PGPASS, DB_PASS;
# "auth" alone is too broad (AUTH_MODE=oidc), so only auth tokens/keys count.
_CREDENTIAL_WORDS = (
    r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|access[_-]?key"
    r"|credentials?|auth[_-]?(?:token|key)|client[_-]?secret|session[_-]?key|signing[_-]?key|dsn"
)
# Keys that name where a secret is, not the secret itself.
_REFERENCE_SUFFIX = re.compile(r"(?i)(name|names|ref|path|file|dir|store|id|ids|type|ttl|seconds|count|length|enabled)$")
# The word may follow anything (PGPASSWORD) but must end a name component: not
# "passenger" or "tokenizer"; camelCase "clientSecret" counts.
_SECRET_KEY_NAME = re.compile(rf"(?i:{_CREDENTIAL_WORDS})(?![a-z])")

_SLACK_TOKEN = re.compile(r"\b(?:xox[abposre](?:\.xox[abposre])?|xapp)-[A-Za-z0-9-]{6,}")
_SLACK_WEBHOOK = re.compile(r"(https://hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+")
# "Authorization: <scheme> <credential>" (any scheme), and a bare "Bearer <token>".
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?(?>(?:(?:bearer|basic|token|digest|negotiate)[ \t]+)?))"
    r"(?!«)[^\s\"',;]+"
)
_BEARER = re.compile(r"(?i)\b(bearer[ \t]+)(?!«)[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):([^@\s/]+)(?=@)")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.S
)
_KNOWN_SHAPES = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API key
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),  # GitLab personal access token
]
# KEY=value, KEY: value, "KEY": "value", 'KEY': 'value', --key=value, --key value.
# Whitespace around the separator stays on one line: "secretKeyRef:\n  name: x" is YAML
# structure, not a value.
_KEY_VALUE = re.compile(
    r"""(?P<key>(?<![A-Za-z0-9_.-])-{0,2}[A-Za-z_][A-Za-z0-9_.-]{0,80})(?P<q>["']?)(?P<sep>[ \t]*[=:][ \t]*|[ \t]+(?=\S))"""
    r"""(?=(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,;&'"}\]]+))"""
)


def looks_secret_key(name: str) -> bool:
    """True for a variable or key name that holds a secret (DB_PASSWORD, PGPASSWORD, API_KEY)."""
    bare = name.strip().strip("\"'").lstrip("-")
    if not _SECRET_KEY_NAME.search(bare):
        return False
    return not _REFERENCE_SUFFIX.search(bare.replace("-", "_"))


def looks_secret_value(value: str) -> bool:
    """True when a value on its own looks like a credential (a token, a URL with a password...)."""
    return bool(value) and redact(value) != value


def _masked_value(match: re.Match[str]) -> str | None:
    """The masked value for a KEY=value match, or None when it stays as it is."""
    key, sep = match.group("key"), match.group("sep")
    # "--password value" (space separated) only for flags; "Bearer x" is handled above.
    if "=" not in sep and ":" not in sep and not key.startswith("-"):
        return None
    if not looks_secret_key(key):
        return None
    value = match.group("value")
    if MASK in value or (value.startswith(("$(", "${")) and value.endswith((")", "}"))):
        return None  # already masked, or a reference to another variable
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"


def _mask_key_values(text: str) -> str:
    # The value is only looked ahead at, not consumed, so a value that is itself a
    # mapping ({'pairs': "{'DB_PASSWORD': 'x'}"}) is searched for keys as well.
    out: list[str] = []
    pos = 0
    for match in _KEY_VALUE.finditer(text):
        if match.start() < pos:
            continue  # inside a value masked already
        masked = _masked_value(match)
        if masked is None:
            continue
        out.append(text[pos:match.end()])
        out.append(masked)
        pos = match.end() + len(match.group("value"))
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    if not text:
        return text
    text = _PEM.sub(lambda m: f"-----BEGIN {m.group(1)}-----{MASK}-----END {m.group(1)}-----", text)
    text = _SLACK_WEBHOOK.sub(lambda m: m.group(1) + MASK, text)
    text = _SLACK_TOKEN.sub(MASK, text)
    text = _JWT.sub(MASK, text)
    for pattern in _KNOWN_SHAPES:
        text = pattern.sub(MASK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}", text)
    return _mask_key_values(text)


def redact_env_value(name: str, value: str) -> str:
    """An environment variable's or config key's value as it may be shown or stored."""
    if looks_secret_key(name):
        return MASK
    return redact(value)
