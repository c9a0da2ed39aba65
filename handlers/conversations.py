"""Where `/aia` answers: the configured channels and DMs of workspace members, nowhere else.

A command can come from any conversation the app is in: a Slack Connect channel shared
with another company, a group DM with a guest, a random channel someone invited the bot
to. Results there would show production's state (pods, logs, alerts) to people outside
the team. So the conversation is checked (off the ack path, with conversations.info,
cached for a few minutes) before anything runs:

- a channel named by AIA_ALERT_CHANNEL or AIA_COMMAND_CHANNELS (ID or name), and not
  shared with another organisation;
- or the person's own DM with the bot, when they are a full member of this workspace
  (not a guest, not a bot, not deactivated: users.info, read each time);
- never a group DM (guests may be in it), never anything Slack cannot describe.

Elsewhere the answer is an ephemeral refusal and an audit row; nothing runs.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from slack_sdk import WebClient

from bot.context import Caller
from bot.settings import Settings

log = logging.getLogger(__name__)
CACHE_SECONDS = 300.0


class ConversationPolicy:
    def __init__(self, settings: Settings, web: WebClient, team_id: str | None) -> None:
        names = [settings.aia_alert_channel, *settings.aia_command_channels.split(",")]
        self.allowed = {n.strip().lstrip("#").lower() for n in names if n.strip()}
        self.shown = ", ".join(n.strip() for n in names if n.strip())
        self.web = web
        self.team_id = team_id
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def refusal(self, caller: Caller) -> str | None:
        """None when results may be posted where the command came from; else why not."""
        channel = caller.channel_id or ""
        if not channel:
            return "This conversation cannot be identified"
        info = self._info(channel)
        if info is None:
            return "Slack could not say what this conversation is"
        if info.get("is_im"):
            if info.get("user") not in (None, caller.user_id):
                return "This is not your direct message with the bot"
            return self._member_refusal(caller.user_id)
        if info.get("is_mpim"):
            return "Group direct messages may include guests"
        if info.get("is_ext_shared") or info.get("is_pending_ext_shared") or (
            info.get("is_shared") and not info.get("is_org_shared")
        ):
            return "This channel is shared with another organisation (Slack Connect)"
        if channel.lower() in self.allowed or str(info.get("name") or "").lower() in self.allowed:
            return None
        return "This channel is not one the bot answers in"

    def _info(self, channel: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(channel)
            if cached and now - cached[0] < CACHE_SECONDS:
                return cached[1]
        try:
            info = dict(self.web.conversations_info(channel=channel).get("channel") or {})
        except Exception as exc:  # noqa: BLE001 - unknown conversation: refused, never guessed
            log.warning("conversations.info for %s failed: %s", channel, type(exc).__name__)
            return None
        with self._lock:
            self._cache[channel] = (now, info)
        return info

    def _member_refusal(self, user_id: str) -> str | None:
        try:
            user = self.web.users_info(user=user_id).get("user") or {}
        except Exception as exc:  # noqa: BLE001 - unknown person: refused
            log.warning("users.info for %s failed: %s", user_id, type(exc).__name__)
            return "Slack could not say who you are"
        if user.get("deleted") or user.get("is_bot"):
            return "Deactivated users and bots get no answers"
        if user.get("is_restricted") or user.get("is_ultra_restricted"):
            return "Guests get no answers in direct messages"
        if self.team_id and user.get("team_id") and user.get("team_id") != self.team_id:
            return "Only members of this workspace get answers in direct messages"
        return None
