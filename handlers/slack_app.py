"""The Slack app: listeners ack at once; the work runs on a thread pool afterwards.

Nothing between the request and ``ack()`` touches a backend: no database, no
Kubernetes, no Slack API call. That is what keeps the ack inside Slack's 3 s
even when Kubernetes takes 5 s to answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookClient

from bot.context import Caller
from bot.core import Core
from bot.service import Outcome, OutcomeKind
from bot.store.audit import AuditRecord
from handlers.render_blocks import RUN_ACTION_ID, SlackMessage, render_problem, render_result
from handlers.slack_text import slack_text_to_plain

log = logging.getLogger(__name__)
# Errors that mean "the bot cannot post here", not "Slack is broken".
CANNOT_POST = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action"}


class SlackFrontend:
    def __init__(self, core: Core, auth_test: dict[str, Any]) -> None:
        if core.web is None or core.settings.slack_signing_secret is None:
            raise ValueError("SlackFrontend needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET")
        self.core = core
        self.web = core.web
        self.auth_test = auth_test
        self.team_id = auth_test.get("team_id")
        self.executor = ThreadPoolExecutor(
            max_workers=core.settings.aia_worker_threads, thread_name_prefix="aia-work"
        )
        self._start_all_workers(core.settings.aia_worker_threads)

    def _start_all_workers(self, count: int) -> None:
        """Create every worker thread now: starting them lazily during the first burst
        of commands would cost the event loop time exactly when acks are due."""
        barrier = threading.Barrier(count + 1)
        for _ in range(count):
            self.executor.submit(barrier.wait, 10)
        barrier.wait(10)

    # -- the Bolt app --------------------------------------------------------
    def build_app(self) -> AsyncApp:
        settings = self.core.settings
        assert settings.slack_bot_token is not None and settings.slack_signing_secret is not None
        token = settings.slack_bot_token.get_secret_value()

        async def authorize(enterprise_id: str | None, team_id: str | None, **_: Any) -> AuthorizeResult | None:
            # The auth.test answer was fetched once at start-up: no Slack call on the ack path.
            if team_id and self.team_id and team_id != self.team_id:
                log.warning("refused a request from another workspace %s", team_id)
                return None
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=self.team_id,
                bot_token=token,
                bot_id=self.auth_test.get("bot_id"),
                bot_user_id=self.auth_test.get("user_id"),
            )

        app = AsyncApp(
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            client=AsyncWebClient(token=token, base_url=settings.slack_api_url),
            authorize=authorize,  # type: ignore[arg-type]  # None refuses, as Bolt expects
            raise_error_for_unhandled_request=False,
            # Our listeners only ack and hand the work to the thread pool, so running
            # them before the response costs nothing and spares Bolt's 10 ms ack polling.
            process_before_response=True,
        )

        @app.command("/aia")
        async def on_aia(ack: Callable[..., Any], body: dict[str, Any]) -> None:
            await ack()
            self.submit(self.handle_slash, body)

        @app.action({"action_id": __import__("re").compile(f"^{RUN_ACTION_ID}(:|$)")})
        async def on_run_button(ack: Callable[..., Any], body: dict[str, Any]) -> None:
            await ack()
            self.submit(self.handle_run_button, body)

        return app

    def submit(self, fn: Callable[[dict[str, Any]], None], body: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, self._guarded, fn, body)
        future.add_done_callback(lambda f: f.exception())  # never "exception was never retrieved"

    @staticmethod
    def _guarded(fn: Callable[[dict[str, Any]], None], body: dict[str, Any]) -> None:
        try:
            fn(body)
        except Exception:  # noqa: BLE001 - the worker must survive anything one request does
            log.exception("unhandled error while answering a Slack request")

    # -- work after the ack (worker threads) -------------------------------
    def handle_slash(self, body: dict[str, Any]) -> None:
        text = slack_text_to_plain(str(body.get("text") or ""))
        caller = Caller(
            user_id=str(body.get("user_id")),
            team_id=body.get("team_id"),
            channel_id=body.get("channel_id"),
        )
        outcome = self.core.dispatcher.handle(text, caller)
        self.deliver(outcome, text, caller, body.get("response_url"))

    def handle_run_button(self, body: dict[str, Any]) -> None:
        user = body.get("user") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        caller = Caller(user_id=str(user.get("id")), team_id=(body.get("team") or {}).get("id"), channel_id=channel)
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts")
        try:
            action = (body.get("actions") or [{}])[0]
            command = json.loads(action.get("value") or "")["command"]
            if not isinstance(command, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, IndexError):
            self.core.audit.append(AuditRecord(actor=caller.user_id, action="(button)", outcome="user_error",
                                               detail="malformed button value", team_id=caller.team_id,
                                               channel_id=caller.channel_id))
            self._ephemeral(SlackMessage(text=":x: That button is malformed; run the command with `/aia` instead."),
                            caller, body.get("response_url"))
            return
        outcome = self.core.dispatcher.handle(command, caller)
        self.deliver(outcome, command, caller, body.get("response_url"), thread_ts=thread_ts)

    def deliver(
        self,
        outcome: Outcome,
        command: str,
        caller: Caller,
        response_url: str | None,
        thread_ts: str | None = None,
    ) -> None:
        if outcome.kind is not OutcomeKind.OK or outcome.result is None:
            self._ephemeral(render_problem(outcome), caller, response_url)
            return
        message = render_result(outcome.result, command, caller.user_id, self.core.settings.aia_max_inline_lines)
        try:
            posted = self.web.chat_postMessage(
                channel=caller.channel_id or "", text=message.text, blocks=message.blocks, thread_ts=thread_ts,
                unfurl_links=False, unfurl_media=False,
            )
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error not in CANNOT_POST or not response_url:
                raise
            # A channel the bot is not in: answer through the response URL instead.
            WebhookClient(response_url).send(
                text=message.text + "\n_(Invite the bot with `/invite` for graphs and files.)_",
                blocks=message.blocks,
                response_type="in_channel",
            )
            return
        if message.uploads:
            ts = thread_ts or posted.get("ts")
            self.web.files_upload_v2(
                channel=posted.get("channel"),
                thread_ts=ts,
                file_uploads=[{"content": u.content, "filename": u.filename, "title": u.title} for u in message.uploads],
            )

    def _ephemeral(self, message: SlackMessage, caller: Caller, response_url: str | None) -> None:
        if response_url:
            response = WebhookClient(response_url).send(
                text=message.text, blocks=message.blocks or None, response_type="ephemeral"
            )
            if response.status_code == 200:
                return
            log.warning("response_url answered %s; falling back to chat.postEphemeral", response.status_code)
        if caller.channel_id:
            self.web.chat_postEphemeral(
                channel=caller.channel_id, user=caller.user_id, text=message.text, blocks=message.blocks or None
            )
