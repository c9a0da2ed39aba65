"""The Slack app: listeners ack at once; the work runs on a thread pool afterwards.

Nothing between the request and ``ack()`` touches a backend: no database, no
Kubernetes, no Slack API call. That is what keeps the ack inside Slack's 3 s
even when Kubernetes takes 5 s to answer.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookClient

from bot.approvals.service import ApprovalStatus, ApprovalStoreUnavailable
from bot.context import Caller
from bot.core import Core
from bot.errors import ConfigurationError
from bot.events import BreakGlassUsed
from bot.redaction import redact
from bot.results import Result
from bot.service import Outcome, OutcomeKind
from bot.store.audit import AuditRecord
from handlers.ack_first import AckFirst
from handlers.conversations import ConversationPolicy
from handlers.render_approvals import APPROVAL_ACTION, render_card
from handlers.render_blocks import RUN_ACTION_ID, SlackMessage, render_problem, render_result
from handlers.slack_text import escape_mrkdwn, slack_text_to_plain
from handlers.workspace_authorize import WorkspaceAuthorize

log = logging.getLogger(__name__)
# Errors that mean "the bot cannot post here", not "Slack is broken".
CANNOT_POST = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action"}


class SlackFrontend:
    def __init__(self, core: Core, auth_test: dict[str, Any]) -> None:
        if core.web is None:
            raise ValueError("SlackFrontend needs SLACK_BOT_TOKEN")
        self.core = core
        self.web = core.web
        self.auth_test = auth_test
        self.team_id = auth_test.get("team_id")
        core.events.subscribe(BreakGlassUsed, self._announce_break_glass)
        self.conversations = ConversationPolicy(core.settings, self.web, self.team_id)
        self.executor = ThreadPoolExecutor(
            max_workers=core.settings.aia_worker_threads, thread_name_prefix="aia-work"
        )
        # Work is handed to the workers once a burst of requests is acked (the HTTP route
        # notes each request as it arrives).
        self.acks = AckFirst(self.executor)
        self._start_all_workers(core.settings.aia_worker_threads)

    def _start_all_workers(self, count: int) -> None:
        """Create every worker thread now: starting them lazily during the first burst
        of commands would cost the event loop time exactly when acks are due."""
        barrier = threading.Barrier(count + 1)
        for _ in range(count):
            self.executor.submit(barrier.wait, 10)
        barrier.wait(10)

    # -- the Bolt app --------------------------------------------------------
    def build_app(self, http: bool = False) -> AsyncApp:
        settings = self.core.settings
        assert settings.slack_bot_token is not None
        token = settings.slack_bot_token.get_secret_value()
        # Socket Mode has no signed HTTP requests (Slack's websocket is authenticated by the
        # app token). HTTP mode verifies every request, with no way to switch that off.
        signing_secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        if http and not signing_secret:
            raise ConfigurationError("SLACK_SIGNING_SECRET is not set (or blank); HTTP mode needs it")

        def refuse_foreign(details: dict[str, Any]) -> None:
            log.warning("refused a request from another workspace %s", details.get("team_id"))
            # Audited off the ack path, like all other work.
            self.executor.submit(self._guarded, self._audit_foreign_team, details)

        app = AsyncApp(
            signing_secret=signing_secret,
            request_verification_enabled=http or signing_secret is not None,
            client=AsyncWebClient(token=token, base_url=settings.slack_api_url),
            # No Slack call and no per-request argument building on the ack path.
            authorize=WorkspaceAuthorize(token, self.auth_test, refuse_foreign),  # type: ignore[arg-type]  # None refuses
            raise_error_for_unhandled_request=False,
            # Our listeners only ack and hand the work to the thread pool, so running
            # them before the response costs nothing and spares Bolt's 10 ms ack polling.
            process_before_response=True,
        )

        @app.command("/aia")
        async def on_aia(ack: Callable[..., Any], body: dict[str, Any]) -> None:
            await ack()
            self.submit(self.handle_slash, body)

        @app.action({"action_id": re.compile(f"^{RUN_ACTION_ID}(:|$)")})
        async def on_run_button(ack: Callable[..., Any], body: dict[str, Any]) -> None:
            await ack()
            self.submit(self.handle_run_button, body)

        @app.action({"action_id": re.compile(f"^{APPROVAL_ACTION}:(approve|deny|cancel)$")})
        async def on_approval_button(ack: Callable[..., Any], body: dict[str, Any]) -> None:
            await ack()
            self.submit(self.handle_approval_button, body)

        from handlers.escalation_actions import register_escalation_actions
        register_escalation_actions(app, self)
        return app

    def submit(self, fn: Callable[[dict[str, Any]], None], body: dict[str, Any]) -> None:
        """On the event loop, after the ack: the work runs on a worker once the burst is acked."""
        self.acks.submit(self._guarded, fn, body)

    def _guarded(self, fn: Callable[[dict[str, Any]], None], body: dict[str, Any]) -> None:
        try:
            fn(body)
        except Exception:  # noqa: BLE001 - the worker must survive anything one request does
            log.exception("unhandled error while answering a Slack request")

    def _audit_foreign_team(self, details: dict[str, Any]) -> None:
        self.core.audit.append(AuditRecord(
            actor=str(details.get("user_id") or "unknown"), action="(request)", outcome="refused",
            detail=f"request from another workspace {details.get('team_id')}", team_id=details.get("team_id"),
        ))

    # -- work after the ack (worker threads) -------------------------------
    def _refused_here(self, caller: Caller, what: str, response_url: str | None) -> bool:
        """True (and the person told, privately) when results may not be posted in this conversation."""
        why = self.conversations.refusal(caller)
        if why is None:
            return False
        self.core.audit.append(AuditRecord(actor=caller.user_id, action=what, outcome="refused",
                                           detail=f"conversation {caller.channel_id}: {why}",
                                           team_id=caller.team_id, channel_id=caller.channel_id))
        self._ephemeral(SlackMessage(text=f":no_entry: {why}, so nothing was run here. `/aia` answers in "
                                     f"{self.conversations.shown} and in your direct message with the bot."),
                        caller, response_url)
        return True

    def handle_slash(self, body: dict[str, Any]) -> None:
        text = slack_text_to_plain(str(body.get("text") or ""))
        caller = Caller(
            user_id=str(body.get("user_id")),
            team_id=body.get("team_id"),
            channel_id=body.get("channel_id"),
        )
        if self._refused_here(caller, "(command)", body.get("response_url")):
            return
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
        if self._refused_here(caller, "(button)", body.get("response_url")):
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
        if outcome.kind is OutcomeKind.APPROVAL_REQUESTED and outcome.approval is not None:
            self.post_approval_card(outcome, caller, response_url)
            return
        if outcome.kind is not OutcomeKind.OK or outcome.result is None:
            self._ephemeral(render_problem(outcome), caller, response_url)
            return
        self.post_result(outcome.result, command, caller, response_url, thread_ts)

    def post_result(self, result: Result, command: str, caller: Caller, response_url: str | None,
                    thread_ts: str | None = None, channel_id: str | None = None) -> None:
        message = render_result(result, command, caller.user_id, self.core.settings.aia_max_inline_lines)
        try:
            posted = self.web.chat_postMessage(
                channel=channel_id or caller.channel_id or "", text=message.text, blocks=message.blocks,
                thread_ts=thread_ts, unfurl_links=False, unfurl_media=False,
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
        ts = thread_ts or posted.get("ts")
        if message.uploads:
            self.web.files_upload_v2(
                channel=posted.get("channel"),
                thread_ts=ts,
                file_uploads=[{"content": u.content, "filename": u.filename, "title": u.title} for u in message.uploads],
            )
        if result.followup is not None:
            self.follow(result, command, caller, str(posted.get("channel")), str(ts))

    def follow(self, result: Result, command: str, caller: Caller, channel: str, thread_ts: str) -> None:
        """Progress (a rollout) as one thread reply, updated in place until it is done."""
        assert result.followup is not None
        progress_ts: str | None = None
        last_text = ""
        for step in result.followup():
            message = render_result(step, command, caller.user_id, self.core.settings.aia_max_inline_lines)
            if message.text == last_text:
                continue
            last_text = message.text
            if progress_ts is None:
                progress_ts = self.web.chat_postMessage(channel=channel, thread_ts=thread_ts, text=message.text,
                                                        blocks=message.blocks).get("ts")
                if result.resume_key:  # a stored operation: a restarted bot updates this same message
                    from handlers.cloud_operations import remember_progress

                    remember_progress(self.core, result.resume_key, channel, thread_ts, progress_ts)
            else:
                self.web.chat_update(channel=channel, ts=progress_ts, text=message.text, blocks=message.blocks)

    # -- the two-person rule ------------------------------------------------------
    def post_approval_card(self, outcome: Outcome, caller: Caller, response_url: str | None) -> None:
        assert outcome.approval is not None and self.core.approvals is not None
        view = outcome.approval
        text, blocks = render_card(view)
        try:
            posted = self.web.chat_postMessage(channel=self.core.settings.aia_alert_channel, text=text, blocks=blocks)
        except SlackApiError as exc:
            self.core.approvals.abandon(view.id, f"card could not be posted: {exc.response.get('error')}")
            self._ephemeral(SlackMessage(text=":warning: The approval card could not be posted in "
                                         f"{self.core.settings.aia_alert_channel}; nothing was requested."),
                            caller, response_url)
            return
        self.core.approvals.attach_card(view.id, str(posted.get("channel")), str(posted.get("ts")))
        self._ephemeral(SlackMessage(text=f":hourglass_flowing_sand: Approval requested (`{view.id}`): "
                                     f"{view.summary}. Another approver decides in "
                                     f"{self.core.settings.aia_alert_channel}."), caller, response_url)

    def handle_approval_button(self, body: dict[str, Any]) -> None:
        assert self.core.approvals is not None
        user = body.get("user") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        caller = Caller(user_id=str(user.get("id")), team_id=(body.get("team") or {}).get("id"), channel_id=channel)
        action = (body.get("actions") or [{}])[0]
        decision = str(action.get("action_id", "")).split(":", 1)[-1]
        request_id = str(action.get("value") or "")[:32]
        message_ts = (body.get("message") or {}).get("ts") or (body.get("container") or {}).get("message_ts")
        response_url = body.get("response_url")
        try:
            outcome = self.core.approvals.decide(request_id, decision, caller, message_ts)
        except ApprovalStoreUnavailable:
            self._ephemeral(SlackMessage(text=":warning: The bot's database is unreachable, so nothing was decided "
                                         "and nothing was run. Try again in a minute."), caller, response_url)
            return
        self._ephemeral(SlackMessage(text=("" if outcome.accepted else ":no_entry: ") + outcome.message),
                        caller, response_url)
        view = outcome.view
        if view is None or not outcome.card_changed or not view.channel_id or not view.message_ts:
            return
        text, blocks = render_card(view)
        self.web.chat_update(channel=view.channel_id, ts=view.message_ts, text=text, blocks=blocks)
        if outcome.executed is not None:
            requester = Caller(view.requester_id, caller.team_id, view.channel_id)
            self.post_result(outcome.executed, view.command, requester, None, thread_ts=view.message_ts,
                             channel_id=view.channel_id)
        elif view.status in (ApprovalStatus.STALE, ApprovalStatus.FAILED) and view.result:
            self.web.chat_postMessage(channel=view.channel_id, thread_ts=view.message_ts,
                                      text=f":warning: {view.result}")

    def _announce_break_glass(self, event: BreakGlassUsed) -> None:
        """Loud and public: everyone in the alerts channel sees that the rule was bypassed."""
        self.web.chat_postMessage(
            channel=self.core.settings.aia_alert_channel,
            text=(f":rotating_light: *BREAK-GLASS* by <@{event.actor}>: `/aia {event.procedure}` ran without "
                  f"a second person. Reason: {escape_mrkdwn(redact(event.reason[:300]))}. Marked in the audit log "
                  "for review."),
        )

    def refresh_cards(self, request_ids: list[str]) -> None:
        """After a sweep: show expiries and results of executions a restart left behind."""
        assert self.core.approvals is not None
        for request_id in request_ids:
            view = self.core.approvals.get(request_id)
            if view is None or not view.channel_id or not view.message_ts:
                continue
            text, blocks = render_card(view)
            self.web.chat_update(channel=view.channel_id, ts=view.message_ts, text=text, blocks=blocks)
            if view.status in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED, ApprovalStatus.STALE) and view.result:
                self.web.chat_postMessage(channel=view.channel_id, thread_ts=view.message_ts,
                                          text=f"{view.status}: {view.result}")

    def _ephemeral(self, message: SlackMessage, caller: Caller, response_url: str | None) -> None:
        if response_url:
            # replace_original=False: on a card, the answer must not replace the card itself.
            response = WebhookClient(response_url).send(
                text=message.text, blocks=message.blocks or None, response_type="ephemeral",
                replace_original=False,
            )
            if response.status_code == 200:
                return
            log.warning("response_url answered %s; falling back to chat.postEphemeral", response.status_code)
        if caller.channel_id:
            self.web.chat_postEphemeral(
                channel=caller.channel_id, user=caller.user_id, text=message.text, blocks=message.blocks or None
            )


class ApprovalSweeper:
    """Expires old requests and resumes approved ones a restart left behind, every few seconds."""

    name = "approval-sweeper"

    def __init__(self, frontend: SlackFrontend, interval: float = 5.0) -> None:
        self.frontend = frontend
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="approval-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        approvals = self.frontend.core.approvals
        while approvals is not None and not self._stop.is_set():
            try:
                changed = approvals.sweep()
                if changed:
                    self.frontend.refresh_cards(changed)
            except Exception:  # noqa: BLE001 - a failed sweep is retried on the next tick
                log.exception("approval sweep failed")
            self._stop.wait(self.interval)
