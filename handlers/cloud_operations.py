"""Resuming long Cloud SQL operations a stopped or crashed replica was following.

The follower in the core renews a lease on its row; when a process dies, the lease runs
out and this service (in every replica) claims the row and follows the same operation
again, updating the same progress message in the thread. One replica wins each claim.
"""

from __future__ import annotations

import logging
import threading

from bot.context import Caller
from bot.core import Core
from bot.procedures.database import resume_followup, stop_following
from bot.registry import ProcedureContext
from bot.store.cloud_operations import CloudOperation, CloudOperationStore
from handlers.render_blocks import render_result
from handlers.slack_app import SlackFrontend

log = logging.getLogger(__name__)


def remember_progress(core: Core, row_id: str, channel: str, thread_ts: str, progress_ts: str | None) -> None:
    try:
        CloudOperationStore(core.sessions).attach(row_id, channel, thread_ts, progress_ts)
    except Exception:  # noqa: BLE001 - following goes on; only a resume after a crash would post anew
        log.exception("could not record where operation %s is shown", row_id)


class CloudOperationResumer:
    name = "cloud-operation-resumer"

    def __init__(self, frontend: SlackFrontend, interval: float | None = None) -> None:
        self.frontend = frontend
        settings = frontend.core.settings
        self.interval = interval or max(1.0, min(15.0, settings.cloudsql_operation_lease_seconds / 4))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stop_following(self.frontend.core.sessions)  # followers on worker threads hand their operations back
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        core = self.frontend.core
        store = CloudOperationStore(core.sessions)
        while not self._stop.is_set():
            try:
                for row, token in store.claim_abandoned(core.settings.cloudsql_operation_lease_seconds):
                    log.info("resuming cloud operation %s (%s %s)", row.id, row.kind, row.operation)
                    self.frontend.executor.submit(self._follow, row, token)
            except Exception:  # noqa: BLE001 - retried on the next tick
                log.exception("looking for cloud operations to resume failed")
            self._stop.wait(self.interval)

    def _follow(self, row: CloudOperation, token: str) -> None:
        core = self.frontend.core
        ctx = ProcedureContext(core.settings, core.backends, core.registry, core.audit,
                               Caller(row.requested_by, None, row.channel_id), None)
        web = self.frontend.web
        channel = row.channel_id or core.settings.aia_alert_channel
        progress_ts = row.progress_ts
        last_text = ""
        try:
            for step in resume_followup(ctx, row, token):
                message = render_result(step, row.command, row.requested_by, core.settings.aia_max_inline_lines)
                if message.text == last_text:
                    continue
                last_text = message.text
                if progress_ts is None:
                    progress_ts = web.chat_postMessage(channel=channel, thread_ts=row.thread_ts, text=message.text,
                                                       blocks=message.blocks).get("ts")
                    if progress_ts:
                        remember_progress(core, row.id, channel, row.thread_ts or str(progress_ts), str(progress_ts))
                else:
                    web.chat_update(channel=channel, ts=progress_ts, text=message.text, blocks=message.blocks)
        except Exception:  # noqa: BLE001 - the lease runs out and the next tick (or replica) tries again
            log.exception("following cloud operation %s failed", row.id)
