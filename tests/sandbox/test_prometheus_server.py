"""The sandbox Prometheus, through the bot's own Prometheus adapter (the real client library)."""

from __future__ import annotations

import pytest

from bot.adapters.prometheus import PrometheusGateway, range_points
from bot.errors import UserError
from bot.procedures.metrics import key_queries
from sandbox.prometheus_server import FakePrometheusServer, SandboxPrometheus

NS = "aia-production"
PODS = ["aia-api-blue-1", "aia-api-blue-2", "aia-api-green-1"]


@pytest.fixture
def gateway():  # type: ignore[no-untyped-def]
    server = FakePrometheusServer(SandboxPrometheus(NS, PODS, crashing=["aia-api-blue-2"])).start()
    yield PrometheusGateway(server.url, 10)
    server.stop()


def test_the_runbook_key_metrics_have_data_and_history(gateway) -> None:  # type: ignore[no-untyped-def]
    for label, query, _unit in key_queries(NS):
        now = gateway.instant(query)
        assert now, label
        history = gateway.range(query, 3600)
        assert history and len(range_points(history[0])) >= 100, label
    memory = {s["metric"]["pod"]: float(s["value"][1]) for s in gateway.instant(key_queries(NS)[0][1])}
    assert set(memory) == set(PODS)
    assert memory["aia-api-blue-2"] == max(memory.values())  # the crash-looping pod climbs to its limit
    errors = float(gateway.instant(key_queries(NS)[2][1])[0]["value"][1])
    assert errors > 0.1  # the incident the sandbox tells: HighErrorRate's threshold


def test_selectors_aggregations_and_comparisons(gateway) -> None:  # type: ignore[no-untyped-def]
    per_pod = gateway.instant('rate(http_requests_total{status=~"5..", pod!="aia-api-blue-1"}[5m])')
    assert sorted(s["metric"]["pod"] for s in per_pod) == ["aia-api-blue-2", "aia-api-green-1"]
    by_status = gateway.instant("sum by (status) (rate(http_requests_total[5m]))")
    assert sorted(s["metric"]["status"] for s in by_status) == ["200", "401", "500"]
    assert gateway.instant("sum(rate(http_requests_total[5m])) > 1000000") == []
    assert len(gateway.instant("up")) == 4
    firing = gateway.firing_alerts()
    assert {s["metric"]["alertname"] for s in firing} == {"HighErrorRate", "PodCrashLooping"}


def test_what_it_cannot_evaluate_is_a_clear_user_error(gateway) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError) as bad:
        gateway.instant("sum(rate(http_requests_total[5m])")
    assert "the sandbox Prometheus understands" in bad.value.message
