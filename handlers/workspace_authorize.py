"""Bolt's authorize step for the one workspace this bot serves.

The answer of auth.test was fetched once at start-up, so the ack path makes no Slack call,
and the result for a request is built once per enterprise id and reused: Bolt's generic
callable-authorize path assembled and filtered a dict of a dozen arguments on every request,
a tenth of the event loop's time per ack. A request from another workspace gets None (Bolt
refuses it) and is reported through ``on_foreign`` (audited off the ack path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext


class WorkspaceAuthorize(AsyncAuthorize):
    def __init__(self, bot_token: str, auth_test: dict[str, Any],
                 on_foreign: Callable[[dict[str, Any]], None]) -> None:
        self._token = bot_token
        self.team_id: str | None = auth_test.get("team_id")
        self._bot_id = auth_test.get("bot_id")
        self._bot_user_id = auth_test.get("user_id")
        self.on_foreign = on_foreign
        self._results: dict[str | None, AuthorizeResult] = {}

    async def __call__(self, *, context: AsyncBoltContext, enterprise_id: str | None, team_id: str | None,
                       user_id: str | None, **_: Any) -> AuthorizeResult | None:
        if team_id and self.team_id and team_id != self.team_id:
            self.on_foreign({"team_id": team_id, "enterprise_id": enterprise_id, "user_id": user_id})
            return None
        result = self._results.get(enterprise_id)
        if result is None:
            result = self._results[enterprise_id] = AuthorizeResult(
                enterprise_id=enterprise_id, team_id=self.team_id, bot_token=self._token,
                bot_id=self._bot_id, bot_user_id=self._bot_user_id,
            )
        return result
