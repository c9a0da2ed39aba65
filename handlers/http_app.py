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
from bot.errors import ConfigurationError
from bot.store.db import ping
from handlers.alertmanager import AlertmanagerWebhook
from handlers.cloud_operations import CloudOperationResumer
from handlers.request_guard import REFUSED, BodyLimit, RefusalSampler
from handlers.slack_app import ApprovalSweeper, SlackFrontend

log = logging.getLogger(__name__)
GUARDED_PATHS = ("/slack/events", "/alertmanager")


def require_http_secrets(core: Core) -> None:
    """HTTP mode never runs open: no signing secret or audit key, no server (one line says which)."""
    settings = core.settings
    if settings.slack_signing_secret is None:
        raise ConfigurationError("SLACK_SIGNING_SECRET is not set (or blank); `aia-bot serve` will not accept "
                                 "unsigned requests. Set it to the app's signing secret.")
    if settings.aia_audit_key is None:
        raise ConfigurationError("AIA_AUDIT_KEY is not set (or blank); `aia-bot serve` will not write an audit "
                                 "log anyone with database access could rewrite. Set it from Secret Manager.")


def build_http_app(core: Core, frontend: SlackFrontend) -> Starlette:
    require_http_secrets(core)
    slack_handler = AsyncSlackRequestHandler(frontend.build_app(http=True))
    refusals = RefusalSampler(core.audit, core.settings.aia_refusal_audit_seconds)

    async def slack_events(request: Request) -> Response:
        frontend.acks.arrived()
        response = await slack_handler.handle(request)
        if response.status_code == 401:
            # Bolt refused the signature (or its age): counted, and sampled into the audit log.
            REFUSED.labels("/slack/events", "bad_signature").inc()
            client = request.client.host if request.client else "?"
            await refusals.refused("/slack/events", client, "bad or missing Slack signature")
        return response

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

    alertmanager = AlertmanagerWebhook(core, refusals)
    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/alertmanager", alertmanager.handle, methods=["POST"]),
        ]
    )
    app.add_middleware(BodyLimit, limit=core.settings.aia_max_request_bytes, paths=GUARDED_PATHS,
                       on_refused=refusals.refused)
    return app
