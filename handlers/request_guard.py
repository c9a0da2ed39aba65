"""What stands between the internet and the routes that parse bodies.

- :class:`BodyLimit`: POST bodies of ``/slack/events`` and ``/alertmanager`` are capped
  before anything reads them whole (Slack's payloads are a few KiB; Alertmanager's a few
  hundred): a declared length over the cap is answered 413 unread, a streamed body is
  cut off at the cap and answered 413, invalid UTF-8 is answered 400. Nothing a caller
  sends can reach Bolt's or pydantic's parsers big or undecodable, so never a 5xx.
- :class:`RefusalSampler`: requests refused for a bad signature or token are counted in
  a Prometheus counter, and written to the audit log as one row per source per minute
  (with the count), not one row each: a flood must not queue every command behind
  the audit lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter

from bot.store.audit import AuditLog, AuditRecord

log = logging.getLogger(__name__)

REFUSED = Counter("aia_bot_refused_requests_total", "Requests refused before any work", ["route", "reason"])

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: cap and check the body of the guarded POST routes before any route sees it."""

    def __init__(self, app: ASGIApp, limit: int, paths: tuple[str, ...],
                 on_refused: Callable[[str, str, str], Awaitable[None]]) -> None:
        self.app = app
        self.limit = limit
        self.paths = paths
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        client = (scope.get("client") or ("?", 0))[0]
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send, path, client, 413, "too_large", f"body of {declared} bytes is over {self.limit}")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, path, client, 413, "too_large", f"body over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            await self._refuse(send, path, client, 400, "not_utf8", "body is not valid UTF-8")
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, path: str, client: str, status: int, reason: str, detail: str) -> None:
        REFUSED.labels(path, reason).inc()
        await self.on_refused(path, client, f"{reason}: {detail}")
        payload = json.dumps({"error": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class RefusalSampler:
    """Count refused requests; audit one row per (route, source) per ``interval`` seconds.

    The first refusal from a source is written at once (so a single forged request is in
    the audit log); the following ones within the interval are only counted, and the next
    row written for that source says how many there were. Sources are the peer address
    the server sees; the table keeps the newest ``max_sources`` of them.
    """

    def __init__(self, audit: AuditLog, interval: float = 60.0, max_sources: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.audit = audit
        self.interval = interval
        self.max_sources = max_sources
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def due(self, route: str, source: str) -> int | None:
        """Register one refusal; the number to audit now (this one included), or None."""
        now = self.clock()
        key = (route, source)
        with self._lock:
            last, pending = self._seen.get(key, (float("-inf"), 0))
            pending += 1
            if now - last >= self.interval:
                self._seen[key] = (now, 0)
                self._seen.move_to_end(key)
                while len(self._seen) > self.max_sources:
                    self._seen.popitem(last=False)
                return pending
            self._seen[key] = (last, pending)
            return None

    async def refused(self, route: str, source: str, detail: str, actor: str = "(unauthenticated)") -> None:
        """Count a refusal; write the sampled audit row off the event loop when one is due."""
        count = self.due(route, source)
        if count is None:
            return
        what = "1 request" if count == 1 else f"{count} requests (sampled: one row per source per interval)"
        record = AuditRecord(
            actor=actor, action=f"POST {route}", outcome="refused",
            arguments=json.dumps({"client": source, "count": count}),
            detail=f"{what} refused from {source}: {detail}",
        )
        try:
            await asyncio.to_thread(self.audit.append, record)
        except Exception:  # noqa: BLE001 - the refusal stands either way; the gap is in the log
            log.exception("could not audit refused requests from %s", source)
