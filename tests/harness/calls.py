"""Run a command through the dispatcher as one of the test users."""

from __future__ import annotations

from bot.context import Caller
from bot.core import Core
from bot.service import Outcome
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID


def run_as(core: Core, who: str, text: str) -> Outcome:
    user = SLACK_USERS[who]
    return core.dispatcher.handle(text, Caller(user_id=user.user_id, team_id=TEAM_ID, channel_id=CHANNEL_ID))
