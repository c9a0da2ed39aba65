"""The alert inbox: the webhook stores the body, a background folder applies it.

Why: in a storm the webhook answered only after its own transaction of five statements
(find the group, read the known alerts, insert, update the group, queue the outbox row),
and Alertmanager's p99 grew with every concurrent sender. Now the webhook validates the
body and stores it with one INSERT (every alert, fingerprint and startsAt included, is
durable before the 2xx); folding it into groups, alerts and outbox rows happens here, many
webhooks per transaction, off the request path.

Order: rows are applied in id order, by one folder at a time across replicas (a
PostgreSQL advisory lock; SQLite serves one replica and a process lock suffices), so a
group's "resolved" is never applied before the "firing" that came first. A row is deleted
in the transaction that applies it. Applying a body twice changes nothing (see store.py):
the HA pair's copy, Alertmanager's retries and the webhook's own retry after a lost answer
cost a no-op at most.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Gauge
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot.alerts.payload import WebhookPayload
from bot.alerts.store import IngestResult
from bot.redaction import redact
from bot.store.models import AlertInboxEntry

log = logging.getLogger(__name__)

# Alert on it: above zero for minutes means no replica folds (or a row keeps failing), and
# alert threads stop following Alertmanager although the webhook still answers 200.
INBOX_WAITING = Gauge(
    "aia_bot_alert_inbox_waiting",
    "Alertmanager webhooks stored and not applied yet, rows given up on included (NaN: database unreachable)",
)

# Any constant works: it only has to be the same in every replica (and differ from the
# migration lock in bot.store.db).
FOLD_LOCK_KEY = 0x41494149
# Rows per transaction, and the time one transaction may keep folding: on SQLite the
# folder holds the only write lock meanwhile, and webhooks wait for it.
FOLD_BATCH = 64
# Payloads applied together (one read of their groups and alerts, one INSERT); the time
# budget is checked between chunks.
FOLD_CHUNK = 16
FOLD_BUDGET_SECONDS = 0.05
SQLITE_FOLD_BUDGET_SECONDS = 0.02
# After a wake-up, let a burst of webhooks land so that one transaction folds them all.
GATHER_SECONDS = 0.02
# While webhooks keep arriving, answering them comes first: folding waits for a pause of
# GATHER_SECONDS, but never longer than this after the first webhook not folded yet. The
# bodies are stored already, and Slack posts are paced at one a second anyway; a storm that
# goes on longer than this is folded as it arrives (the oldest row waits no longer).
FOLD_HOLD_SECONDS = 1.0
# Idle, the folder only looks for rows a stopped replica left behind (each replica's webhooks
# wake its own folder), so it can look rarely.
IDLE_POLL_SECONDS = 2.0
# A row that fails this often (not a database outage: the body itself) is left for an operator.
MAX_ATTEMPTS = 5
# Groups whose last applied body is remembered (see Inbox._last).
RECENT_KEYS = 4096

# Folds one payload inside the caller's transaction and returns what it changed.
Apply = Callable[[Session, list[WebhookPayload]], list[IngestResult]]
# Runs once per batch in the same transaction (queue outbox rows), then after commit.
BatchHook = Callable[[Session, list[IngestResult]], None]


class _WriterGate:
    """SQLite only: one writer at a time, and its busy handler polls (sleeping up to 100 ms
    between tries), so a webhook waiting behind the folder's transactions lost hundreds of
    ms. Here webhooks and the folder queue in this process instead, first come first served
    (webhooks-first starved the folder, and with it Slack, for a whole storm)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()


@dataclass
class FoldRound:
    folded: int = 0  # inbox rows consumed (applied or skipped as duplicates)
    results: list[IngestResult] = field(default_factory=list)
    more: bool = False  # rows were left for the next round
    busy: bool = False  # another replica is folding


