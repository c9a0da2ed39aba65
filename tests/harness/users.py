"""The Slack people every test knows."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.slack_server import FakeSlackServer

TEAM_ID = "T0AIA"
CHANNEL_ID = "C0ALERTS"


@dataclass(frozen=True)
class TestUser:
    user_id: str
    name: str
    email: str


SLACK_USERS = {
    "viewer": TestUser("U0VIEW1", "vera", "vera@013a.tech"),
    "operator": TestUser("U0OPS01", "otto", "otto@013a.tech"),
    "approver": TestUser("U0APR01", "anna", "anna@013a.tech"),
    "admin": TestUser("U0ADM01", "adam", "adam@013a.tech"),
    "nobody": TestUser("U0NOBODY", "nora", "nora@013a.tech"),
    "oncall": TestUser("U0ONCALL", "olga", "olga@013a.tech"),  # viewer through user group S0ONCALL
}


def install_users(server: FakeSlackServer) -> None:
    server.add_channel(CHANNEL_ID, "aia-production-alerts", [u.user_id for u in SLACK_USERS.values()])
    for user in SLACK_USERS.values():
        server.add_user(user.user_id, user.name, user.email)
    server.add_usergroup("S0ONCALL", "oncall", [SLACK_USERS["oncall"].user_id])
