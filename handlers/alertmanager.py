"""`POST /alertmanager`: Alertmanager's webhook (version 4 payload).

Answers fast: check the bearer token (none configured: alert intake is off and every
request is answered 503, so nothing unauthenticated is ever stored), parse, store the body in the alert inbox (one
INSERT) — no Slack, Prometheus or Kubernetes call, and no folding into groups, on this
path. Status codes say what Alertmanager should do: 2xx done (duplicates included), 4xx
do not retry (bad token, bad payload: audited, nothing stored), 503 retry (the database is
down; Alertmanager retries on 5xx).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time

from prometheus_client import Counter, Histogram
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.alerts.payload import PayloadError, parse_payload
from bot.core import Core
from bot.store.audit import AuditRecord
from handlers.request_guard import RefusalSampler

log = logging.getLogger(__name__)
ACTOR = "alertmanager"

REQUESTS = Counter("aia_bot_alertmanager_requests_total", "Alertmanager webhook requests", ["outcome"])
LATENCY = Histogram(
    "aia_bot_alertmanager_seconds", "Time to answer Alertmanager",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class AlertmanagerWebhook:
    def __init__(self, core: Core, refusals: RefusalSampler | None = None) -> None:
        self.core = core
        self.refusals = refusals or RefusalSampler(core.audit, core.settings.aia_refusal_audit_seconds)
        self.max_body_bytes = core.settings.aia_max_request_bytes
        token = core.settings.alertmanager_webhook_token
        self._token = token.get_secret_value().encode() if token is not None else None
        if self._token is None:
            log.warning("alert intake is OFF: ALERTMANAGER_WEBHOOK_TOKEN is not set, so POST /alertmanager "
                        "answers 503 to everyone. Set the token here and in Alertmanager's http_config.")

    async def handle(self, request: Request) -> Response:
        started = time.monotonic()
        try:
            return await self._handle(request)
        finally:
            LATENCY.observe(time.monotonic() - started)

    async def _handle(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        if self._token is None:
            REQUESTS.labels("intake_off").inc()
            await self.refusals.refused("/alertmanager", client, "alert intake is off (no ALERTMANAGER_WEBHOOK_TOKEN)",
                                        actor=ACTOR)
            return JSONResponse({"error": "alert intake is off: ALERTMANAGER_WEBHOOK_TOKEN is not configured"},
                                status_code=503)
        refusal = self._check_token(request.headers.get("authorization"))
        if refusal is not None:
            # A flood of bad tokens is counted and sampled, never one audit row each.
            await self.refusals.refused("/alertmanager", client, refusal, actor=ACTOR)
            REQUESTS.labels("unauthorized").inc()
            return JSONResponse({"error": "unauthorized"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="alertmanager"'})
        # The body limit and UTF-8 check ran before this route (handlers.request_guard); this
        # second check covers the route when it is mounted without the middleware.
        body = await request.body()
        if len(body) > self.max_body_bytes:
            await self._audit("user_error", f"body of {len(body)} bytes is over the limit", request)
            REQUESTS.labels("too_large").inc()
            return JSONResponse({"error": f"body over {self.max_body_bytes} bytes"}, status_code=413)
        try:
            payload = parse_payload(body)
        except PayloadError as exc:
            await self._audit("user_error", f"invalid payload: {exc}", request)
            REQUESTS.labels("invalid").inc()
            return JSONResponse({"error": f"invalid payload: {exc}"[:500]}, status_code=400)
        service = self.core.alerts
        if service is None:
            return JSONResponse({"error": "alerts are not enabled"}, status_code=503)
        try:
            # Stored as received (one INSERT); groups, counts and Slack follow from the inbox.
            await asyncio.to_thread(service.accept, payload, body)
        except SQLAlchemyError as exc:
            # Alertmanager retries on 5xx: that is exactly what we want while the database is down.
            log.error("alertmanager webhook: database error (%s); answered 503", type(exc).__name__)
            REQUESTS.labels("database_down").inc()
            return JSONResponse({"error": "database unavailable; retry"}, status_code=503)
        REQUESTS.labels("ok").inc()
        return JSONResponse({"status": "ok", "alerts": len(payload.alerts)})

    def _check_token(self, header: str | None) -> str | None:
        """None when the request may pass; else why not (never the token itself)."""
        if self._token is None:
            return "alert intake is off"
        if not header:
            return "no bearer token"
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return "authorization is not a bearer token"
        if not secrets.compare_digest(value.strip().encode(), self._token):
            return "wrong bearer token"
        return None

    async def _audit(self, outcome: str, detail: str, request: Request) -> None:
        client = request.client.host if request.client else "?"
        record = AuditRecord(actor=ACTOR, action="alertmanager webhook", outcome=outcome,
                             arguments=json.dumps({"client": client}), detail=detail)
        try:
            await asyncio.to_thread(self.core.audit.append, record)
        except Exception:  # noqa: BLE001 - the answer still goes out; the gap is logged
            log.exception("could not audit a refused alertmanager request")
