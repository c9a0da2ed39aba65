"""`aia-bot socket`: the same Slack app over Socket Mode, for workspaces that cannot expose HTTP."""

from __future__ import annotations

import asyncio
import logging
import signal

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import background_services
from handlers.cloud_operations import CloudOperationResumer
from handlers.slack_app import ApprovalSweeper

log = logging.getLogger(__name__)


def run_socket_mode() -> int:
    from handlers.cli import start_frontend

    # The audit chain is keyed in every Slack mode (docs/security.md).
    frontend = start_frontend(("slack_bot_token", "slack_app_token", "aia_audit_key"), "aia-bot socket")
    settings = frontend.core.settings
    assert settings.slack_app_token is not None
    app_token = settings.slack_app_token.get_secret_value()
    services = [*background_services(frontend.core), ApprovalSweeper(frontend), CloudOperationResumer(frontend)]

    async def main() -> None:
        # The Socket Mode client opens its aiohttp session on the running loop.
        handler = AsyncSocketModeHandler(
            frontend.build_app(),
            app_token,
            # apps.connections.open goes to the same Web API base URL as everything else.
            web_client=AsyncWebClient(base_url=settings.slack_api_url),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for service in services:
            await asyncio.to_thread(service.start)
        try:
            await handler.connect_async()
            log.info("connected to Slack over Socket Mode for team %s", frontend.team_id)
            await stop.wait()
        finally:
            await handler.close_async()
            for service in reversed(services):
                await asyncio.to_thread(service.stop)

    asyncio.run(main())
    return 0
