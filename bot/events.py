"""In-process events between parts of the core (alerts → escalation, approvals → audit...).

Subscribers run synchronously in the publisher's thread and must be quick and
idempotent: with several replicas, the database — not this bus — is the truth,
and any replica may publish the same fact again after a retry.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertGroupOpened:
    group_id: int
    group_key: str
    severity: str
    labels: dict[str, str]
    channel_id: str
    thread_ts: str


@dataclass(frozen=True)
class AlertGroupChanged:
    """New alerts joined, or alerts fired again, in a group that is still open."""

    group_id: int
    new_alert_count: int


@dataclass(frozen=True)
class AlertGroupResolved:
    group_id: int


@dataclass(frozen=True)
class BreakGlassUsed:
    actor: str
    procedure: str
    reason: str
    channel_id: str | None
    thread_ts: str | None
    extra: dict[str, Any] = field(default_factory=dict)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[type, list[Callable[[Any], None]]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, event_type: type, handler: Callable[[Any], None]) -> None:
        with self._lock:
            self._subscribers[event_type].append(handler)

    def publish(self, event: object) -> None:
        for handler in list(self._subscribers.get(type(event), [])):
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - one subscriber's bug must not break the publisher
                log.exception("event handler %r failed for %r", handler, event)
