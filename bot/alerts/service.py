"""Alert groups as Slack threads: ingest (webhook path) and the outbox kinds that post them.

Webhook path: validate, store the body in the inbox (one INSERT), answer. The inbox folder
(bot/alerts/inbox.py) applies bodies in batches: alerts and groups, one coalesced
"alert_group" outbox row per changed group, the events. Everything that talks to Slack,
Prometheus or Kubernetes runs later on outbox threads:

- ``alert_group``: post the parent message (first time) or chat.update it, rendered from
  the database at send time; after the first post, publish AlertGroupOpened once and
  queue the context task.
- ``alert_context`` (a task): gather value, graph, pods, events, logs and runbook buttons,
  render them and queue them as a thread reply.
- ``storm``: when many groups wait for their first post, one summary message says how
  many, and is updated until the storm is over.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.alerts.context import ContextGatherer
from bot.alerts.inbox import INBOX_WAITING, FoldRound, Inbox, InboxFolder
from bot.alerts.payload import AlertStatus, WebhookPayload
from bot.alerts.render import AlertRenderer, PlainRenderer
from bot.alerts.runbook import RunbookMap, live_deployment_reader
from bot.alerts.store import AlertStore, IngestResult
from bot.events import AlertGroupChanged, AlertGroupOpened, AlertGroupResolved, EventBus
from bot.outbox import Delivery, Outbox, OutboxState
from bot.results import Result, Status
from bot.settings import BotConfigFile, Settings
from bot.store.models import AlertGroup, OutboxChannel, OutboxMessage

if TYPE_CHECKING:
    from slack_sdk import WebClient
    from sqlalchemy import Engine

    from bot.context import Backends
    from bot.registry import Registry

log = logging.getLogger(__name__)

GROUP, CONTEXT, STORM = "alert_group", "alert_context", "storm"
STORM_PRIORITY = -1
CONTEXT_PRIORITY = 10  # + severity rank: tasks, after the parents they depend on
REPLY_PRIORITY = 20  # + severity rank: thread replies wait until every waiting parent is out


class AlertService:
    def __init__(
        self,
        settings: Settings,
        config: BotConfigFile,
        registry: Registry,
        sessions: sessionmaker[Session],
        backends: Backends,
        events: EventBus,
        web: WebClient | None,
        *,
        store: AlertStore | None = None,
        renderer: AlertRenderer | None = None,
        writer: Engine | None = None,
    ) -> None:
        """``store``: the composition root shares it with ``/aia alerts``. ``renderer``:
        Block Kit from the HTTP entry point (the core may not import handlers/), plain text
        otherwise. ``writer``: see :class:`bot.alerts.inbox.Inbox`."""
        self.settings = settings
        self.channel = settings.aia_alert_channel
        self.store = store if store is not None else AlertStore(sessions)
        self.sessions = sessions
        self.events = events
        self.runbook = RunbookMap(registry, config.alert_procedures, live_deployment_reader(
            lambda: (backends.kube.service(settings.aia_api_service).get("spec") or {}).get("selector") or {},
            settings.aia_deployment_blue, settings.aia_deployment_green))
        self.gatherer = ContextGatherer(settings, backends, self.runbook)
        self.renderer: AlertRenderer = renderer if renderer is not None else PlainRenderer()
        self.outbox = Outbox(
            sessions, web,
            post_interval=settings.aia_outbox_post_interval_seconds,
            poll_seconds=settings.aia_outbox_poll_seconds,
            max_attempts=settings.aia_outbox_max_attempts,
            senders=settings.aia_outbox_senders,
            on_event=events.publish,
            prefetch=_load_groups,
        )
        self.outbox.register(GROUP, _GroupComposer(self))
        self.outbox.register(CONTEXT, _ContextTask(self), task=True)
        self.outbox.register(STORM, _StormComposer(self))
        self.outbox.set_thread_resolver(_thread_of)
        self.inbox = Inbox(sessions, writer)
        INBOX_WAITING.set_function(self.inbox.waiting)
        self.folder = InboxFolder(self.fold_inbox, settings.aia_outbox_poll_seconds, on_stop=self.inbox.close)

    # -- the webhook path ----------------------------------------------------------
    def accept(self, payload: WebhookPayload, body: bytes) -> None:
        """Store the validated body (one INSERT) and wake the folder. Raises on database errors."""
        self.inbox.add(payload.key_hash, body)
        self.folder.poke()

    # -- folding -----------------------------------------------------------------------
    def fold_inbox(self) -> FoldRound:
        """Apply a batch of stored webhooks (the folder thread calls this)."""
        round_ = self.inbox.fold(self.store.apply, self._enqueue)
        self._announce(round_.results)
        return round_

    def receive(self, payload: WebhookPayload) -> IngestResult:
        """Apply one payload now, in its own transaction, as the folder would."""
        result = self.store.ingest(payload, after=lambda session, one: self._enqueue(session, [one]))
        self.inbox.forget(payload.key_hash)
        self._announce([result])
        return result

    def _enqueue(self, session: Session, results: list[IngestResult]) -> None:
        # One row per changed group and batch, at the group's latest severity.
        ranks: dict[int, int] = {}
        opened = False
        for result in results:
            if result.changed and result.group_id is not None:
                ranks[result.group_id] = result.severity_rank
                opened = opened or result.opened
        Outbox.enqueue_coalesced(session, GROUP, self.channel,
                                 [(rank, group_id, f"group:{group_id}") for group_id, rank in ranks.items()])
        if opened and waiting_groups(session, self.channel)[0] >= self.settings.aia_alert_storm_threshold:
            Outbox.enqueue(session, STORM, self.channel, priority=STORM_PRIORITY, coalesce_key=f"storm:{self.channel}")

    def _announce(self, results: list[IngestResult]) -> None:
        """After commit: events for threads that exist, and a sender woken for the new rows."""
        for result in results:
            if result.group_id is not None and result.thread_known:
                if result.resolved:
                    self.events.publish(AlertGroupResolved(group_id=result.group_id))
                elif result.new_alerts:
                    self.events.publish(AlertGroupChanged(group_id=result.group_id,
                                                          new_alert_count=result.new_alerts))
        if any(result.changed for result in results):
            self.outbox.poke()



def _thread_of(session: Session, group_id: int) -> tuple[str, str] | None:
    group = session.get(AlertGroup, group_id)
    if group is None or not group.thread_ts or not group.channel_id:
        return None
    return group.channel_id, group.thread_ts


def _load_groups(session: Session, group_ids: list[int]) -> list[AlertGroup]:
    """One query puts the candidates' groups in the session, so ready() reads no more rows
    (as long as the caller holds the list: the identity map alone would let them go)."""
    if not group_ids:
        return []
    return list(session.scalars(select(AlertGroup).where(AlertGroup.id.in_(sorted(set(group_ids))))).all())


def waiting_groups(session: Session, channel: str) -> tuple[int, int]:
    """(groups waiting for their first post, of which critical) in a channel."""
    rows = session.execute(
        select(AlertGroup.severity_rank, func.count())
        .select_from(OutboxMessage)
        .join(AlertGroup, AlertGroup.id == OutboxMessage.group_id)
        .where(OutboxMessage.kind == GROUP, OutboxMessage.channel == channel,
               OutboxMessage.state.in_((OutboxState.PENDING, OutboxState.SENDING)), AlertGroup.thread_ts.is_(None))
        .group_by(AlertGroup.severity_rank)
    ).all()
    return sum(n for _, n in rows), sum(n for rank, n in rows if rank == 0)


class _GroupComposer:
    def __init__(self, service: AlertService) -> None:
        self.service = service

    def ready(self, session: Session, row: OutboxMessage) -> bool | None:
        group = session.get(AlertGroup, row.group_id)
        return None if group is None else group.thread_ts is None

    def compose(self, row: OutboxMessage) -> Delivery | None:
        assert row.group_id is not None
        with self.service.sessions() as session:
            view = self.service.store.view(session, row.group_id)
        if view is None:
            return None
        message = self.service.renderer.parent(view)
        if view.thread_ts and view.channel_id:
            return Delivery("update", view.channel_id, message, ts=view.thread_ts)
        return Delivery("post", row.channel, message)

    def sent(self, session: Session, row: OutboxMessage, delivery: Delivery, channel_id: str,
             ts: str | None) -> list[object]:
        if delivery.action != "post" or ts is None:
            return []
        group = session.get(AlertGroup, row.group_id, with_for_update=True)
        if group is None:
            return []
        if group.thread_ts is not None and group.thread_ts != ts:
            # Another replica posted it first (an expired lease): keep one thread.
            self._delete(channel_id, ts)
            return []
        group.channel_id, group.thread_ts = channel_id, ts
        group.permalink = self._permalink(channel_id, ts)
        events: list[object] = []
        if not group.opened_published:
            group.opened_published = True
            labels = {**_json(group.group_labels), **_json(group.common_labels)}
            events.append(AlertGroupOpened(group_id=group.id, group_key=group.group_key, severity=group.severity,
                                           labels=labels, channel_id=channel_id, thread_ts=ts))
            if group.status == AlertStatus.RESOLVED:
                events.append(AlertGroupResolved(group_id=group.id))
        Outbox.enqueue(session, CONTEXT, row.channel, priority=CONTEXT_PRIORITY + group.severity_rank,
                       group_id=group.id, coalesce_key=f"context:{group.id}")
        pacing = session.get(OutboxChannel, row.channel)
        if pacing is not None and pacing.storm_ts is not None:
            pacing.storm_posted += 1
            Outbox.enqueue(session, STORM, row.channel, priority=STORM_PRIORITY, coalesce_key=f"storm:{row.channel}")
        return events

    def _permalink(self, channel_id: str, ts: str) -> str | None:
        web = self.service.outbox.web
        try:
            return str(web.chat_getPermalink(channel=channel_id, message_ts=ts).get("permalink")) if web else None
        except Exception:  # noqa: BLE001 - a missing link is cosmetic
            return None

    def _delete(self, channel_id: str, ts: str) -> None:
        web = self.service.outbox.web
        try:
            if web is not None:
                web.chat_delete(channel=channel_id, ts=ts)
        except Exception:  # noqa: BLE001 - a duplicate parent is untidy, not wrong
            log.warning("could not delete a duplicate alert parent message %s", ts)


class _ContextTask:
    def __init__(self, service: AlertService) -> None:
        self.service = service

    def ready(self, session: Session, row: OutboxMessage) -> bool | None:
        assert row.group_id is not None
        return None if _thread_of(session, row.group_id) is None else False

    def compose(self, row: OutboxMessage) -> Delivery | None:
        service = self.service
        assert row.group_id is not None
        with service.sessions() as session:
            view = service.store.view(session, row.group_id)
        if view is None or view.thread_ts is None or view.channel_id is None:
            return None
        if service.settings.aia_alert_context:
            result = service.gatherer.gather(view)
        else:
            result = Result(title=f"Runbook steps · {view.title}", status=Status.INFO)
            result.actions = service.runbook.actions(view.alertnames, view.common_labels)
        message = service.renderer.context(result, view)
        with service.sessions() as session, session.begin():
            group = session.get(AlertGroup, row.group_id)
            priority = REPLY_PRIORITY + (group.severity_rank if group else 5)
            service.outbox.enqueue_message(session, row.channel, message, priority=priority,
                                           group_id=row.group_id, thread=(view.channel_id, view.thread_ts))
        service.outbox.poke()
        return None

    def sent(self, session: Session, row: OutboxMessage, delivery: Delivery, channel_id: str,
             ts: str | None) -> list[object]:
        return []


class _StormComposer:
    def __init__(self, service: AlertService) -> None:
        self.service = service

    def ready(self, session: Session, row: OutboxMessage) -> bool | None:
        pacing = session.get(OutboxChannel, row.channel)
        return pacing is None or pacing.storm_ts is None

    def compose(self, row: OutboxMessage) -> Delivery | None:
        with self.service.sessions() as session:
            waiting, critical = waiting_groups(session, row.channel)
            pacing = session.get(OutboxChannel, row.channel)
            storm_ts = pacing.storm_ts if pacing else None
            posted = pacing.storm_posted if pacing else 0
            started = pacing.storm_started_at if pacing else None
        if storm_ts is None:
            if waiting < self.service.settings.aia_alert_storm_threshold:
                return None  # the storm passed before its summary could go out
            return Delivery("post", row.channel, self.service.renderer.storm(waiting, critical, 0, time.time()))
        channel_id, _, ts = storm_ts.partition("/")
        return Delivery("update", channel_id, self.service.renderer.storm(waiting, critical, posted, started), ts=ts)

    def sent(self, session: Session, row: OutboxMessage, delivery: Delivery, channel_id: str,
             ts: str | None) -> list[object]:
        pacing = session.get(OutboxChannel, row.channel, with_for_update=True)
        if pacing is None:
            return []
        if delivery.action == "post":
            pacing.storm_ts, pacing.storm_started_at, pacing.storm_posted = f"{channel_id}/{ts}", time.time(), 0
        elif waiting_groups(session, row.channel)[0] == 0:
            pacing.storm_ts, pacing.storm_started_at, pacing.storm_posted = None, None, 0
        return []


def _json(text: str) -> dict[str, str]:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
