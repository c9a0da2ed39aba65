"""Escalations: start, fire steps, acknowledge, snooze, resolve, escalate now.

Every state change is a compare-and-set on the escalation row (``version``):
- firing a step updates the row only if it still has the version the timer was
  scheduled for and the step is due; the same transaction inserts the step's
  pages (unique keys) already claimed with a token and a lease;
- acknowledging, snoozing and resolving are conditional updates too, so when an
  acknowledgement races a timer exactly one commits first, and the loser sees it.
Pages are sent after the commit by the claim holder; a replica that dies while
holding pages leaves them leased, and another sends them when the lease ends.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from sqlalchemy import delete, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.errors import ConfigurationError, UserError
from bot.escalation.channels import (
    EmailPager,
    PageFailed,
    SlackMessageOut,
    SlackPager,
    SmtpConfig,
    WebhookPager,
)
from bot.escalation.policy import EscalationPolicy, format_duration
from bot.escalation.views import (
    EscalationRenderer,
    EscalationView,
    LevelView,
    PlainRenderer,
    clock,
    mention,
)
from bot.events import (
    AlertGroupChanged,
    AlertGroupOpened,
    AlertGroupResolved,
    BreakGlassUsed,
    EventBus,
)
from bot.mrkdwn import escape_mrkdwn
from bot.settings import Settings
from bot.store.models import Escalation, EscalationDelivery, EscalationEvent, EscalationReplica

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger(__name__)

FIRING = ("active", "snoozed")
OPEN = ("active", "snoozed", "acknowledged")
BOT_ACTOR = "aia-bot"
_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
# Pages are sent in this order within a step, so a slow SMTP server never delays Slack.
_KIND_ORDER = {"slack_thread": 0, "slack_dm": 1, "webhook": 2, "email": 3}


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(at: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def new_escalation_id() -> str:
    return "E" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


@dataclass(frozen=True)
class Claim:
    escalation_id: str
    token: str
    delivery_ids: list[int]
    version: int
    next_due_at: datetime | None
    # Loaded in the claiming transaction, so sending needs no further reads.
    row: Escalation | None = None
    pages: tuple[EscalationDelivery, ...] = ()
    # Monotonic time until which nobody can have taken these pages over (lease end); the
    # sender re-checks its claim only after that.
    lease_end: float = 0.0


@dataclass
class _PreparedClaim:
    """A claim whose pages are added to the session but not flushed yet."""

    row: Escalation
    token: str
    pages: list[EscalationDelivery]
    version: int
    next_due_at: datetime | None
    lease_end: float

    def done(self) -> Claim:
        return Claim(self.row.id, self.token, [p.id for p in self.pages], self.version, self.next_due_at,
                     self.row, tuple(self.pages), self.lease_end)


@dataclass(frozen=True)
class Change:
    """What a person's action did, for the procedure's answer."""

    view: EscalationView
    text: str


class EscalationService:
    def __init__(
        self,
        settings: Settings,
        policy: EscalationPolicy | None,
        sessions: sessionmaker[Session],
        web: WebClient | None,
        clock_fn: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.sessions = sessions
        self.clock = clock_fn
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self.slack = SlackPager(web)
        self.email = EmailPager(_smtp_config(settings))
        key = settings.aia_paging_routing_key
        self.webhook = WebhookPager(key.get_secret_value() if key else None)
        self.renderer: EscalationRenderer = PlainRenderer()
        # Set by the scheduler: "run fire(id, version) at this time in this process".
        self.schedule_hook: Callable[[str, int, datetime], None] | None = None
        self._pool = ThreadPoolExecutor(settings.aia_escalation_workers, thread_name_prefix="aia-page")
        # Monotonic time of the last heartbeat this replica committed (-inf: none yet).
        self._beat_at = float("-inf")

    # ------------------------------------------------------------------ wiring
    def subscribe(self, events: EventBus) -> None:
        events.subscribe(AlertGroupOpened, self.on_alert_group_opened)
        events.subscribe(AlertGroupResolved, self.on_alert_group_resolved)
        events.subscribe(AlertGroupChanged, self.on_alert_group_changed)
        events.subscribe(BreakGlassUsed, self.on_break_glass)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

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

    # ------------------------------------------------------------------ start
    def start(
        self,
        level: int,
        title: str,
        source: str,
        actor: str,
        channel_id: str,
        thread_ts: str | None = None,
        alert_group_id: int | None = None,
        severity: str | None = None,
    ) -> EscalationView:
        """Create the escalation and its card; the first page goes out on a paging thread."""
        policy = self.require_policy()
        if alert_group_id is not None:
            existing = self._by_group(alert_group_id)
            if existing is not None:
                return existing  # a replayed event: the group already escalates
        now = self.clock()
        row = Escalation(
            id=self._free_id(), source=source, title=title[:500], severity=severity,
            alert_group_id=alert_group_id, channel_id=channel_id, thread_ts=thread_ts,
            policy=policy.model_dump_json(), status="active", version=1, step_seq=0, current_level=0,
            cycle=0, next_level=level, next_reason="start", next_due_at=now, created_by=actor, created_at=now,
        )
        # The card goes up first so the row (and every replica's timer) knows its thread.
        card_ts = self._post_card(row, thread_ts)
        row.card_ts = card_ts
        row.thread_ts = thread_ts or card_ts
        try:
            with self.sessions.begin() as session:
                session.add(row)
                session.add(self._event(row.id, "started", actor, level, f"{source}: {title[:300]}"))
        except IntegrityError:
            if card_ts:
                self.slack.delete(channel_id, card_ts)
            if alert_group_id is not None and (existing := self._by_group(alert_group_id)) is not None:
                return existing
            raise
        self.background(self.fire, row.id, 1)
        return self.view(row)

    def _free_id(self) -> str:
        with self.sessions() as session:
            while True:
                candidate = new_escalation_id()
                if session.get(Escalation, candidate) is None:
                    return candidate

    def _post_card(self, row: Escalation, thread_ts: str | None) -> str | None:
        try:
            return self.slack.post(row.channel_id, self.renderer.card(self.view(row)), thread_ts=thread_ts)
        except PageFailed as exc:
            log.warning("escalation %s: could not post its card: %s", row.id, exc.message)
            return None

    # ------------------------------------------------------------------ timers
    def fire(self, escalation_id: str, version: int) -> str:
        """Page the due step if this version is still current, and send it on this thread.

        Returns ``fired``, ``stale`` (someone else fired it, or it was acknowledged,
        snoozed, resolved) or ``later`` (not due yet, locked by another replica's claim at
        this moment, or the previous step's thread message is still being posted: tried
        again shortly).
        """
        outcome, claim = self._claim_due_many([(escalation_id, version)])[(escalation_id, version)]
        if outcome == "later":
            self._schedule(escalation_id, version, self.clock() + timedelta(seconds=0.5))
        if claim is None:
            return outcome
        self._send_and_schedule(claim)
        return "fired"

    def fire_many(self, steps: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """Timer entry point: claim every due step of the batch in one transaction.

        Under load the timers of many steps come due together; one transaction (one commit)
        for all of them, instead of one per step, is what lets a replica keep up. Each claim
        is then sent on the paging threads, so a slow Slack or webhook delays no other claim.
        """
        claimed = self._claim_due_many(steps)
        retry_at = self.clock() + timedelta(seconds=0.5)
        outcomes: dict[tuple[str, int], str] = {}
        for (escalation_id, version), (outcome, claim) in claimed.items():
            outcomes[(escalation_id, version)] = outcome
            if outcome == "later":
                self._schedule(escalation_id, version, retry_at)
            if claim is not None:
                self.background(self._send_and_schedule, claim)
        return outcomes

    def _schedule(self, escalation_id: str, version: int, at: datetime) -> None:
        if self.schedule_hook is not None:
            self.schedule_hook(escalation_id, version, at)

    def _claim_due_many(self, steps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, Claim | None]]:
        now = self.clock()
        results: dict[tuple[str, int], tuple[str, Claim | None]] = {}
        wanted = sorted(set(steps))
        if not wanted:
            return results
        with self.sessions.begin() as session:
            # A plain read sorts out the stale timers (backups of steps already fired, old
            # versions) without locking their rows.
            current = {
                r.id: r for r in session.execute(
                    select(Escalation.id, Escalation.version, Escalation.status, Escalation.next_level,
                           Escalation.next_due_at, Escalation.step_seq)
                    .where(Escalation.id.in_({esc_id for esc_id, _ in wanted}))
                ).all()
            }
            candidates: list[tuple[str, int]] = []
            for esc_id, version in wanted:
                row = current.get(esc_id)
                due = aware(row.next_due_at) if row is not None else None
                if row is None or row.version != version or row.status not in FIRING or row.next_level is None or due is None:
                    results[(esc_id, version)] = ("stale", None)
                elif due > now:
                    results[(esc_id, version)] = ("later", None)
                else:
                    candidates.append((esc_id, version))
            busy = self._threads_busy(
                session, [esc_id for esc_id, _ in candidates if current[esc_id].step_seq > 0], now
            )
            for step in [c for c in candidates if c[0] in busy]:
                results[step] = ("later", None)
            candidates = [c for c in candidates if c[0] not in busy]
            if not candidates:
                return results
            # Lock the rows still at the version the timers were set for. SKIP LOCKED: a row
            # another replica is claiming (or a person acknowledging) right now is tried again
            # shortly, and then found fired; nobody waits on anybody.
            locked = session.execute(
                select(Escalation)
                .where(tuple_(Escalation.id, Escalation.version).in_(candidates),
                       Escalation.status.in_(FIRING), Escalation.next_due_at <= now)
                .order_by(Escalation.id)
                .with_for_update(skip_locked=True)
            ).scalars().all()
            by_id = {row.id: row for row in locked}
            prepared: list[tuple[tuple[str, int], _PreparedClaim]] = []
            for step in candidates:
                held = by_id.get(step[0])
                if held is None:
                    results[step] = ("later", None)
                    continue
                due = aware(held.next_due_at)
                assert due is not None and held.next_level is not None
                claim = self._claim_rows(session, held, held.next_level, due, now, held.next_reason or "timer",
                                         BOT_ACTOR, FIRING)
                if claim is None:
                    results[step] = ("stale", None)
                else:
                    prepared.append((step, claim))
            # One flush inserts every claimed step's pages and events (batched statements).
            session.flush()
            for step, claim in prepared:
                results[step] = ("fired", claim.done())
        return results

    def _threads_busy(self, session: Session, escalation_ids: list[str], now: datetime) -> set[str]:
        """Escalations whose previous step's thread message is still being posted.

        Steps that fire back to back (catching up after a restart) keep their order in
        the thread: the next waits until the previous step's thread message is out.
        """
        if not escalation_ids:
            return set()
        return set(session.execute(
            select(EscalationDelivery.escalation_id).where(
                EscalationDelivery.escalation_id.in_(escalation_ids),
                EscalationDelivery.kind == "slack_thread",
                EscalationDelivery.status == "sending",
                EscalationDelivery.claimed_until > now,
            ).distinct()
        ).scalars())

    def _claim(
        self, session: Session, row: Escalation, level: int, due: datetime, now: datetime,
        reason: str, actor: str, allowed: tuple[str, ...],
    ) -> Claim | None:
        prepared = self._claim_rows(session, row, level, due, now, reason, actor, allowed)
        if prepared is None:
            return None
        session.flush()
        return prepared.done()

    def _claim_rows(
        self, session: Session, row: Escalation, level: int, due: datetime, now: datetime,
        reason: str, actor: str, allowed: tuple[str, ...],
    ) -> _PreparedClaim | None:
        """Compare-and-set the row to "level paged"; add the step's pages, claimed by us.

        The pages get their ids at the caller's flush, so a batch of claims inserts in one go.
        """
        policy = _policy(row.policy)
        level = max(1, min(level, len(policy.levels)))
        next_level, next_cycle, next_due = _plan_after(policy, level, row.cycle, due)
        expected = row.version
        result = session.execute(
            update(Escalation)
            .where(Escalation.id == row.id, Escalation.version == expected, Escalation.status.in_(allowed))
            .values(
                version=expected + 1, step_seq=row.step_seq + 1, current_level=level, cycle=next_cycle,
                next_level=next_level, next_reason="timer" if next_level else None, next_due_at=next_due,
                status="active", snoozed_until=None, fired_by=self.replica,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        late = max(0.0, (now - due).total_seconds())
        seq = row.step_seq + 1
        token = secrets.token_hex(8)
        pages = self._step_pages(row, policy, level, seq, reason, actor, late, next_level, next_due, due, now, token)
        session.add_all(pages)
        detail = _paged_detail(policy, level, reason)
        session.add(self._event(row.id, "paged", actor, level, detail, late if late >= self._late_after() else None))
        lease_end = time.monotonic() + self.settings.aia_escalation_lease_seconds
        return _PreparedClaim(row, token, pages, expected + 1, next_due, lease_end)

    def _late_after(self) -> float:
        return self.settings.aia_escalation_late_seconds

    def _step_pages(
        self, row: Escalation, policy: EscalationPolicy, level: int, seq: int, reason: str, actor: str,
        late: float, next_level: int | None, next_due: datetime | None, due: datetime, now: datetime, token: str,
    ) -> list[EscalationDelivery]:
        spec = policy.level(level)
        targets = [mention(p) for p in spec.notify]
        if spec.email:
            targets.append("email " + ", ".join(spec.email))
        if spec.webhook:
            targets.append("phone line (webhook)")
        why = {
            "start": "",
            "timer": f"nobody acknowledged level {level - 1} in time" if level > 1 else "the chain starts again",
            "resume": "the snooze is over",
            "new_alerts": "new alerts joined the acknowledged group",
            "escalate_now": f"{mention(actor)} escalated now",
        }.get(reason, "")
        text = f":rotating_light: *Paging level {level} · {spec.name}*: {' '.join(targets)}"
        if why:
            text += f"\n_{why}_"
        if late >= self._late_after():
            text += f"\n:alarm_clock: This page is *{format_duration(late)} late*: it was due at {clock(due)} and no replica was running then."
        if next_level and next_due:
            text += f"\nNext: level {next_level} {policy.level(next_level).name} at {clock(next_due)} unless acknowledged."
        else:
            text += "\nThis is the last page of the chain: nobody else will be paged."
        base = {"level": level, "level_name": spec.name, "title": row.title, "reason": reason,
                "late": round(late, 3), "seq": seq, "severity": row.severity or "critical"}
        lease = now + timedelta(seconds=self.settings.aia_escalation_lease_seconds)

        def page(kind: str, key: str, target: str, payload: dict[str, Any]) -> EscalationDelivery:
            return EscalationDelivery(
                escalation_id=row.id, key=f"s{seq}:{key}", step_seq=seq, level=level, kind=kind, target=target,
                payload=json.dumps({**base, **payload}), status="sending", attempts=0, next_attempt_at=now,
                claim_token=token, claimed_until=lease, created_at=now, due_at=due, claimed_by=self.replica,
            )

        pages = [page("slack_thread", "thread", row.channel_id, {"text": text})]
        pages += [page("slack_dm", f"dm:{p}", p, {}) for p in spec.notify]
        if spec.webhook:
            pages.append(page("webhook", "webhook", spec.webhook, {"action": "trigger"}))
        pages += [page("email", f"email:{a}", a, {}) for a in spec.email]
        return pages

    # ------------------------------------------------------------------ sending
    def send(self, delivery_ids: list[int], token: str, recovering: bool = False) -> None:
        """Send claimed pages. ``recovering``: a retry, or the previous holder died mid-way."""
        for delivery_id in delivery_ids:
            try:
                self._send_one(delivery_id, token, recovering)
            except Exception:  # noqa: BLE001 - one broken page must not stop the others
                log.exception("escalation page %s failed unexpectedly", delivery_id)

    def send_claimed(self, claim: Claim) -> None:
        if claim.row is None:
            self.send(claim.delivery_ids, claim.token)
            return
        # Slack and webhook pages first, recorded together in one transaction; emails
        # last, each on its own, so a slow SMTP server delays nothing else.
        sent: list[int] = []
        ids = [d.id for d in claim.pages]
        mine = set(ids) if self._surely_still_mine(claim) else self._still_mine(ids, claim.token)
        for delivery in [d for d in claim.pages if d.kind != "email" and d.id in mine]:
            try:
                if self._attempt(claim.row, delivery, claim.token, recovering=False):
                    sent.append(delivery.id)
            except Exception:  # noqa: BLE001 - one broken page must not stop the others
                log.exception("escalation page %s failed unexpectedly", delivery.id)
        self._mark_sent(sent, claim.token)
        for delivery in [d for d in claim.pages if d.kind == "email" and d.id in mine]:
            try:
                self._send_loaded(claim.row, delivery, claim.token, recovering=False)
            except Exception:  # noqa: BLE001 - as above
                log.exception("escalation page %s failed unexpectedly", delivery.id)

    def _attempt(self, row: Escalation, delivery: EscalationDelivery, token: str, recovering: bool) -> bool:
        """Send one page; on failure record it (retry or give up) and return False."""
        try:
            self._deliver(row, delivery, json.loads(delivery.payload or "{}"), recovering)
        except PageFailed as exc:
            self._failed(row, delivery, token, exc)
            return False
        return True

    def _mark_sent(self, delivery_ids: list[int], token: str, attempts: int = 1) -> None:
        if not delivery_ids:
            return
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Losing this mark in a database crash only means a re-send, which the
                # Slack check and the webhook dedup key absorb: not worth an fsync per page.
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            session.execute(
                update(EscalationDelivery)
                .where(EscalationDelivery.id.in_(delivery_ids), EscalationDelivery.claim_token == token)
                .values(status="sent", sent_at=self.clock(), sent_by=self.replica, attempts=attempts,
                        claim_token=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )

    def _send_one(self, delivery_id: int, token: str, recovering: bool) -> None:
        with self.sessions() as session:
            delivery = session.get(EscalationDelivery, delivery_id)
            row = session.get(Escalation, delivery.escalation_id) if delivery else None
        if delivery is None or row is None or delivery.claim_token != token:
            return
        self._send_loaded(row, delivery, token, recovering)

    def _surely_still_mine(self, claim: Claim) -> bool:
        """Whether no other replica can have taken this claim over yet, without asking the database.

        Others take pages over when the lease ends or when this replica's heartbeat is older
        than ``dead_after``; a second of margin covers clock differences between nodes.
        """
        now = time.monotonic()
        return now < claim.lease_end - 1.0 and now < self._beat_at + self.dead_after - 1.0

    def _still_mine(self, delivery_ids: list[int], token: str) -> set[int]:
        """Fencing: which of these pages this claim still holds. A replica taken for dead
        (too slow to beat) finds its pages taken over and leaves them to the new holder."""
        if not delivery_ids:
            return set()
        with self.sessions() as session:
            return set(session.execute(
                select(EscalationDelivery.id).where(EscalationDelivery.id.in_(delivery_ids),
                                                    EscalationDelivery.claim_token == token)
            ).scalars())

    def _send_loaded(self, row: Escalation, delivery: EscalationDelivery, token: str, recovering: bool) -> None:
        if delivery.kind == "email" and not self._still_mine([delivery.id], token):
            return
        if not self._attempt(row, delivery, token, recovering):
            return
        self._mark_sent([delivery.id], token, delivery.attempts + 1)
        if delivery.attempts > 0 and delivery.kind in ("email", "webhook"):
            self.note(row, f":white_check_mark: {_channel_label(delivery)} to {_target_label(delivery)} "
                           f"went out on attempt {delivery.attempts + 1}.", "ok")

    def _deliver(self, row: Escalation, delivery: EscalationDelivery, payload: dict[str, Any], recovering: bool) -> None:
        kind = delivery.kind
        page_key = f"{row.id}/{delivery.key}"
        if kind == "slack_thread":
            if recovering and self.slack.already_posted(row.channel_id, page_key, row.thread_ts):
                return
            self.slack.post(row.channel_id, self.renderer.note(payload["text"], "critical"), thread_ts=row.thread_ts,
                            page_key=page_key)
        elif kind == "slack_dm":
            text = (f":rotating_light: You are paged (level {payload['level']} {payload['level_name']}) "
                    f"for *{row.title}*. Escalation `{row.id}`: acknowledge in {self._thread_link(row)}.")
            for user in self.slack.members(delivery.target):
                self.slack.direct_message(user, SlackMessageOut(text=text), f"{page_key}/{user}", recovering)
        elif kind == "email":
            self.email.send(
                delivery.target,
                f"[AIA page] level {payload['level']} {payload['level_name']}: {row.title}"[:200],
                _email_body(row, payload),
                {"X-AIA-Escalation": row.id, "X-AIA-Level": str(payload["level"]),
                 "X-AIA-Step": str(payload["seq"])},
                message_id=f"{row.id}.{delivery.key.replace(':', '.').replace('@', '.')}",
            )
        elif kind == "webhook":
            action = payload.get("action", "trigger")
            self.webhook.send(
                delivery.target, action, f"aia-escalation-{row.id}",
                summary=f"[AIA] {row.title}", severity=str(payload.get("severity") or "critical"),
                details={"escalation": row.id, "level": payload.get("level"), "level_name": payload.get("level_name"),
                         "step": payload.get("seq"), "channel": row.channel_id},
            )
        else:
            raise PageFailed(f"unknown page kind {kind}", retry=False)

    def _thread_link(self, row: Escalation) -> str:
        return f"<#{row.channel_id}>"

    def _failed(self, row: Escalation, delivery: EscalationDelivery, token: str, exc: PageFailed) -> None:
        attempts = delivery.attempts + 1
        retry = exc.retry and attempts < self.settings.aia_escalation_max_attempts and row.status != "resolved"
        delay = self.settings.aia_escalation_retry_seconds * (2 ** (attempts - 1))
        now = self.clock()
        with self.sessions.begin() as session:
            session.execute(
                update(EscalationDelivery)
                .where(EscalationDelivery.id == delivery.id, EscalationDelivery.claim_token == token)
                .values(status="pending" if retry else "failed", attempts=attempts, last_error=exc.message[:500],
                        next_attempt_at=now + timedelta(seconds=delay), claim_token=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
            session.add(self._event(row.id, "page_failed", BOT_ACTOR, delivery.level,
                                    f"{_channel_label(delivery)} to {_target_label(delivery)}: {exc.message} (attempt {attempts})"))
        log.warning("escalation %s: %s to %s failed (attempt %d): %s", row.id, delivery.kind,
                    _target_label(delivery), attempts, exc.message)
        if delivery.kind == "slack_thread":
            return  # nowhere to say it; the retry posts the page itself
        if retry and attempts == 1:
            other = "Slack paging goes on" if delivery.kind != "slack_dm" else "the thread mention went out"
            self.note(row, f":warning: {_channel_label(delivery)} to {_target_label(delivery)} failed: {exc.message}. "
                           f"Retrying in {format_duration(delay)}; {other}.", "warning")
        elif not retry:
            self.note(row, f":x: {_channel_label(delivery)} to {_target_label(delivery)} failed for good after "
                           f"{attempts} attempt{'s' if attempts > 1 else ''}: {exc.message}.", "warning")

    def note(self, row: Escalation, text: str, tone: str) -> None:
        """A best-effort thread message (the database already holds the fact)."""
        try:
            self.slack.post(row.channel_id, self.renderer.note(text, tone), thread_ts=row.thread_ts)
        except PageFailed as exc:
            log.warning("escalation %s: thread note not posted: %s", row.id, exc.message)

    def refresh_card(self, escalation_id: str) -> None:
        with self.sessions() as session:
            row = session.get(Escalation, escalation_id)
        if row is None or not row.card_ts:
            return
        try:
            self.slack.update(row.channel_id, row.card_ts, self.renderer.card(self.view(row)))
        except PageFailed as exc:
            log.warning("escalation %s: card not updated: %s", row.id, exc.message)

    # ------------------------------------------------------------------ sweeps (every replica)
    def due_steps(self, horizon_seconds: float) -> list[tuple[str, int, datetime]]:
        until = self.clock() + timedelta(seconds=horizon_seconds)
        with self.sessions() as session:
            rows = session.execute(
                select(Escalation.id, Escalation.version, Escalation.next_due_at)
                .where(Escalation.status.in_(FIRING), Escalation.next_due_at <= until)
                .order_by(Escalation.next_due_at)
                .limit(20000)
            ).all()
        return [(r[0], r[1], aware(r[2]) or until) for r in rows]

    def live_replicas(self) -> list[str]:
        """Replicas that beat recently, sorted: the poll spreads first attempts over them."""
        since = self.clock() - timedelta(seconds=self.dead_after)
        with self.sessions() as session:
            return list(session.execute(
                select(EscalationReplica.id).where(EscalationReplica.seen_at >= since).order_by(EscalationReplica.id)
            ).scalars())

    def heartbeat(self) -> None:
        """Say this replica is alive; pages held by replicas that stopped saying so are taken over."""
        beat_started = time.monotonic()
        now = self.clock()
        with self.sessions.begin() as session:
            updated = session.execute(
                update(EscalationReplica).where(EscalationReplica.id == self.replica).values(seen_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            if not updated:
                session.add(EscalationReplica(id=self.replica, seen_at=now))
            # Forget replicas gone for a day, so the table stays small.
            session.execute(delete(EscalationReplica).where(EscalationReplica.seen_at < now - timedelta(days=1)))
        self._beat_at = beat_started

    def _recoverable(self, now: datetime) -> Any:
        """Pages to (re)send now: retry time came, lease over, or holder stopped beating."""
        dead = select(EscalationReplica.id).where(EscalationReplica.seen_at < now - timedelta(seconds=self.dead_after))
        return ((EscalationDelivery.status == "pending") & (EscalationDelivery.next_attempt_at <= now)) | (
            (EscalationDelivery.status == "sending")
            & ((EscalationDelivery.claimed_until < now) | EscalationDelivery.claimed_by.in_(dead))
        )

    @property
    def dead_after(self) -> float:
        # Heartbeats come with every poll; three missed (plus a second) and a replica
        # counts as dead. Heartbeats run on their own threads, so a busy replica still
        # beats; a wrong guess is fenced: the slow holder re-checks its claim before sending.
        return 3 * self.settings.aia_escalation_poll_seconds + 1

    def retry_pages(self, limit: int = 200) -> int:
        """Send pages whose retry time came, or whose claim holder died (lease over, no heartbeat)."""
        now = self.clock()
        with self.sessions() as session:
            ids = session.execute(
                select(EscalationDelivery.id)
                .where(self._recoverable(now))
                .order_by(EscalationDelivery.id)
                .limit(limit)
            ).scalars().all()
        sent = 0
        for delivery_id in ids:
            token = secrets.token_hex(8)
            with self.sessions.begin() as session:
                claimed = session.execute(
                    update(EscalationDelivery)
                    .where(EscalationDelivery.id == delivery_id, self._recoverable(now))
                    .values(status="sending", claim_token=token, claimed_by=self.replica,
                            claimed_until=now + timedelta(seconds=self.settings.aia_escalation_lease_seconds))
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]
            if claimed == 1:
                self.send([delivery_id], token, recovering=True)
                sent += 1
        return sent

    # ------------------------------------------------------------------ people
    def acknowledge(self, escalation_id: str, actor: str) -> Change:
        now = self.clock()
        with self.sessions.begin() as session:
            row = self._locked_change(
                session, escalation_id, FIRING,
                dict(status="acknowledged", acknowledged_by=actor, acknowledged_at=now,
                     next_due_at=None, next_level=None, next_reason=None, snoozed_until=None),
            )
            if row is None:
                return self._refused(escalation_id, "acknowledge")
            self._cancel_retries(session, row.id)
            paged = f"level {row.current_level} {_level_name(row)} had been paged" if row.current_level else "before anyone was paged"
            session.add(self._event(row.id, "acknowledged", actor, row.current_level, paged))
            webhooks = self._webhook_followups(session, row, "acknowledge", now)
        text = f":white_check_mark: *Acknowledged* by {mention(actor)} at {clock(now)}; {paged}. Timers stopped."
        self._after_change(row, text, "ok", webhooks)
        return Change(self.view(row), text)

    def resolve(self, escalation_id: str, actor: str, why: str = "") -> Change:
        now = self.clock()
        with self.sessions.begin() as session:
            row = self._locked_change(
                session, escalation_id, OPEN,
                dict(status="resolved", resolved_by=actor, resolved_at=now, next_due_at=None,
                     next_level=None, next_reason=None, snoozed_until=None),
            )
            if row is None:
                return self._refused(escalation_id, "resolve")
            self._cancel_retries(session, row.id)
            session.add(self._event(row.id, "resolved", actor, row.current_level, why))
            webhooks = self._webhook_followups(session, row, "resolve", now)
        lasted = format_duration((now - (aware(row.created_at) or now)).total_seconds())
        text = f":large_green_circle: *Resolved* by {mention(actor)}{' (' + why + ')' if why else ''} after {lasted}. Nobody else will be paged."
        self._after_change(row, text, "ok", webhooks)
        return Change(self.view(row), text)

    def snooze(self, escalation_id: str, actor: str, seconds: float) -> Change:
        now = self.clock()
        until = now + timedelta(seconds=seconds)
        with self.sessions.begin() as session:
            current = session.get(Escalation, escalation_id)
            level = (current.current_level or current.next_level or 1) if current else 1
            row = self._locked_change(
                session, escalation_id, OPEN,
                dict(status="snoozed", snoozed_until=until, next_due_at=until, next_level=level, next_reason="resume"),
            )
            if row is None:
                return self._refused(escalation_id, "snooze")
            self._cancel_retries(session, row.id)
            session.add(self._event(row.id, "snoozed", actor, level, f"for {format_duration(seconds)}, until {clock(until)}"))
        text = (f":zzz: *Snoozed* by {mention(actor)} for {format_duration(seconds)}: "
                f"level {level} {_level_name(row, level)} is paged again at {clock(until)} unless acknowledged.")
        self._after_change(row, text, "info", None)
        self._schedule(row.id, row.version, until)
        return Change(self.view(row), text)

    def escalate_now(self, escalation_id: str, actor: str) -> Change:
        now = self.clock()
        with self.sessions.begin() as session:
            row = session.get(Escalation, escalation_id)
            if row is None or row.status not in OPEN:
                return self._refused(escalation_id, "escalate")
            levels = len(_policy(row.policy).levels)
            level = min(row.current_level + 1, levels) if row.current_level else (row.next_level or 1)
            session.add(self._event(row.id, "escalated_now", actor, level, f"to level {level}"))
            claim = self._claim(session, row, level, now, now, "escalate_now", actor, OPEN)
            if claim is None:
                raise UserError("The escalation changed at this moment; look at the thread and try again.")
        with self.sessions() as session:
            fresh = session.get(Escalation, escalation_id)
        assert fresh is not None
        self.background(self._send_and_schedule, claim)
        return Change(self.view(fresh), f"Escalating to level {level} {_level_name(fresh, level)} now.")

    def _send_and_schedule(self, claim: Claim) -> None:
        self.send_claimed(claim)
        if claim.next_due_at is not None:
            self._schedule(claim.escalation_id, claim.version, claim.next_due_at)
        if claim.row is None or claim.row.card_ts:
            self.refresh_card(claim.escalation_id)

    def refresh_card_later(self, escalation_id: str) -> None:
        self.background(self.refresh_card, escalation_id)

    def _locked_change(
        self, session: Session, escalation_id: str, allowed: tuple[str, ...], values: dict[str, Any]
    ) -> Escalation | None:
        """Compare-and-set on the status; the row as committed by us, or None if it was not allowed."""
        result = session.execute(
            update(Escalation)
            .where(Escalation.id == escalation_id, Escalation.status.in_(allowed))
            .values(version=Escalation.version + 1, **values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        # We hold the row lock now: what we read is exactly what the timers will see.
        return session.execute(
            select(Escalation).where(Escalation.id == escalation_id).execution_options(populate_existing=True)
        ).scalar_one()

    def _refused(self, escalation_id: str, verb: str) -> Change:
        with self.sessions() as session:
            row = session.get(Escalation, escalation_id)
        if row is None:
            raise UserError(f"There is no escalation `{escalation_id}`.", "`/aia oncall` lists the open ones.")
        view = self.view(row)
        if row.status == "resolved":
            raise UserError(f"Escalation `{row.id}` is already resolved by {mention(row.resolved_by)} at {clock(aware(row.resolved_at))}.")
        if row.status == "acknowledged" and verb == "acknowledge":
            raise UserError(f"Escalation `{row.id}` was already acknowledged by {mention(row.acknowledged_by)} "
                            f"at {clock(aware(row.acknowledged_at))}.")
        raise UserError(f"Escalation `{row.id}` cannot {verb} now: it is {view.status}.")

    @staticmethod
    def _cancel_retries(session: Session, escalation_id: str) -> None:
        session.execute(
            update(EscalationDelivery)
            # A trigger retried after a resolve would open a new phone-line incident.
            .where(EscalationDelivery.escalation_id == escalation_id, EscalationDelivery.status == "pending")
            .values(status="cancelled", claim_token=None)
            .execution_options(synchronize_session=False)
        )

    def _webhook_followups(
        self, session: Session, row: Escalation, action: str, now: datetime
    ) -> tuple[list[int], str]:
        """PagerDuty acknowledge/resolve for each webhook a trigger went (or is going) to."""
        urls = session.execute(
            select(EscalationDelivery.target).where(
                EscalationDelivery.escalation_id == row.id, EscalationDelivery.kind == "webhook",
                EscalationDelivery.status.in_(("sent", "sending", "pending")),
                EscalationDelivery.key.like("s%"),
            ).distinct()
        ).scalars().all()
        token = secrets.token_hex(8)
        pages = [
            EscalationDelivery(
                escalation_id=row.id, key=f"v{row.version}:{action}:{i}", step_seq=row.step_seq,
                level=row.current_level, kind="webhook", target=url,
                payload=json.dumps({"action": action, "level": row.current_level, "seq": row.step_seq}),
                status="sending", attempts=0, next_attempt_at=now, claim_token=token,
                claimed_until=now + timedelta(seconds=self.settings.aia_escalation_lease_seconds), created_at=now,
                claimed_by=self.replica,
            )
            for i, url in enumerate(sorted(urls))
        ]
        session.add_all(pages)
        session.flush()
        return [p.id for p in pages], token

    def _after_change(self, row: Escalation, text: str, tone: str, webhooks: tuple[list[int], str] | None) -> None:
        self.note(row, text, tone)
        self.refresh_card(row.id)
        if webhooks and webhooks[0]:
            self.background(self.send, *webhooks)

    # ------------------------------------------------------------------ alert groups
    def _by_group(self, group_id: int) -> EscalationView | None:
        with self.sessions() as session:
            row = session.execute(select(Escalation).where(Escalation.alert_group_id == group_id)).scalar_one_or_none()
        return self.view(row) if row else None

    def _resolve_group(self, group_id: int) -> None:
        view = self._by_group(group_id)
        if view is None or view.status == "resolved":
            return
        try:
            self.resolve(view.id, "alertmanager", "the alert group resolved")
        except UserError:
            pass  # resolved meanwhile by someone else

    def _group_changed(self, group_id: int, new_alerts: int) -> None:
        view = self._by_group(group_id)
        if view is None or view.status != "acknowledged" or new_alerts <= 0:
            return
        policy = self.policy
        now = self.clock()
        if policy is None or not policy.repage_on_new_alerts:
            with self.sessions.begin() as session:
                session.add(self._event(view.id, "new_alerts", BOT_ACTOR, None, f"{new_alerts} new; not re-paged (policy)"))
            return
        with self.sessions.begin() as session:
            row = self._locked_change(
                session, view.id, ("acknowledged",),
                dict(status="active", next_level=view.current_level or 1, next_reason="new_alerts", next_due_at=now),
            )
            if row is None:
                return
            session.add(self._event(row.id, "new_alerts", BOT_ACTOR, row.next_level, f"{new_alerts} new; re-paging"))
        self.fire(row.id, row.version)

    # ------------------------------------------------------------------ lookups
    def find(self, channel_id: str | None, ref: str | None) -> Escalation:
        """By id, or the only open escalation of the channel (slash commands carry no thread)."""
        with self.sessions() as session:
            if ref:
                row = session.get(Escalation, ref.strip().upper())
                if row is None:
                    raise UserError(f"There is no escalation `{ref[:20]}`.", "The id is on the escalation's card, e.g. `E7K3Q2X`.")
                return row
            rows = session.execute(
                select(Escalation).where(Escalation.channel_id == (channel_id or ""), Escalation.status.in_(OPEN))
                .order_by(Escalation.created_at.desc()).limit(10)
            ).scalars().all()
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise UserError("There is no open escalation in this channel.", "Give its id, e.g. `/aia ack E7K3Q2X`.")
        listed = ", ".join(f"`{r.id}` {r.title[:40]}" for r in rows)
        raise UserError(f"{len(rows)} escalations are open here: {listed}.", "Say which one, e.g. `/aia ack E7K3Q2X`.")

    def open_escalations(self) -> list[EscalationView]:
        with self.sessions() as session:
            rows = session.execute(
                select(Escalation).where(Escalation.status.in_(OPEN)).order_by(Escalation.created_at.desc()).limit(20)
            ).scalars().all()
        return [self.view(r) for r in rows]

    def get(self, escalation_id: str) -> Escalation | None:
        with self.sessions() as session:
            return session.get(Escalation, escalation_id)

    def view(self, row: Escalation) -> EscalationView:
        policy = _policy(row.policy)
        levels = tuple(
            LevelView(i, level.name, _targets_text(level.notify, level.email, level.webhook), format_duration(level.wait))
            for i, level in enumerate(policy.levels, start=1)
        )
        return EscalationView(
            id=row.id, title=row.title, source=row.source, severity=row.severity, status=row.status,
            current_level=row.current_level, levels=levels, created_by=row.created_by,
            created_at=aware(row.created_at) or self.clock(), next_level=row.next_level,
            next_due_at=aware(row.next_due_at), snoozed_until=aware(row.snoozed_until),
            acknowledged_by=row.acknowledged_by, acknowledged_at=aware(row.acknowledged_at),
            resolved_by=row.resolved_by, resolved_at=aware(row.resolved_at), cycle=row.cycle, repeat=policy.repeat,
        )

    def events_of(self, escalation_id: str) -> list[EscalationEvent]:
        with self.sessions() as session:
            return list(session.execute(
                select(EscalationEvent).where(EscalationEvent.escalation_id == escalation_id).order_by(EscalationEvent.id)
            ).scalars())

    def pages_of(self, escalation_id: str) -> list[EscalationDelivery]:
        with self.sessions() as session:
            return list(session.execute(
                select(EscalationDelivery).where(EscalationDelivery.escalation_id == escalation_id)
                .order_by(EscalationDelivery.id)
            ).scalars())

    def _event(self, escalation_id: str, kind: str, actor: str | None, level: int | None, detail: str,
               late: float | None = None) -> EscalationEvent:
        return EscalationEvent(escalation_id=escalation_id, at=self.clock(), kind=kind, actor=actor, level=level,
                               detail=detail[:2000], late_seconds=late)


# ---------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=64)
def _policy(snapshot: str) -> EscalationPolicy:
    """Escalations started under one configuration share its snapshot: parse it once."""
    return EscalationPolicy.model_validate_json(snapshot)


def _plan_after(policy: EscalationPolicy, level: int, cycle: int, base: datetime) -> tuple[int | None, int, datetime | None]:
    """After paging ``level``: the next level, its chain round, and when it is due."""
    wait = timedelta(seconds=policy.level(level).wait)
    if level < len(policy.levels):
        return level + 1, cycle, base + wait
    if cycle < policy.repeat:
        return 1, cycle + 1, base + wait
    return None, cycle, None


def _paged_detail(policy: EscalationPolicy, level: int, reason: str) -> str:
    spec = policy.level(level)
    targets = _targets_text(spec.notify, spec.email, spec.webhook, plain=True)
    return f"level {level} {spec.name} ({reason}): {targets}"


def _targets_text(notify: list[str], email: list[str], webhook: str | None, plain: bool = False) -> str:
    parts = [p if plain else mention(p) for p in notify]
    parts += email
    if webhook:
        parts.append("phone line (webhook)")
    return ", ".join(parts) if plain else " ".join(parts)


def _level_name(row: Escalation, level: int | None = None) -> str:
    number = level if level is not None else row.current_level
    policy = _policy(row.policy)
    return policy.level(number).name if 1 <= number <= len(policy.levels) else ""


def _channel_label(delivery: EscalationDelivery) -> str:
    return {"email": "Email page", "webhook": "Phone-line webhook", "slack_dm": "Slack DM",
            "slack_thread": "Thread page"}.get(delivery.kind, delivery.kind)


def _target_label(delivery: EscalationDelivery) -> str:
    # A webhook URL may carry a token in its path: show only its host.
    if delivery.kind == "webhook":
        return urllib.parse.urlsplit(delivery.target).netloc or "the webhook"
    if delivery.kind == "slack_dm":
        return mention(delivery.target)
    return delivery.target


def _email_body(row: Escalation, payload: dict[str, Any]) -> str:
    lines = [
        f"You are paged: level {payload['level']} ({payload['level_name']}) of the AIA escalation policy.",
        "",
        f"Incident:   {row.title}",
        f"Severity:   {row.severity or 'critical'}",
        f"Escalation: {row.id}",
        f"Slack:      channel {row.channel_id}, thread {row.thread_ts or '-'}",
    ]
    if payload.get("late"):
        lines.append(f"Late by:    {format_duration(float(payload['late']))} (the bot was not running at the due time)")
    lines += ["", "Acknowledge in the Slack thread (button) or with `/aia ack " + row.id + "`."]
    return "\n".join(lines) + "\n"


def _smtp_config(settings: Settings) -> SmtpConfig | None:
    if not settings.smtp_host:
        return None
    return SmtpConfig(
        host=settings.smtp_host, port=settings.smtp_port, starttls=settings.smtp_starttls,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        sender=settings.smtp_from, ca_file=settings.smtp_ca_file, timeout=settings.smtp_timeout_seconds,
    )


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


def build_escalation(core: Core) -> EscalationService:
    """Construct the service for a core: check the paging settings, subscribe to events."""
    policy = core.config.escalation
    check_paging_settings(core.settings, policy)
    service = EscalationService(core.settings, policy, core.sessions, core.web)
    service.subscribe(core.events)
    return service
