"""The Slack Web API client the core uses (sync; it runs in worker threads)."""

from __future__ import annotations

from collections.abc import Callable

from slack_sdk import WebClient
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
