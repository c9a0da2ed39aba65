"""An alert service on SQLite or real PostgreSQL, with the local Slack and Kubernetes servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.events import AlertGroupChanged, AlertGroupOpened, AlertGroupResolved
from sandbox.slack_server import FakeSlackServer
from tests.conftest import fresh_pg_database
from tests.harness.users import CHANNEL_ID


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/alerts.db"
    else:
        with fresh_pg_database() as url:
            yield url


def make_core(env: dict[str, str], database_url: str, roles: Any, **settings: str):  # type: ignore[no-untyped-def]
    from bot.core import build_core
    from bot.settings import load_settings
    from handlers.render_alerts import BlockKitAlertRenderer

    loaded = load_settings({
        **env, "DATABASE_URL": database_url, "AIA_ALERT_CHANNEL": CHANNEL_ID,
        "AIA_OUTBOX_POST_INTERVAL_SECONDS": "0.05", "AIA_OUTBOX_POLL_SECONDS": "0.05", **settings,
    })
    return build_core(loaded, roles, alert_renderer=BlockKitAlertRenderer(loaded))


class Recorder:
    def __init__(self, core: Any) -> None:
        self.events: list[object] = []
        for kind in (AlertGroupOpened, AlertGroupChanged, AlertGroupResolved):
            core.events.subscribe(kind, self.events.append)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def alert_core(bot_env: dict[str, str], database_url: str, roles: Any):  # type: ignore[no-untyped-def]
    core = make_core(bot_env, database_url, roles)
    yield core
    assert core.alerts is not None
    core.alerts.outbox.stop()
    core.engine.dispose()


@pytest.fixture
def sqlite_core(bot_env: dict[str, str], tmp_path: Path, roles: Any):  # type: ignore[no-untyped-def]
    core = make_core(bot_env, f"sqlite:///{tmp_path}/one.db", roles)
    yield core
    assert core.alerts is not None
    core.alerts.outbox.stop()
    core.engine.dispose()


def parents(slack: FakeSlackServer) -> list[Any]:
    return [m for m in slack.messages(CHANNEL_ID) if not m.is_reply and "storm" not in m.text.lower()]
