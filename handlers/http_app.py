"""HTTP routes of `aia-bot serve` (Starlette + uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.background import background_services
from bot.core import Core
from bot.store.db import ping
from handlers.alertmanager import AlertmanagerWebhook
from handlers.cloud_operations import CloudOperationResumer
from handlers.render_alerts import BlockKitAlertRenderer
from handlers.slack_app import ApprovalSweeper, SlackFrontend

log = logging.getLogger(__name__)


def build_http_app(core: Core, frontend: SlackFrontend) -> Starlette:
    slack_handler = AsyncSlackRequestHandler(frontend.build_app())

    async def slack_events(request: Request) -> Response:
        return await slack_handler.handle(request)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        # Ready means: the database answers. Kubernetes or Prometheus being down
        # must not take the bot out of the Service: that is when it is needed most.
        try:
            await asyncio.wait_for(asyncio.to_thread(ping, core.engine), timeout=3)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: database unreachable: %s", type(exc).__name__)
            return JSONResponse({"ready": False, "database": "unreachable"}, status_code=503)
        return JSONResponse({"ready": True, "database": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if core.alerts is not None:
        # The core renders alert messages as plain text unless an entry point gives it Block Kit.
        core.alerts.renderer = BlockKitAlertRenderer(core.settings)
    services = [*background_services(core), ApprovalSweeper(frontend), CloudOperationResumer(frontend)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = []
        try:
            for service in services:
                await asyncio.to_thread(service.start)
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                await asyncio.to_thread(service.stop)

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/alertmanager", AlertmanagerWebhook(core).handle, methods=["POST"]),
        ]
    )
