"""Prometheus procedures against a real Prometheus."""

from __future__ import annotations

import pytest

from bot.core import build_core
from bot.results import Fields, Image, Table
from bot.service import OutcomeKind
from bot.settings import load_settings
from tests.harness.calls import run_as


@pytest.fixture
def prom_core(bot_env, roles, prometheus):  # type: ignore[no-untyped-def]
    core = build_core(load_settings({**bot_env, "PROMETHEUS_URL": prometheus.url}), roles)
    yield core
    core.engine.dispose()


def test_key_metrics_have_values_and_a_graph(prom_core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(prom_core, "viewer", "metrics")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    pairs = dict(next(p for p in outcome.result.parts if isinstance(p, Fields)).pairs)
    assert pairs["Request rate"].endswith("req/s") and pairs["Request rate"] != "no data"
    assert pairs["Error rate (5xx)"] != "no data"
    assert "over 3 pods" in pairs["Pod memory"]
    assert pairs["p95 latency"].endswith("ms")
    image = next(p for p in outcome.result.parts if isinstance(p, Image))
    assert image.png.startswith(b"\x89PNG\r\n\x1a\n") and len(image.png) > 5000


def test_query_returns_series_and_graph(prom_core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(prom_core, "viewer", 'query sum by (status) (rate(http_requests_total{status=~"5.."}[1m])) --range 10m')
    assert outcome.kind is OutcomeKind.OK, outcome.message
    table = next(p for p in outcome.result.parts if isinstance(p, Table))
    assert table.rows and 'status=500' in table.rows[0][0]
    assert any(isinstance(p, Image) for p in outcome.result.parts)


def test_comparison_from_slack_is_unescaped_upstream_and_works(prom_core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(prom_core, "viewer", "query sum(rate(http_requests_total[1m])) > 0")
    assert outcome.kind is OutcomeKind.OK, outcome.message


def test_invalid_promql_is_a_user_error(prom_core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(prom_core, "viewer", "query rate(http_requests_total[5m]")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "Prometheus rejected the query" in outcome.message
    assert "/aia query PROMQL" in (outcome.usage or "")


def test_status_lists_firing_alerts(prom_core, prometheus) -> None:  # type: ignore[no-untyped-def]
    prometheus.wait_for('ALERTS{alertname="TestHighErrorRate",alertstate="firing"}')
    outcome = run_as(prom_core, "viewer", "status")
    alerts = next(p for p in outcome.result.parts if isinstance(p, Table) and p.title == "Firing alerts")
    assert [row[0] for row in alerts.rows] == ["TestHighErrorRate"]


def test_prometheus_down_is_a_clear_failure(bot_env, roles) -> None:  # type: ignore[no-untyped-def]
    from tests.harness.bot_process import free_port

    core = build_core(load_settings({**bot_env, "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}), roles)
    outcome = run_as(core, "viewer", "metrics")
    assert outcome.kind is OutcomeKind.FAILED
    assert "did not answer" in outcome.message
