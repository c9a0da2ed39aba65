"""A core with an escalation policy on real PostgreSQL, a real SMTP server and a webhook receiver."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.core import Core, build_core
from bot.escalation.scheduler import EscalationScheduler
from bot.escalation_policy import EscalationPolicy
from bot.settings import BotConfigFile, load_settings
from sandbox.slack_server import FakeSlackServer
from tests.conftest import fresh_pg_database
from tests.harness.smtp import SmtpServer
from tests.harness.webhook_receiver import WebhookReceiver

ROUTING_KEY = "R0UTING-KEY-pd-0123456789abcdef"


def policy_dict(webhook_url: str, wait: str = "2s", **extra: Any) -> dict[str, Any]:
    """The runbook's four levels, with short waits."""
    return {
        "start_on": {"severity": ["critical"]},
        "levels": [
            {"name": "on-call", "notify": ["U0OPS01", "S0ONCALL"], "email": ["oncall@013a.tech"], "wait": wait},
            {"name": "troubleshooting", "notify": ["U0APR01"], "wait": wait},
            {"name": "devops-team", "notify": ["U0ADM01"], "email": ["devops@013a.tech"],
             "webhook": webhook_url, "wait": wait},
            {"name": "architect", "notify": ["U0VIEW1"], "wait": wait},
        ],
        **extra,
    }


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path_factory.mktemp("smtp")).up()
    yield server
    server.down()


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


CoreFactory = Callable[..., Core]


class ShiftedClock:
    """The machine's time plus an offset that a test moves forward, instead of sleeping
    through a wait. Every replica of a test shares it, as replicas share NTP time."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)


@pytest.fixture
def esc_clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def esc_core_factory(
    roles: BotConfigFile, slack: FakeSlackServer, smtp_server: SmtpServer, webhook: WebhookReceiver,
    esc_clock: ShiftedClock,
) -> Iterator[CoreFactory]:
    """Builds cores (replicas) on one fresh PostgreSQL database, scheduler running."""
    started: list[tuple[Core, EscalationScheduler | None]] = []
    with fresh_pg_database() as url:

        def build(policy: dict[str, Any] | None = None, scheduler: bool = True, **env: str) -> Core:
            settings = load_settings({
                "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url, "DATABASE_URL": url,
                "AIA_PAGING_ROUTING_KEY": ROUTING_KEY, "AIA_ESCALATION_POLL_SECONDS": "0.3",
                "AIA_ESCALATION_RETRY_SECONDS": "0.5", "AIA_ESCALATION_LATE_SECONDS": "1",
                "AIA_ESCALATION_LEASE_SECONDS": "5", **smtp_server.env(), **env,
            })
            config = roles.model_copy(update={
                "escalation": EscalationPolicy.model_validate(policy or policy_dict(webhook.url))
            })
            core = build_core(settings, config, clock=esc_clock)
            sched = None
            if scheduler:
                assert core.escalation is not None
                sched = EscalationScheduler(core.escalation, settings.aia_escalation_poll_seconds, 4)
                sched.start()
            started.append((core, sched))
            return core

        yield build
        for core, sched in started:
            if sched is not None:
                sched.stop()
            core.engine.dispose()


@pytest.fixture
def esc_core(esc_core_factory: CoreFactory) -> Core:
    return esc_core_factory()


def thread_texts(slack: FakeSlackServer, channel: str, ts: str) -> list[str]:
    return [m.text for m in slack.thread(channel, ts)[1:]]
