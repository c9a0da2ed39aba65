"""The persistent Slack outbox: every alert message goes through here, never the webhook path.

Why a table and not a queue in memory: the bot runs as 2 to 5 replicas and may be
restarted mid-storm; a row survives both. How it stays correct and polite:

- Claiming: senders pick rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL) and
  mark them ``sending`` with a lease; a replica that dies mid-send leaves a lease that
  expires, and another replica sends the row. (SQLite serves one replica; a process lock
  stands in for the row lock.)
- Pacing: ``slack_outbox_channels.next_post_at`` is the next moment any replica may call
  ``chat.postMessage`` in a channel; claiming a post moves it forward in the same
  transaction, so all replicas together stay at about one post per second per channel.
  ``chat.update`` and file uploads are not charged against it (Slack meters them separately).
- Failures: HTTP 429 moves the channel's next slot behind ``Retry-After``; 5xx and network
  errors retry with exponential backoff; Slack's permanent errors fail the row (logged).
- Coalescing: ``coalesce_key`` is unique among *pending* rows, so ten changes to one alert
  group's message before it is sent leave one pending row, and what it sends is rendered
  from the database at send time: only the latest state goes out.
- Priority: lower ``priority`` first (critical alert groups before warnings; thread replies
  after every waiting parent message).

What to send for a row is decided by a :class:`Composer` registered for its kind; the
generic ``message`` kind (text, blocks and files given up front) is built in.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from prometheus_client import Counter
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, sessionmaker

from bot.redaction import redact
from bot.store.models import OutboxChannel, OutboxMessage

log = logging.getLogger(__name__)


class OutboxState(StrEnum):
    """``slack_outbox.state``: the stored strings are these values."""

    PENDING = "pending"  # waiting for its time (``not_before``) and a free channel slot
    SENDING = "sending"  # claimed by a replica until ``lease_until``
    DONE = "done"  # sent, or superseded by a newer pending row with its coalesce key
    FAILED = "failed"  # given up: a permanent Slack error or too many attempts


SENT = Counter("aia_bot_outbox_sent_total", "Outbox rows finished", ["kind", "outcome"])
RATE_LIMITED = Counter("aia_bot_outbox_ratelimited_total", "HTTP 429 answers from Slack to the outbox")

MESSAGE = "message"  # a post (text/blocks, maybe files) rendered when it was queued
FILES = "files"  # files alone into a thread (an upload retried after its message went out)
LEASE_SECONDS = 60.0
# Slack measures the interval at its side; a few ms of jitter between our clock and the
# request's arrival would otherwise earn an avoidable 429 at exactly one post per second.
PACING_MARGIN_SECONDS = 0.03
MAX_BACKOFF_SECONDS = 60.0
# A post is claimed (and rendered) up to this long before its channel slot.
SLOT_LOOKAHEAD_SECONDS = 0.5
POKE_SECONDS = 0.25
# An idle pool has one lookout that polls, its wait doubling from the poll setting up to this;
# the other threads sleep until work comes (a poke, or a thread that found work). Rows are
# enqueued by the replica that pokes its own senders, so the poll only finds what a stopped
# replica left behind: idle replicas cost almost no CPU and no database round trips.
IDLE_POLL_MAX_SECONDS = 2.0
# A sleeping helper thread looks anyway after this long (a safety net, not a schedule).
HELPER_NAP_SECONDS = 30.0
# Errors after which trying again is pointless (the message or channel is wrong, not Slack).
PERMANENT_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "invalid_blocks_format",
    "msg_too_long", "no_text", "message_not_found", "cant_update_message", "invalid_auth",
    "not_authed", "account_inactive", "token_revoked", "restricted_action", "invalid_arguments",
    "edit_window_closed", "file_not_found", "file_already_completed",
}


@dataclass(frozen=True)
class Upload:
    filename: str
    content: bytes
    title: str


@dataclass
class OutMessage:
    """Text, Block Kit dicts and files: what a renderer produces and a row sends."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "blocks": self.blocks,
            "uploads": [
                {"filename": u.filename, "title": u.title, "b64": base64.b64encode(u.content).decode()}
                for u in self.uploads
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutMessage:
        return cls(
            text=str(data.get("text") or ""),
            blocks=list(data.get("blocks") or []),
            uploads=[
                Upload(u["filename"], base64.b64decode(u["b64"]), u.get("title") or u["filename"])
                for u in data.get("uploads") or []
            ],
        )


@dataclass
class Delivery:
    """One Slack action decided at send time."""

    action: str  # "post" | "update"
    channel: str
    message: OutMessage
    thread_ts: str | None = None
    ts: str | None = None  # the message to update


class Composer(Protocol):
    """Decides, for rows of one kind, when they may go and what they send."""

    def ready(self, session: Session, row: OutboxMessage) -> bool | None:
        """None: not yet (e.g. the thread's parent is not posted); else whether it needs a post slot."""

    def compose(self, row: OutboxMessage) -> Delivery | None:
        """What to send now; None when nothing is left to send (or the row was a task)."""

    def sent(self, session: Session, row: OutboxMessage, delivery: Delivery, channel_id: str,
             ts: str | None) -> list[object]:
        """Record the outcome in the same transaction; return events to publish after commit."""


ThreadResolver = Callable[[Session, int], tuple[str, str] | None]


class _MessageComposer:
    """Rows whose content was rendered when they were enqueued (thread replies, files)."""

    def __init__(self, thread_of: ThreadResolver | None) -> None:
        self.thread_of = thread_of
        self._threads: dict[int, tuple[str, str]] = {}

    def _thread(self, session: Session, group_id: int) -> tuple[str, str] | None:
        if group_id not in self._threads and self.thread_of is not None:
            found = self.thread_of(session, group_id)
            if found:
                self._threads[group_id] = found
        return self._threads.get(group_id)

    def ready(self, session: Session, row: OutboxMessage) -> bool | None:
        # Decided without the payload (it may hold a PNG): claiming reads many rows often.
        if row.group_id is not None and self._thread(session, row.group_id) is None:
            return None
        return row.kind == MESSAGE

    def compose(self, row: OutboxMessage) -> Delivery | None:
        payload = json.loads(row.payload)
        channel, thread_ts = payload.get("channel_id") or row.channel, payload.get("thread_ts")
        if row.group_id is not None and not thread_ts:
            channel, thread_ts = self._threads[row.group_id]
        return Delivery("post", channel, OutMessage.from_json(payload), thread_ts=thread_ts)

    def sent(self, session: Session, row: OutboxMessage, delivery: Delivery, channel_id: str,
             ts: str | None) -> list[object]:
        return []


@dataclass
class _Claimed:
    row: OutboxMessage
    composer: Composer
    send_at: float | None = None  # the channel slot this post was given
    reserved_until: float | None = None  # where that moved the channel's next slot


class _Transient(Exception):
    """Try again later; ``retry_after`` set means Slack told us when (429)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Permanent(Exception):
    pass


def _classify(exc: Exception) -> Exception:
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 200)
        error = str(response.get("error") or "") if response is not None else ""
        if status == 429 or error == "ratelimited":
            headers = getattr(response, "headers", {}) or {}
            raw = headers.get("Retry-After") or headers.get("retry-after") or "1"
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = 1.0
            return _Transient("ratelimited", max(1.0, retry_after))
        if status >= 500 or error in {"internal_error", "fatal_error", "service_unavailable",
                                      "request_timeout"}:
            return _Transient(f"HTTP {status} {error}".strip())
        if error in PERMANENT_ERRORS:
            return _Permanent(error)
        return _Transient(error or f"HTTP {status}")
    return _Transient(type(exc).__name__)


_COALESCING_INSERTS: dict[str, Any] = {}


def _coalescing_insert(dialect: str) -> Any:
    """"Insert unless a pending row with this key exists", built once per dialect: values
    go in as parameters, so the compiled statement is reused (a storm queues hundreds)."""
    statement = _COALESCING_INSERTS.get(dialect)
    if statement is None:
        # Both dialects spell it the same way.
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        statement = _COALESCING_INSERTS[dialect] = dialect_insert(OutboxMessage).on_conflict_do_nothing(
            # A literal, not a bound parameter: PostgreSQL must match it to the partial
            # index's predicate even in a prepared statement's generic plan.
            index_elements=["coalesce_key"], index_where=text("state = 'pending'")
        )
    return statement


class _Pool:
    """Threads of one kind that sleep on one condition; ``pokes`` counts the wake-ups, so a
    thread that looked for work before a poke does not then sleep through it."""

    def __init__(self) -> None:
        self.wake = threading.Condition()
        self.pokes = 0

    def wake_one(self) -> None:
        with self.wake:
            self.pokes += 1
            self.wake.notify()

    def wake_all(self) -> None:
        with self.wake:
            self.pokes += 1
            self.wake.notify_all()

    def sleep(self, seen: int, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` unless poked since ``seen``; True if poked."""
        with self.wake:
            if self.pokes == seen and not stop.is_set():
                self.wake.wait(seconds)
            return self.pokes != seen


class Outbox:
    """Enqueue rows (any replica, any thread) and send them (background senders)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        web: WebClient | None,
        *,
        post_interval: float = 1.0,
        poll_seconds: float = 0.2,
        max_attempts: int = 30,
        senders: int = 2,
        task_workers: int = 2,
        on_event: Callable[[object], None] = lambda event: None,
        prefetch: Callable[[Session, list[int]], object] | None = None,
    ) -> None:
        """``on_event``: publishes what the composers' sent() returned (the alert service
        passes the core's event bus). ``prefetch``: loads what the composers' ready() will
        look at for these group ids in one query, and returns it (the caller holds it while
        ready() runs)."""
        self.sessions = sessions
        # Our own client without slack_sdk's retry handlers: a 429 must reach us (to move the
        # channel's slot for every replica), and retries belong to the row, not to a thread.
        self.web = (
            WebClient(token=web.token, base_url=web.base_url, timeout=15, retry_handlers=[])
            if web is not None else None
        )
        self.post_interval = post_interval
        # Slack measures the interval between arrivals; wake-up and network jitter on our side
        # must not make two posts look closer than the limit.
        self.margin = max(PACING_MARGIN_SECONDS, 0.04 * post_interval) if post_interval else 0.0
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.senders = senders
        self.task_workers = task_workers
        self.worker_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.composers: dict[str, Composer] = {MESSAGE: _MessageComposer(None), FILES: _MessageComposer(None)}
        self.task_kinds: set[str] = set()
        self._claim_lock = threading.Lock()
        # One pool of threads for the posts, one for the tasks: a poke wakes one thread of each.
        self._pools = {False: _Pool(), True: _Pool()}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_poke = 0.0
        self._poke_timer: threading.Timer | None = None
        self.on_event = on_event
        self.prefetch = prefetch

    # -- wiring --------------------------------------------------------------
    def register(self, kind: str, composer: Composer, *, task: bool = False) -> None:
        self.composers[kind] = composer
        if task:
            self.task_kinds.add(kind)

    def set_thread_resolver(self, resolver: ThreadResolver) -> None:
        self.composers[MESSAGE] = self.composers[FILES] = _MessageComposer(resolver)

    # -- enqueueing (inside the caller's transaction) ---------------------------
    @staticmethod
    def enqueue(
        session: Session,
        kind: str,
        channel: str,
        *,
        priority: int,
        payload: dict[str, Any] | None = None,
        group_id: int | None = None,
        coalesce_key: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Add a row; with ``coalesce_key``, do nothing when one is already pending."""
        now = time.time()
        values = dict(
            kind=kind, channel=channel, group_id=group_id, coalesce_key=coalesce_key,
            priority=priority, payload=json.dumps(payload or {}), state=OutboxState.PENDING, attempts=0,
            not_before=now + delay, created_at=now,
        )
        if coalesce_key is None:
            session.add(OutboxMessage(**values))
            return
        session.connection().execute(_coalescing_insert(session.get_bind().dialect.name), values)

    @staticmethod
    def enqueue_coalesced(session: Session, kind: str, channel: str,
                          rows: Sequence[tuple[int, int | None, str]]) -> None:
        """Several rows of one kind, ``(priority, group_id, coalesce_key)`` each, in one
        statement; each is skipped when a pending row has its key (as with ``enqueue``)."""
        if not rows:
            return
        now = time.time()
        session.connection().execute(_coalescing_insert(session.get_bind().dialect.name), [
            dict(kind=kind, channel=channel, group_id=group_id, coalesce_key=key, priority=priority,
                 payload="{}", state=OutboxState.PENDING, attempts=0, not_before=now, created_at=now)
            for priority, group_id, key in rows
        ])

    def enqueue_message(self, session: Session, channel: str, message: OutMessage, *, priority: int,
                        group_id: int | None = None, thread: tuple[str, str] | None = None) -> None:
        payload = message.to_json()
        if thread is not None:
            payload["channel_id"], payload["thread_ts"] = thread
        kind = MESSAGE if message.text or message.blocks else FILES
        self.enqueue(session, kind, channel, priority=priority, payload=payload, group_id=group_id)

    def poke(self) -> None:
        """Wake an idle thread of each pool of this process (other replicas' lookouts find the
        row when they poll).

        At most every POKE_SECONDS: in a storm every fold of the inbox pokes, and a claim per
        poke would cost the webhooks their CPU for nothing. A poke in between is not lost: it
        is delivered when the interval is over.
        """
        with self._pools[False].wake:
            now = time.monotonic()
            early = POKE_SECONDS - (now - self._last_poke)
            if early > 0:
                if self._poke_timer is None:
                    self._poke_timer = threading.Timer(early, self._deliver_poke)
                    self._poke_timer.daemon = True
                    self._poke_timer.start()
                return
            self._last_poke = now
        self._wake_pools()

    def _deliver_poke(self) -> None:
        with self._pools[False].wake:
            self._poke_timer = None
            self._last_poke = time.monotonic()
        self._wake_pools()

    def _wake_pools(self) -> None:
        for pool in self._pools.values():
            pool.wake_one()

    # -- the background service ------------------------------------------------
    name = "slack-outbox"

    def start(self) -> None:
        if self.web is None:
            log.warning("the Slack outbox is not started: SLACK_BOT_TOKEN is not set")
            return
        self._stop.clear()
        for i in range(self.senders):
            self._spawn(f"aia-outbox-{i}", tasks=False, lookout=i == 0)
        for i in range(self.task_workers if self.task_kinds else 0):
            self._spawn(f"aia-outbox-task-{i}", tasks=True, lookout=i == 0)

    def _spawn(self, name: str, tasks: bool, lookout: bool) -> None:
        thread = threading.Thread(target=self._loop, args=(tasks, lookout), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._pools[False].wake:
            if self._poke_timer is not None:
                self._poke_timer.cancel()
                self._poke_timer = None
        for pool in self._pools.values():
            pool.wake_all()
        for thread in self._threads:
            thread.join(timeout=20)
        self._threads.clear()

    def _loop(self, tasks: bool, lookout: bool) -> None:
        kinds = sorted(self.task_kinds) if tasks else sorted(set(self.composers) - self.task_kinds)
        pool = self._pools[tasks]
        idle_wait = self.poll_seconds
        while not self._stop.is_set():
            seen = pool.pokes  # a poke after this is not lost, even before we wait
            try:
                worked, wake_at = self.run_once(kinds)
            except Exception:  # noqa: BLE001 - a database blip must not kill the sender
                log.exception("outbox sender: claiming failed; retrying")
                worked, wake_at = False, time.time() + 1.0
            if worked:
                idle_wait = self.poll_seconds
                pool.wake_one()  # there may be more: bring in a sleeping thread
                continue
            if lookout:
                wait = idle_wait
                idle_wait = min(idle_wait * 2, max(self.poll_seconds, IDLE_POLL_MAX_SECONDS))
            else:
                wait = HELPER_NAP_SECONDS
            if wake_at is not None:
                wait = min(wait, max(0.0, wake_at - time.time()))
            if pool.sleep(seen, wait, self._stop):
                idle_wait = self.poll_seconds

    # -- one step ----------------------------------------------------------------
    def run_once(self, kinds: Sequence[str] | None = None) -> tuple[bool, float | None]:
        """Claim and process one row. Returns (did something, earliest time a slot frees up)."""
        claimed, wake_at = self._claim(list(kinds) if kinds is not None else list(self.composers))
        if claimed is None:
            return False, wake_at
        self._process(claimed)
        return True, None

    def _claim(self, kinds: list[str]) -> tuple[_Claimed | None, float | None]:
        with self._claim_lock, self.sessions() as session, session.begin():
            now = time.time()
            candidates = session.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.kind.in_(kinds),
                    or_(
                        (OutboxMessage.state == OutboxState.PENDING) & (OutboxMessage.not_before <= now),
                        (OutboxMessage.state == OutboxState.SENDING) & (OutboxMessage.lease_until < now),
                    ),
                )
                .order_by(OutboxMessage.priority, OutboxMessage.id)
                .limit(50)
                .options(defer(OutboxMessage.payload))
                .with_for_update(skip_locked=True)
            ).all()
            # Held for the loop below: the session's identity map keeps clean objects only weakly.
            prefetched = (self.prefetch(session, [r.group_id for r in candidates if r.group_id is not None])
                          if self.prefetch is not None else None)
            wake_at: float | None = None
            blocked_channels: set[str] = set()
            for row in candidates:
                composer = self.composers.get(row.kind)
                if composer is None:
                    continue
                needs_slot = composer.ready(session, row)
                if needs_slot is None:
                    continue
                send_at, reserved_until = None, None
                if needs_slot:
                    if row.channel in blocked_channels:
                        continue
                    send_at, reserved_until = self._take_slot(session, row.channel, now)
                    if send_at is None:
                        blocked_channels.add(row.channel)
                        wake_at = reserved_until if wake_at is None else min(wake_at, reserved_until)
                        continue
                row.state = OutboxState.SENDING
                row.lease_until = now + LEASE_SECONDS
                row.claimed_by = self.worker_id
                session.flush()
                row.payload  # noqa: B018 - load the deferred column before the row leaves the session
                session.expunge(row)
                return _Claimed(row, composer, send_at, reserved_until), None
            del prefetched
            # Nothing to do now: when the next row held back (a retry's backoff, a 429) is due.
            later = session.scalar(
                select(func.min(OutboxMessage.not_before))
                .where(OutboxMessage.kind.in_(kinds), OutboxMessage.state == "pending",
                       OutboxMessage.not_before > now)
            )
            if later is not None:
                wake_at = later if wake_at is None else min(wake_at, later)
            return None, wake_at

    def _take_slot(self, session: Session, channel: str, now: float) -> tuple[float | None, float]:
        """Take the channel's next post slot if it comes within SLOT_LOOKAHEAD seconds.

        Returns (when to post, the channel's next slot after it) on success, else (None, when
        to look again). The post is
        rendered while waiting for its slot, so posts leave at the slot times exactly, one
        interval apart: rendering time does not stretch the interval.
        """
        pacing = session.scalars(
            select(OutboxChannel).where(OutboxChannel.channel == channel).with_for_update(skip_locked=True)
        ).first()
        if pacing is None:
            exists = session.get(OutboxChannel, channel)
            if exists is not None:  # another replica holds the lock: it is taking a slot right now
                return None, now + self.poll_seconds
            try:
                with session.begin_nested():
                    pacing = OutboxChannel(channel=channel, next_post_at=0.0, storm_posted=0)
                    session.add(pacing)
            except IntegrityError:
                return None, now + self.poll_seconds
        slot_at = max(now, pacing.next_post_at)
        lookahead = min(SLOT_LOOKAHEAD_SECONDS, self.post_interval / 2)
        if slot_at - now > lookahead:
            return None, slot_at - lookahead
        pacing.next_post_at = slot_at + self.post_interval + self.margin
        return slot_at, pacing.next_post_at

    def _process(self, claimed: _Claimed) -> None:
        row, composer = claimed.row, claimed.composer
        try:
            delivery = composer.compose(row)
            if delivery is not None and delivery.action == "post" and claimed.send_at is not None:
                self._wait_for_slot(row.channel, claimed.send_at, claimed.reserved_until)
            channel_id, ts = self._deliver(row, delivery) if delivery is not None else (row.channel, None)
        except _Permanent as exc:
            self._fail(row, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - classified: every failure is retried or failed
            problem = exc if isinstance(exc, _Transient) else _classify(exc)
            if isinstance(problem, _Permanent):
                self._fail(row, str(problem))
            else:
                assert isinstance(problem, _Transient)
                if not isinstance(exc, SlackApiError | _Transient):
                    log.warning("outbox row %s (%s): %s", row.id, row.kind, redact(str(exc))[:300])
                self._retry(row, problem)
            return
        events: list[object] = []
        with self.sessions() as session, session.begin():
            if delivery is not None:
                events = composer.sent(session, row, delivery, channel_id, ts)
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id, OutboxMessage.claimed_by == self.worker_id)
                .values(state=OutboxState.DONE, sent_at=time.time(), result_ts=ts, lease_until=None)
            )
        SENT.labels(row.kind, "sent").inc()
        for event in events:
            self.on_event(event)

    def _deliver(self, row: OutboxMessage, delivery: Delivery) -> tuple[str, str | None]:
        assert self.web is not None
        message = delivery.message
        text = message.text or "(no text)"
        if delivery.action == "update":
            response = self.web.chat_update(
                channel=delivery.channel, ts=delivery.ts or "", text=text, blocks=message.blocks or None
            )
            return str(response.get("channel") or delivery.channel), delivery.ts
        channel_id, ts = delivery.channel, delivery.thread_ts
        if message.text or message.blocks:
            posting_at = time.time()
            response = self.web.chat_postMessage(
                channel=delivery.channel, text=text, blocks=message.blocks or None,
                thread_ts=delivery.thread_ts, unfurl_links=False, unfurl_media=False,
            )
            channel_id, ts = str(response.get("channel") or delivery.channel), str(response.get("ts"))
            self._paced_from(row.channel, posting_at)
        if message.uploads:
            try:
                self.web.files_upload_v2(
                    channel=channel_id,
                    thread_ts=delivery.thread_ts or ts,
                    file_uploads=[{"content": u.content, "filename": u.filename, "title": u.title}
                                  for u in message.uploads],
                )
            except Exception as exc:  # noqa: BLE001 - the message is out; only the files go again
                if not (message.text or message.blocks):
                    raise
                log.warning("outbox row %s: upload failed (%s); retrying the files alone",
                            row.id, type(exc).__name__)
                with self.sessions() as session, session.begin():
                    self.enqueue_message(
                        session, row.channel, OutMessage(text="", uploads=message.uploads),
                        priority=row.priority, thread=(channel_id, delivery.thread_ts or ts or ""),
                    )
        return channel_id, ts

    def _wait_for_slot(self, channel: str, send_at: float, reserved_until: float | None) -> None:
        """Sleep until the slot. A sender that missed its slot (rendering took long, or the
        thread woke late on a busy machine) posts now if nobody took a slot after it, else
        takes the next free one: the later slots may belong to other senders or replicas."""
        tolerance = self.margin / 2
        while not self._stop.is_set():
            if time.time() - send_at > tolerance and self.post_interval:
                send_at, reserved_until = self._late_slot(channel, reserved_until)
            self._stop.wait(max(0.0, send_at - time.time()))
            if time.time() - send_at <= tolerance or not self.post_interval:
                return

    def _late_slot(self, channel: str, reserved_until: float | None) -> tuple[float, float | None]:
        with self.sessions() as session, session.begin():
            pacing = session.scalars(
                select(OutboxChannel).where(OutboxChannel.channel == channel).with_for_update()
            ).first()
            now = time.time()
            if pacing is None:
                return now, None
            mine = reserved_until is not None and abs(pacing.next_post_at - reserved_until) < 1e-6
            send_at = now if mine else max(now, pacing.next_post_at)
            pacing.next_post_at = send_at + self.post_interval + self.margin
            return send_at, pacing.next_post_at

    def _paced_from(self, channel: str, posting_at: float) -> None:
        """Count the interval from when the post really left, not from the claim: rendering
        between the two may take a while under load, and Slack measures arrivals."""
        if not self.post_interval:
            return
        next_at = posting_at + self.post_interval + self.margin
        with self.sessions() as session, session.begin():
            session.execute(
                update(OutboxChannel)
                .where(OutboxChannel.channel == channel, OutboxChannel.next_post_at < next_at)
                .values(next_post_at=next_at)
            )

    def _retry(self, row: OutboxMessage, problem: _Transient) -> None:
        now = time.time()
        if problem.retry_after is not None:
            RATE_LIMITED.inc()
            # Slack said when: nobody (no replica) posts to this channel before then.
            with self.sessions() as session, session.begin():
                session.execute(
                    update(OutboxChannel)
                    .where(OutboxChannel.channel == row.channel,
                           OutboxChannel.next_post_at < now + problem.retry_after)
                    .values(next_post_at=now + problem.retry_after)
                )
            values: dict[str, Any] = dict(state=OutboxState.PENDING, not_before=now + problem.retry_after)
        else:
            attempts = row.attempts + 1
            if attempts >= self.max_attempts:
                values = dict(state=OutboxState.FAILED, attempts=attempts, last_error=str(problem)[:500])
                log.error("outbox row %s (%s) given up after %s attempts: %s", row.id, row.kind, attempts, problem)
            else:
                backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (attempts - 1)) * random.uniform(1.0, 1.25)
                values = dict(state=OutboxState.PENDING, attempts=attempts, not_before=now + backoff,
                              last_error=str(problem)[:500])
        try:
            with self.sessions() as session, session.begin():
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == row.id, OutboxMessage.claimed_by == self.worker_id)
                    .values(lease_until=None, **values)
                )
        except IntegrityError:
            # A newer pending row with the same coalesce key exists: it carries the latest state.
            self._drop(row.id)
        SENT.labels(row.kind, "retry").inc()

    def _drop(self, row_id: int) -> None:
        with self.sessions() as session, session.begin():
            session.execute(update(OutboxMessage).where(OutboxMessage.id == row_id).values(
                state=OutboxState.DONE, last_error="superseded by a newer pending row", lease_until=None))

    def _fail(self, row: OutboxMessage, error: str) -> None:
        log.error("outbox row %s (%s) failed for good: %s", row.id, row.kind, error)
        with self.sessions() as session, session.begin():
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id)
                .values(state=OutboxState.FAILED, last_error=error[:500], lease_until=None)
            )
        SENT.labels(row.kind, "failed").inc()
