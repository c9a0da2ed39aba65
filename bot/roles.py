"""Roles: who may run what. Each role includes the ones before it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import IntEnum

from bot.settings import RolesConfig

log = logging.getLogger(__name__)


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    APPROVER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()


GroupMembers = Callable[[str], set[str]]


class RoleResolver:
    """Maps a Slack user to their highest role, through user IDs and user groups.

    Group membership is read from Slack (usergroups.users.list) and cached for
    ``ttl`` seconds: short enough that removing someone from the on-call group
    takes effect within a minute, long enough not to call Slack on every command.
    """

    def __init__(self, config: RolesConfig, group_members: GroupMembers | None, ttl: float = 60.0):
        self._config = config
        self._group_members = group_members
        self._ttl = ttl
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def role_of(self, user_id: str, fresh: bool = False) -> Role | None:
        """The user's highest role; ``fresh`` re-reads user groups (approvals do)."""
        best: Role | None = None
        for role in Role:
            principals = getattr(self._config, role.label)
            if self._matches(user_id, principals, fresh):
                best = role
        return best

    def _matches(self, user_id: str, principals: list[str], fresh: bool) -> bool:
        if user_id in principals:
            return True
        return any(p.startswith("S") and user_id in self._members(p, fresh) for p in principals)

    def _members(self, group_id: str, fresh: bool = False) -> set[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(group_id)
            if cached and now - cached[0] < self._ttl and not fresh:
                return cached[1]
        members: set[str] = set()
        if self._group_members is not None:
            try:
                members = self._group_members(group_id)
            except Exception as exc:  # noqa: BLE001 - fail closed: an unreadable group grants nothing
                log.warning("could not read members of user group %s: %s", group_id, exc)
                return set()
        with self._lock:
            self._cache[group_id] = (now, members)
        return members
