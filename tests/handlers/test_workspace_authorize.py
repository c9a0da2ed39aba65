"""The authorize step: this workspace gets the bot's result, built once; any other is refused."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext

from handlers.workspace_authorize import WorkspaceAuthorize

AUTH_TEST = {"team_id": "T0HOME", "bot_id": "B0BOT", "user_id": "U0BOT"}
TOKEN = "xoxb-workspace-authorize-test-7d1e"


def _call(authorize: WorkspaceAuthorize, team_id: str | None, enterprise_id: str | None = None) -> Any:
    return asyncio.run(authorize(context=AsyncBoltContext(), enterprise_id=enterprise_id, team_id=team_id,
                                 user_id="U0PERSON"))


def test_this_workspace_gets_the_bots_result_built_once() -> None:
    foreign: list[dict[str, Any]] = []
    authorize = WorkspaceAuthorize(TOKEN, AUTH_TEST, foreign.append)
    first = _call(authorize, "T0HOME")
    assert first.bot_token == TOKEN and first.team_id == "T0HOME"
    assert first.bot_id == "B0BOT" and first.bot_user_id == "U0BOT"
    assert _call(authorize, "T0HOME") is first
    assert _call(authorize, None) is first  # a request without a team (some actions) is ours
    grid = _call(authorize, "T0HOME", enterprise_id="E0GRID")
    assert grid.enterprise_id == "E0GRID" and grid is not first
    assert foreign == []


def test_another_workspace_is_refused_and_reported_without_the_token() -> None:
    foreign: list[dict[str, Any]] = []
    authorize = WorkspaceAuthorize(TOKEN, AUTH_TEST, foreign.append)
    assert _call(authorize, "T0EVIL") is None
    assert foreign == [{"team_id": "T0EVIL", "enterprise_id": None, "user_id": "U0PERSON"}]
    assert TOKEN not in repr(foreign)
