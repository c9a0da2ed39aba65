"""The escalation engine's front door: wiring of its parts, event handling and lookups.

The parts, each readable alone (docs/escalation.md "How the code is laid out"):

- policy.py: the YAML policy;                 - state.py: statuses and transitions;
- membership.py: replica heartbeats;           - claims.py: claiming steps and pages;
- timers.py: APScheduler buckets;              - delivery.py: sending pages, recording it;
- machine.py: start/fire/ack/snooze/...;       - views.py, pages.py: what people see;
- scheduler.py: the background service (claimer thread, poll, retries).

This class builds them, subscribes to the core's events and keeps the public names the
procedures, the Slack front end and the tests call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.errors import ConfigurationError, UserError
from bot.escalation.channels import EmailPager, SlackPager, SmtpConfig, WebhookPager
from bot.escalation.claims import ESCALATIONS, Claim, Claims, Step
from bot.escalation.delivery import Delivery, SentMarks, Thread
from bot.escalation.engines import HotEngines
from bot.escalation.lookups import Lookups
from bot.escalation.machine import Change, EscalationMachine, new_escalation_id
from bot.escalation.membership import Membership
from bot.escalation.page_claims import PageClaims
from bot.escalation.state import BOT_ACTOR, FIRING, OPEN, Status, utcnow
from bot.escalation.timeline import timeline_markdown
from bot.escalation.timers import StepTimers
from bot.escalation.views import EscalationRenderer, PlainRenderer, view_of
from bot.escalation_policy import EscalationPolicy
from bot.events import (
    AlertGroupChanged,
    AlertGroupOpened,
    AlertGroupResolved,
    BreakGlassUsed,
    EventBus,
)
from bot.mrkdwn import escape_mrkdwn
from bot.ports import EscalationView
from bot.settings import Settings
from bot.store.models import Escalation, EscalationDelivery, EscalationEvent
from bot.timeutil import assume_utc

__all__ = ["BOT_ACTOR", "FIRING", "OPEN", "Change", "Claim", "EscalationService", "build_escalation",
           "check_paging_settings", "new_escalation_id", "utcnow"]
log = logging.getLogger(__name__)
_DUE_STEPS = (
    select(ESCALATIONS.c.id, ESCALATIONS.c.version, ESCALATIONS.c.next_due_at)
    .where(ESCALATIONS.c.status.in_(FIRING), ESCALATIONS.c.next_due_at <= bindparam("until"))
    .order_by(ESCALATIONS.c.next_due_at)
    .limit(bindparam("limit"))
)


class EscalationService:
    def __init__(
        self,
        settings: Settings,
        policy: EscalationPolicy | None,
        sessions: sessionmaker[Session],
        web: WebClient | None,
        clock_fn: Callable[[], datetime] = utcnow,
        *,
        engine: Engine | None = None,
        renderer: EscalationRenderer | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.sessions = sessions
        self.clock = clock_fn
        engine = engine if engine is not None else sessions.kw["bind"]
        self.engine = engine
        self.slack = SlackPager(web)
        self.email = EmailPager(SmtpConfig.from_settings(settings))
        key = settings.aia_paging_routing_key
        self.webhook = WebhookPager(key.get_secret_value() if key else None)
        self._renderer: EscalationRenderer = renderer or PlainRenderer()
        self._pool = ThreadPoolExecutor(settings.aia_escalation_workers, thread_name_prefix="aia-page")
        self.timers = StepTimers(clock_fn)
        self.membership = Membership(engine, settings.aia_escalation_poll_seconds, clock_fn)
        self.engines = HotEngines(engine)
        self.claims = Claims(engine, self.engines.claims, self.membership, clock_fn,
                             settings.aia_escalation_lease_seconds, settings.aia_escalation_late_seconds)
        self.page_claims = PageClaims(engine, self.membership, clock_fn, settings.aia_escalation_lease_seconds)
        marks = SentMarks(self.engines.marks, self.membership.replica, clock_fn)
        self.delivery = Delivery(engine, marks, self.page_claims, self.slack, self.email, self.webhook,
                                 lambda: self._renderer, clock_fn, settings.aia_escalation_max_attempts,
                                 settings.aia_escalation_retry_seconds)
        self.lookups = Lookups(sessions, clock_fn)
        self.machine = EscalationMachine(engine, self.claims, self.delivery, clock_fn, self.timers.schedule,
                                         self.background)

    @property
    def renderer(self) -> EscalationRenderer:
        """Block Kit from the Slack entry points (the core may not import handlers/);
        plain text in the console and in tests."""
        return self._renderer

    @property
    def replica(self) -> str:
        return self.membership.replica

    @property
    def dead_after(self) -> float:
        return self.membership.dead_after

    # ------------------------------------------------------------------ wiring
    def subscribe(self, events: EventBus) -> None:
        events.subscribe(AlertGroupOpened, self.on_alert_group_opened)
        events.subscribe(AlertGroupResolved, self.on_alert_group_resolved)
        events.subscribe(AlertGroupChanged, self.on_alert_group_changed)
        events.subscribe(BreakGlassUsed, self.on_break_glass)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engines.dispose()

    def background(self, fn: Callable[..., Any], *args: Any) -> None:
        """Event subscribers must be quick: the work runs on the paging threads."""

        def guarded() -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a paging thread must survive anything
                log.exception("escalation work %s failed", getattr(fn, "__name__", fn))

        self._pool.submit(guarded)

    def require_policy(self) -> EscalationPolicy:
        if self.policy is None:
            raise UserError(
                "No escalation policy is configured.",
                "Add an `escalation:` section to the YAML file named by AIA_BOT_CONFIG (see docs/escalation.md).",
            )
        return self.policy

    # ------------------------------------------------------------------ events
    def on_alert_group_opened(self, event: AlertGroupOpened) -> None:
        policy = self.policy
        if policy is None or not policy.start_on.matches(event.severity, event.labels):
            return
        title = escape_mrkdwn(event.labels.get("alertname") or event.group_key)  # alert text: mrkdwn-safe
        self.background(
            self.start, policy.first_level, f"{title} ({event.severity})", "alert", BOT_ACTOR,
            event.channel_id, event.thread_ts, event.group_id, event.severity,
        )

    def on_alert_group_resolved(self, event: AlertGroupResolved) -> None:
        self.background(self._resolve_group, event.group_id)

    def on_alert_group_changed(self, event: AlertGroupChanged) -> None:
        self.background(self._group_changed, event.group_id, event.new_alert_count)

    def on_break_glass(self, event: BreakGlassUsed) -> None:
        policy = self.policy
        if policy is None:
            return
        title = f"Break-glass: {event.actor} ran {event.procedure} alone ({event.reason})"
        self.background(
            self.start, policy.break_glass, title[:300], "break_glass", event.actor,
            event.channel_id or self.settings.aia_alert_channel, event.thread_ts, None, "critical",
        )

    def _resolve_group(self, group_id: int) -> None:
        view = self.lookups.by_group(group_id)
        if view is None or view.status == Status.RESOLVED:
            return
        try:
            self.resolve(view.id, "alertmanager", "the alert group resolved")
        except UserError:
            pass  # resolved meanwhile by someone else

    def _group_changed(self, group_id: int, new_alerts: int) -> None:
        view = self.lookups.by_group(group_id)
        if view is None or view.status != Status.ACKNOWLEDGED or new_alerts <= 0:
            return
        self.machine.group_changed(view.id, self.policy, view.current_level, new_alerts)

    # ------------------------------------------------------------------ the state machine
    def start(self, level: int, title: str, source: str, actor: str, channel_id: str, thread_ts: str | None = None,
              alert_group_id: int | None = None, severity: str | None = None) -> EscalationView:
        policy = self.require_policy()
        if alert_group_id is not None and (existing := self.lookups.by_group(alert_group_id)) is not None:
            return existing  # a replayed event: the group already escalates
        try:
            return self.machine.start(policy, level, title, source, actor, channel_id, thread_ts, alert_group_id,
                                      severity)
        except IntegrityError:
            if alert_group_id is not None and (existing := self.lookups.by_group(alert_group_id)) is not None:
                return existing
            raise

    def fire(self, escalation_id: str, version: int) -> str:
        return self.machine.fire(escalation_id, version)

    def fire_many(self, steps: list[Step]) -> dict[Step, str]:
        return self.machine.fire_many(steps)

    def acknowledge(self, escalation_id: str, actor: str) -> Change:
        return self.machine.acknowledge(escalation_id, actor)

    def resolve(self, escalation_id: str, actor: str, why: str = "") -> Change:
        return self.machine.resolve(escalation_id, actor, why)

    def snooze(self, escalation_id: str, actor: str, seconds: float) -> Change:
        return self.machine.snooze(escalation_id, actor, seconds)

    def escalate_now(self, escalation_id: str, actor: str) -> Change:
        return self.machine.escalate_now(escalation_id, actor)

    # ------------------------------------------------------------------ pages
    def send(self, delivery_ids: list[int], token: str, recovering: bool = False) -> None:
        self.delivery.send(delivery_ids, token, recovering)

    def send_claimed(self, claim: Claim) -> None:
        self.delivery.send_claimed(claim)

    def note(self, thread: Thread, text: str, tone: str) -> None:
        self.delivery.note(thread, text, tone)

    def refresh_card(self, escalation_id: str) -> None:
        self.delivery.refresh_card(escalation_id)

    def retry_pages(self, limit: int = 200) -> int:
        """Send pages whose retry time came, or whose claim holder died (lease over, no heartbeat)."""
        claimed = self.page_claims.recover(limit)
        for delivery_id, token in claimed:
            self.delivery.send([delivery_id], token, recovering=True)
        return len(claimed)

    # ------------------------------------------------------------------ replicas and timers
    def heartbeat(self) -> None:
        self.membership.heartbeat()

    def live_replicas(self) -> list[str]:
        return self.membership.live_replicas()

    def due_steps(self, horizon_seconds: float, limit: int = 20000) -> list[tuple[str, int, datetime]]:
        """Steps due before now + ``horizon_seconds`` (negative: overdue by that much), oldest
        first. On the claimer's pool (no pre-ping) with one prepared statement: the takeover
        sweep asks four times a second on every replica, and usually finds nothing."""
        until = self.clock() + timedelta(seconds=horizon_seconds)
        with self.engines.claims.connect() as conn:
            rows = conn.execute(_DUE_STEPS, {"until": until, "limit": limit}).all()
        return [(r[0], r[1], assume_utc(r[2]) or until) for r in rows]

    # ------------------------------------------------------------------ lookups (lookups.py)
    def find(self, channel_id: str | None, ref: str | None) -> Escalation:
        return self.lookups.find(channel_id, ref)

    def open_escalations(self) -> list[EscalationView]:
        return self.lookups.open_escalations()

    def get(self, escalation_id: str) -> Escalation | None:
        return self.lookups.get(escalation_id)

    def view(self, row: Escalation) -> EscalationView:
        return view_of(row, self.clock)

    def timeline(self, escalation_id: str) -> tuple[str, int]:
        return timeline_markdown(self.sessions, escalation_id, self.clock())

    def events_of(self, escalation_id: str) -> list[EscalationEvent]:
        return self.lookups.events_of(escalation_id)

    def pages_of(self, escalation_id: str) -> list[EscalationDelivery]:
        return self.lookups.pages_of(escalation_id)


def check_paging_settings(settings: Settings, policy: EscalationPolicy | None) -> None:
    """A policy that emails or calls a webhook needs the matching settings: say so at start."""
    if policy is None:
        return
    if policy.uses_email() and not settings.smtp_host:
        raise ConfigurationError("SMTP_HOST is not set, but the escalation policy pages by email")
    if policy.uses_webhook() and settings.aia_paging_routing_key is None:
        raise ConfigurationError(
            "AIA_PAGING_ROUTING_KEY is not set, but the escalation policy pages a webhook (PagerDuty Events v2)"
        )


def build_escalation(settings: Settings, policy: EscalationPolicy | None, engine: Engine,
                     sessions: sessionmaker[Session], web: WebClient | None, events: EventBus,
                     clock: Callable[[], datetime] = utcnow,
                     renderer: EscalationRenderer | None = None) -> EscalationService:
    """Check the paging settings, construct the service, subscribe it to the core's events."""
    check_paging_settings(settings, policy)
    service = EscalationService(settings, policy, sessions, web, clock, engine=engine, renderer=renderer)
    service.subscribe(events)
    return service
