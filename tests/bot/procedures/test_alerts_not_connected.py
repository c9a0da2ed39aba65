"""`/aia alerts` never reports health it cannot know: without Alertmanager it says so."""

from __future__ import annotations

import socket
from typing import Any

from bot.results import Status
from bot.service import OutcomeKind
from tests.bot.alerts.conftest import make_core
from tests.harness.calls import run_as


def _closed_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return int(free.getsockname()[1])


def _alerts(env: dict[str, str], tmp_path: Any, roles: Any, **settings: str) -> Any:
    # "Connected" means Alertmanager has a webhook token to send with; the shared fixture sets one.
    env = {k: v for k, v in env.items() if k != "ALERTMANAGER_WEBHOOK_TOKEN"}
    core = make_core(env, f"sqlite:///{tmp_path}/alerts.db", roles, **settings)
    try:
        outcome = run_as(core, "viewer", "alerts")
    finally:
        core.engine.dispose()
    assert outcome.kind is OutcomeKind.OK, outcome.message
    return outcome.result, " ".join(str(getattr(p, "text", p)) for p in outcome.result.parts)


def test_no_alertmanager_and_no_prometheus_is_unknown_not_ok(bot_env, tmp_path, roles) -> None:  # type: ignore[no-untyped-def]
    result, text = _alerts(bot_env, tmp_path, roles)
    assert result.status is Status.WARNING and result.title == "Firing alerts: unknown"
    assert "Nothing is firing" not in text
    assert "ALERTMANAGER_WEBHOOK_TOKEN is not set" in text and "PROMETHEUS_URL is not set" in text


def test_no_alertmanager_and_prometheus_down_is_unknown(bot_env, tmp_path, roles) -> None:  # type: ignore[no-untyped-def]
    result, text = _alerts(bot_env, tmp_path, roles, PROMETHEUS_URL=f"http://127.0.0.1:{_closed_port()}")
    assert result.status is Status.WARNING and result.title == "Firing alerts: unknown"
    assert "did not answer" in text and "Nothing is firing" not in text


def test_no_alertmanager_asks_prometheus_and_says_where_the_answer_came_from(  # type: ignore[no-untyped-def]
        bot_env, tmp_path, roles, prometheus) -> None:
    result, text = _alerts(bot_env, tmp_path, roles, PROMETHEUS_URL=prometheus.url)
    firing = prometheus.wait_for('ALERTS{alertstate="firing"}')  # the test data makes its rules fire
    after = _alerts(bot_env, tmp_path, roles, PROMETHEUS_URL=prometheus.url)[0]
    assert "unknown" not in result.title and "From Prometheus. Alertmanager is not connected" in text
    assert after.title.startswith("Firing alerts · ") and after.status is not Status.OK
    assert firing[0]["metric"]["alertname"] in str(after.parts)


def test_with_alertmanager_connected_nothing_firing_is_ok(bot_env, tmp_path, roles) -> None:  # type: ignore[no-untyped-def]
    result, text = _alerts(bot_env, tmp_path, roles, ALERTMANAGER_WEBHOOK_TOKEN="am-token-0123456789")
    assert result.status is Status.OK and text == "Nothing is firing."
