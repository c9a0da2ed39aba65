"""The Slack Web API client the core uses (sync; it runs in worker threads)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)


def make_web_client(token: str, base_url: str) -> WebClient:
    # Honour Retry-After on 429 and retry transient failures a little.
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=15,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )


def usergroup_members(web: WebClient) -> Callable[[str], set[str]]:
    def members(group_id: str) -> set[str]:
        response = web.usergroups_users_list(usergroup=group_id)
        return set(response.get("users") or [])

    return members


@dataclass(frozen=True)
class SlackUser:
    user_id: str
    email: str | None
    team_id: str | None
    is_bot: bool
    is_restricted: bool
    is_ultra_restricted: bool
    deleted: bool


def user_directory(web: WebClient) -> Callable[[str], SlackUser | None]:
    """users.info, read at decision time (never cached: a deactivation must count at once)."""

    def lookup(user_id: str) -> SlackUser | None:
        try:
            user = web.users_info(user=user_id).get("user") or {}
        except SlackApiError as exc:
            if exc.response.get("error") == "user_not_found":
                return None
            raise
        return SlackUser(
            user_id=str(user.get("id")),
            email=((user.get("profile") or {}).get("email") or None),
            team_id=user.get("team_id"),
            is_bot=bool(user.get("is_bot") or user.get("is_app_user")),
            is_restricted=bool(user.get("is_restricted")),
            is_ultra_restricted=bool(user.get("is_ultra_restricted")),
            deleted=bool(user.get("deleted")),
        )

    return lookup