def _unavailable(exc: Exception) -> bool:
    """The database, not the row: retry the whole round later instead of blaming the row."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


def _digest(body: str) -> bytes:
    return hashlib.sha256(body.encode()).digest()


class Inbox:
    def __init__(self, sessions: sessionmaker[Session], writer: Engine | None = None) -> None:
        """``writer`` (PostgreSQL): the composition root's small pool for the webhook's INSERT
        (bot.store.db.make_writer_engine). Without one, the core's engine in autocommit."""
        self.sessions = sessions
        self.engine: Engine = sessions.kw["bind"]
        self._insert = insert(AlertInboxEntry)
        self._lock = threading.Lock()
        self._gate = _WriterGate() if self.engine.dialect.name == "sqlite" else None
        self._writer_engine = writer
        self._writer = writer if writer is not None else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Per group, the digest of the body applied last. The same body again, with nothing
        # applied to the group in between (the HA peer's copy), is a no-op: skip it unread.
        # Any other repeat is applied: an earlier body may undo what came between.
        self._last: OrderedDict[str, bytes] = OrderedDict()

    # -- the webhook path ----------------------------------------------------------
    def add(self, key_hash: str, body: bytes) -> None:
        """One INSERT, committed; raises on database errors (the webhook answers 503)."""
        row = {"key_hash": key_hash, "body": body.decode(), "received_at": datetime.now(UTC), "attempts": 0}
        if self._gate is not None:
            # A Core connection, not a Session: the ORM's bulk-insert path cost more than the INSERT.
            with self._gate.turn(), self.engine.begin() as conn:
                conn.execute(self._insert, row)
            return
        for attempt in (1, 2):
            try:
                with self._writer.connect() as conn:
                    conn.execute(self._insert, row)
                return
            except DBAPIError as exc:
                # Without a pre-ping, a pooled connection may have died with a database
                # restart; the pool is refreshed by now. Once more, then 503. (If only the
                # answer to the INSERT was lost, the body is stored twice: folding it twice
                # changes nothing.)
                if attempt == 2 or not exc.connection_invalidated:
                    raise

    def close(self) -> None:
        # Closes the writer pool's connections; it opens new ones if a webhook comes later.
        if self._writer_engine is not None:
            self._writer_engine.dispose()

    # -- folding ---------------------------------------------------------------------
    def fold(self, apply: Apply, after: BatchHook, limit: int = FOLD_BATCH,
             budget: float = FOLD_BUDGET_SECONDS) -> FoldRound:
        """Apply the oldest rows in one transaction. A row that cannot be applied makes the
        round fall back to one row per transaction, so the others still go through."""
        if self._gate is not None:
            budget = min(budget, SQLITE_FOLD_BUDGET_SECONDS)
        with self._lock:
            try:
                with self._gate.turn() if self._gate else contextlib.nullcontext():
                    return self._fold_batch(apply, after, limit, budget)
            except Exception as exc:  # noqa: BLE001 - one bad row must not hold up the others
                if _unavailable(exc):
                    raise  # the database is down: the caller waits and tries again
                log.warning("alert inbox: a batch failed (%s); folding its rows one by one", type(exc).__name__)
                return self._fold_singly(apply, after, limit)

    def _fold_batch(self, apply: Apply, after: BatchHook, limit: int, budget: float) -> FoldRound:
        round_ = FoldRound()
        last: dict[str, bytes] = {}  # this batch's additions to self._last
        with self.sessions() as session, session.begin():
            if not self._take_turn(session):
                return FoldRound(busy=True)
            rows = session.execute(
                select(AlertInboxEntry.id, AlertInboxEntry.key_hash, AlertInboxEntry.body)
                .where(AlertInboxEntry.attempts < MAX_ATTEMPTS)
                .order_by(AlertInboxEntry.id).limit(limit)
            ).all()
            started = time.monotonic()
            done: list[int] = []
            chunk: list[WebhookPayload] = []
            for index, row in enumerate(rows):
                digest = _digest(row.body)
                if last.get(row.key_hash, self._last.get(row.key_hash)) != digest:
                    chunk.append(WebhookPayload.model_validate_json(row.body))
                    last[row.key_hash] = digest
                done.append(row.id)
                if len(chunk) == FOLD_CHUNK or index == len(rows) - 1:
                    round_.results += apply(session, chunk)
                    chunk = []
                    if time.monotonic() - started > budget:
                        break
            if done:
                session.execute(delete(AlertInboxEntry).where(AlertInboxEntry.id.in_(done)))
            after(session, round_.results)
        self._remember(last)
        round_.folded = len(done)
        round_.more = len(done) < len(rows) or len(rows) == limit
        return round_

    def _fold_singly(self, apply: Apply, after: BatchHook, limit: int) -> FoldRound:
        round_ = FoldRound()
        with self.sessions() as session:
            ids = session.scalars(
                select(AlertInboxEntry.id).where(AlertInboxEntry.attempts < MAX_ATTEMPTS)
                .order_by(AlertInboxEntry.id).limit(limit)
            ).all()
        for row_id in ids:
            try:
                with self.sessions() as session, session.begin():
                    if not self._take_turn(session):
                        round_.busy = True
                        return round_
                    row = session.get(AlertInboxEntry, row_id)
                    if row is None:
                        continue
                    key, digest = row.key_hash, _digest(row.body)
                    results = apply(session, [WebhookPayload.model_validate_json(row.body)])
                    session.delete(row)
                    after(session, results)
                self._remember({key: digest})
                round_.results += results
                round_.folded += 1
            except Exception as exc:  # noqa: BLE001 - recorded on the row, and logged
                if _unavailable(exc):
                    raise
                self._failed(row_id, exc)
        round_.more = len(ids) == limit
        return round_

    def _failed(self, row_id: int, exc: Exception) -> None:
        # The type and a short reason only: the body holds labels and annotations.
        reason = redact(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")[:300]
        with self.sessions.begin() as session:
            session.execute(update(AlertInboxEntry).where(AlertInboxEntry.id == row_id).values(
                attempts=AlertInboxEntry.attempts + 1, last_error=reason))
            attempts = session.scalar(select(AlertInboxEntry.attempts).where(AlertInboxEntry.id == row_id))
        level = logging.ERROR if (attempts or 0) >= MAX_ATTEMPTS else logging.WARNING
        log.log(level, "alert inbox row %s could not be applied (attempt %s of %s): %s",
                row_id, attempts, MAX_ATTEMPTS, reason)

    @staticmethod
    def _take_turn(session: Session) -> bool:
        if session.get_bind().dialect.name != "postgresql":
            return True
        return bool(session.scalar(select(func.pg_try_advisory_xact_lock(FOLD_LOCK_KEY))))

    def _remember(self, last: dict[str, bytes]) -> None:
        for key, digest in last.items():
            self._last[key] = digest
            self._last.move_to_end(key)
        while len(self._last) > RECENT_KEYS:
            self._last.popitem(last=False)

    def waiting(self) -> float:
        """Rows not applied yet, for /metrics; NaN when the database does not answer (a
        scrape must not fail because of it)."""
        try:
            with self.sessions() as session:
                return float(session.scalar(select(func.count()).select_from(AlertInboxEntry)) or 0)
        except Exception:  # noqa: BLE001 - reported as NaN; the outage shows elsewhere
            return float("nan")

    def forget(self, key_hash: str) -> None:
        """The group changed outside the inbox (AlertService.receive): its last body is no
        longer the state it left."""
        with self._lock:
            self._last.pop(key_hash, None)


class InboxFolder:
    """The background thread that folds the inbox: woken by this replica's webhooks, and
    polling for rows that other replicas stored (or that a restart left behind)."""

    name = "alert-inbox"

    def __init__(self, fold: Callable[[], FoldRound], poll_seconds: float,
                 on_stop: Callable[[], None] = lambda: None, hold_seconds: float = FOLD_HOLD_SECONDS) -> None:
        self.fold = fold
        self.on_stop = on_stop
        self.poll_seconds = poll_seconds
        self.hold_seconds = hold_seconds
        self._wake = threading.Condition()
        self._poked = False
        self._last_poke = float("-inf")
        # When the oldest of this replica's webhooks not folded yet arrived (None: all folded).
        self._oldest_poke: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="aia-alert-inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=20)
            self._thread = None
        self.on_stop()

    def poke(self) -> None:
        """A webhook was stored (called on the webhook's thread)."""
        now = time.monotonic()
        with self._wake:
            self._last_poke = now
            if self._oldest_poke is None:
                self._oldest_poke = now
            if not self._poked:
                self._poked = True
                self._wake.notify()

    def _settle(self) -> None:
        """Wait while webhooks keep arriving: until none came for GATHER_SECONDS, and at most
        until the oldest one not folded yet is hold_seconds old."""
        while not self._stop.is_set():
            with self._wake:
                now = time.monotonic()
                oldest = now if self._oldest_poke is None else self._oldest_poke
                until = min(self._last_poke + GATHER_SECONDS, oldest + self.hold_seconds)
            if now >= until:
                return
            self._stop.wait(until - now)

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            folding_since = time.monotonic()
            try:
                round_ = self.fold()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - a database outage must not end the thread
                failures += 1
                log.warning("alert inbox: folding failed (%s); retrying", type(exc).__name__)
                self._stop.wait(min(5.0, 0.2 * 2 ** min(failures, 5)))
                continue
            if not round_.more:
                with self._wake:
                    # Every webhook poked before this round began is folded now. (A poke during
                    # the round keeps the older mark: the next hold may end early, never late.)
                    if self._oldest_poke is not None and self._last_poke <= folding_since:
                        self._oldest_poke = None
            else:
                self._settle()
                continue
            with self._wake:
                if not self._poked and not self._stop.is_set():
                    # Idle, it only looks for rows a stopped replica left behind (every replica's
                    # webhooks wake its own folder); busy, another replica holds the turn.
                    self._wake.wait(min(self.poll_seconds, 0.05) if round_.busy else max(self.poll_seconds, IDLE_POLL_SECONDS))
                woken, self._poked = self._poked, False
            if woken:
                self._settle()
