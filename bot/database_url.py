"""The database URL secrets as the bot builds them: a template from the settings, a generated password.

The bot never reads a database secret (its service account has no ``versions.access``): to
write a new version it needs the rest of the URL, so the operators state it once in
``AIA_DATABASE_URL_TEMPLATES`` (``SECRET=postgresql://USER:{password}@HOST:PORT/DB``). The
template holds no secret; the user named in it is the Cloud SQL user whose password changes.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

PLACEHOLDER = "{password}"
_SCHEME = re.compile(r"postgres(ql)?(\+[a-z0-9]+)?")


@dataclass(frozen=True)
class DatabaseUrlTemplate:
    template: str
    user: str
    host: str
    port: int
    database: str

    @property
    def target(self) -> str:
        """What the URL points at, password-free: safe on a card and in the audit log."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def render(self, password: str) -> str:
        return self.template.replace(PLACEHOLDER, urllib.parse.quote(password, safe=""))


def database_url_parts(template: str) -> DatabaseUrlTemplate | None:
    """The template's parts, or None unless it is postgresql://USER:{password}@HOST[:PORT]/DB[?...]."""
    if template.count(PLACEHOLDER) != 1:
        return None
    scheme, sep, rest = template.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    userinfo, at, location = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or password != PLACEHOLDER or not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", user):
        return None
    try:
        parsed = urllib.parse.urlsplit("//" + location)
        port = parsed.port or 5432
    except ValueError:
        return None
    database = parsed.path.lstrip("/")
    if not parsed.hostname or not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", database):
        return None
    return DatabaseUrlTemplate(template=template, user=user, host=parsed.hostname, port=port, database=database)


def database_url_templates(setting: str) -> dict[str, DatabaseUrlTemplate]:
    """``AIA_DATABASE_URL_TEMPLATES`` by secret (the settings validator has already refused bad entries)."""
    found = {}
    for entry in setting.split():
        secret, _, template = entry.partition("=")
        parts = database_url_parts(template)
        if parts is not None:
            found[secret] = parts
    return found
