"""Long-running work of `aia-bot serve` besides answering HTTP: outbox, timers, sweeps.

The entry points start these after the core is built (database migrated) and stop them
on shutdown, in reverse order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bot.escalation.scheduler import EscalationScheduler

if TYPE_CHECKING:
    from bot.core import Core


class BackgroundService(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def background_services(core: Core) -> list[BackgroundService]:
    return [
        core.alerts.folder,  # webhooks stored in the inbox -> alert groups
        core.alerts.outbox,  # the Slack outbox (alert threads)
        # escalation timers (APScheduler) and page retries
        EscalationScheduler(core.escalation, core.settings.aia_escalation_poll_seconds,
                            core.settings.aia_escalation_workers),
    ]
