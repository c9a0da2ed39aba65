"""A local Socket Mode endpoint: the WebSocket Slack opens to an app, speaking Slack's envelopes."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from tests.harness.bot_process import free_port


class SocketModeServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/link"
        self.acks: dict[str, dict[str, Any]] = {}
        self.connections = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    def start(self) -> SocketModeServer:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/link", self._link)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1,
                                      "connection_info": {"app_id": "A0AIABOT"}, "debug_info": {"host": "local"}}))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                data = json.loads(message.data)
                if "envelope_id" in data:
                    self.acks[data["envelope_id"]] = data
        return ws

    def send(self, kind: str, payload: dict[str, Any]) -> str:
        """Deliver an envelope to the connected app, as Slack does; returns its envelope_id."""
        envelope_id = uuid.uuid4().hex
        body = json.dumps({"envelope_id": envelope_id, "type": kind, "payload": payload,
                           "accepts_response_payload": kind != "events_api", "retry_attempt": 0,
                           "retry_reason": ""})

        async def push() -> None:
            await self._sockets[-1].send_str(body)

        asyncio.run_coroutine_threadsafe(push(), self._loop).result(5)
        return envelope_id

    def stop(self) -> None:
        async def close() -> None:
            for ws in self._sockets:
                await ws.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
