"""The thread's context, with real Prometheus and the local Kubernetes API."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest

from bot.alerts.context import ContextGatherer, expression_from_generator_url, split_comparison
from bot.alerts.runbook import RunbookMap
from bot.alerts.store import AlertView, GroupView
from bot.context import Backends
from bot.procedures import build_registry
from bot.results import Fields, Image, Preformatted, Table, Text
from bot.settings import load_settings


@pytest.mark.parametrize(
    ("expr", "left", "op", "right"),
    [
        ('sum(rate(http_requests_total{status=~"5.."}[5m])) > 0.1', 'sum(rate(http_requests_total{status=~"5.."}[5m]))', ">", "0.1"),
        ('up{job!="x"} == 0', 'up{job!="x"}', "==", "0"),
        ("a > bool 3", "a", ">", "3"),
        ('histogram_quantile(0.95, x) >= 2', "histogram_quantile(0.95, x)", ">=", "2"),
        ('rate(x{a=">"}[1m])', 'rate(x{a=">"}[1m])', None, None),
    ],
)
def test_the_value_to_graph_is_the_left_side_of_the_comparison(expr: str, left: str, op: str | None,
                                                                right: str | None) -> None:
    assert split_comparison(expr) == (left, op, right)


def test_the_expression_comes_from_the_generator_url() -> None:
    url = "http://prom:9090/graph?g0.expr=" + urllib.parse.quote('sum(x{a="b"}) > 1') + "&g0.tab=1"
    assert expression_from_generator_url(url) == 'sum(x{a="b"}) > 1'
    assert expression_from_generator_url("") is None
    assert expression_from_generator_url("http://prom:9090/graph") is None


def _group(pod: str, expr: str) -> GroupView:
    now = datetime.now(UTC)
    url = "http://prom/graph?g0.expr=" + urllib.parse.quote(expr)
    alert = AlertView("HighErrorRate", "firing", "warning", {"alertname": "HighErrorRate", "pod": pod,
                      "namespace": "aia-production"}, {}, now - timedelta(minutes=3), None, url, "f1")
    return GroupView(id=1, status="firing", severity="warning", alertnames=["HighErrorRate"], group_labels={},
                     common_labels={}, common_annotations={}, external_url="", firing_count=1, resolved_count=0,
                     truncated_alerts=0, opened_at=now, updated_at=now, resolved_at=None, channel_id="C",
                     thread_ts="1.1", permalink=None, previous_permalink=None, alerts=[alert])


def test_value_graph_pods_events_and_logs_of_the_worst_pod(prometheus, kube, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"PROMETHEUS_URL": prometheus.url,
                              "KUBECONFIG": kube.write_kubeconfig(str(tmp_path / "kubeconfig"))})
    gatherer = ContextGatherer(settings, Backends(settings), RunbookMap(build_registry()))
    oom_pod = next(p["metadata"]["name"] for p in kube.list("Pod", "aia-production")
                   if p["status"].get("containerStatuses", [{}])[0].get("restartCount", 0) >= 7)
    result = gatherer.gather(_group(oom_pod, 'sum(rate(http_requests_total{status=~"5.."}[1m])) > 0'))
    fields = next(p for p in result.parts if isinstance(p, Fields))
    assert fields.pairs[0][0] == "Expression" and fields.pairs[1][1] != "no data"
    image = next(p for p in result.parts if isinstance(p, Image))
    assert image.png.startswith(b"\x89PNG")
    pods = next(p for p in result.parts if isinstance(p, Table) and p.title == "Pods")
    assert pods.rows[0][0] == oom_pod and "OOMKilled" in pods.rows[0][4]
    assert any(isinstance(p, Text) and "OOMKilled" in p.text for p in result.parts)
    assert any(isinstance(p, Table) and p.title == "Recent events" for p in result.parts)
    assert any(isinstance(p, Preformatted) and oom_pod in (p.title or "") for p in result.parts)
    assert [a.command for a in result.actions][:2] == [
        r'logs --app --grep "error|exception|5\d\d" --since 1h', "top pods --sort cpu"]


def test_one_backend_down_does_not_hide_the_other(kube, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"PROMETHEUS_URL": "http://127.0.0.1:9",
                              "PROMETHEUS_TIMEOUT_SECONDS": "1",
                              "KUBECONFIG": kube.write_kubeconfig(str(tmp_path / "kubeconfig"))})
    gatherer = ContextGatherer(settings, Backends(settings), RunbookMap(build_registry()))
    pod = kube.list("Pod", "aia-production")[0]["metadata"]["name"]
    result = gatherer.gather(_group(pod, "up > 0"))
    assert any(isinstance(p, Text) and p.text.startswith("_Prometheus") for p in result.parts)
    assert any(isinstance(p, Table) and p.title == "Pods" for p in result.parts)
