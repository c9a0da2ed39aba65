"""The baseline of bench/ack_latency.py and bench/alert_storm.py: a bare app on aia-bot's stack.

The same server stack as `aia-bot serve` (Starlette, Bolt's AsyncSlackRequestHandler,
uvicorn with the same options, request signatures checked), and nothing else: no database,
no worker threads, no audit. Its `/slack/events` listener only acks; its `/alertmanager`
reads the body and answers 200. What aia-bot costs beyond this is aia-bot's own, and the
ratio of the two, measured in one run, says how much of a result is the machine's speed.

    .venv/bin/python bench/bare_bolt_app.py --port 8001   (SLACK_SIGNING_SECRET, SLACK_API_URL, SLACK_BOT_TOKEN)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


def build() -> Starlette:
    app = AsyncApp(
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        client=AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
        process_before_response=True,
    )

    @app.command("/aia")
    async def on_aia(ack: Callable[..., Any]) -> None:
        await ack()

    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def alertmanager(request: Request) -> Response:
        await request.body()
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"]),
                             Route("/alertmanager", alertmanager, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
