"""Prometheus procedures: the runbook's key metrics and free PromQL, each with a graph."""

from __future__ import annotations

import math
from typing import Any

from bot.adapters.prometheus import range_points
from bot.graphs import Plot, render_png
from bot.mrkdwn import code_span
from bot.registry import Param, Procedure, ProcedureContext, RiskClass
from bot.results import Fields, Image, Result, Status, Table, Text
from bot.validators import duration, format_duration, promql

SECTION = "Monitoring & Alerting › Prometheus Queries"


def key_queries(namespace: str) -> list[tuple[str, str, str]]:
    """(label, PromQL, unit): the runbook's Prometheus queries, aggregated to read at a glance."""
    ns = f'namespace="{namespace}"'
    return [
        ("Pod memory", f"sum by (pod) (container_memory_usage_bytes{{{ns}}})", "bytes"),
        ("Request rate", f"sum(rate(http_requests_total{{{ns}}}[5m]))", "req/s"),
        ("Error rate (5xx)", f'sum(rate(http_requests_total{{{ns},status=~"5.."}}[5m]))', "req/s"),
        (
            "p95 latency",
            f"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{ns}}}[5m])))",
            "s",
        ),
    ]


def _label(metric: dict[str, str]) -> str:
    inner = ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__")
    name = metric.get("__name__", "")
    return f"{name}{{{inner}}}" if inner or name else "{}"


def _number(value: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "NaN"
    if abs(number) >= 1e6:
        return f"{number:.3g}"
    return f"{number:.4g}"


def _human(value: float, unit: str) -> str:
    if unit == "bytes":
        from bot.procedures.kube_format import human_bytes

        return human_bytes(value)
    if unit == "s":
        return f"{value * 1000:.0f} ms"
    return f"{value:.3g} {unit}"



def metrics(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    window = args["range"]
    prom = ctx.prometheus
    pairs: list[tuple[str, str]] = []
    plots: list[Plot] = []
    for label, query, unit in key_queries(ctx.settings.aia_namespace):
        now = prom.instant(query)
        if not now:
            pairs.append((label, "no data"))
        elif unit == "bytes":
            values = [float(s["value"][1]) for s in now]
            pairs.append((label, f"max {_human(max(values), unit)} over {len(values)} pods"))
        else:
            pairs.append((label, _human(float(now[0]["value"][1]), unit)))
        history = prom.range(query, window)
        plots.append(Plot(title=label, series=[(_label(s["metric"]), range_points(s)) for s in history], unit=unit))
    result = Result(title=f"Key metrics · {ctx.settings.aia_namespace} · last {format_duration(window)}")
    result.add(Fields(pairs))
    result.add(Image(render_png(plots), filename="aia-key-metrics.png", title="Key metrics"))
    result.summary = "; ".join(f"{k}: {v}" for k, v in pairs)
    result.status = Status.INFO
    return result


def query(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    expression = args["promql"]
    window = args["range"]
    prom = ctx.prometheus
    now = prom.instant(expression)
    result = Result(title=f"Query · last {format_duration(window)}", summary=f"{len(now)} series")
    result.add(Text(code_span(expression)))  # what the person typed: escaped, never mrkdwn
    rows = []
    for series in now[:50]:
        if isinstance(series, dict) and "value" in series:
            rows.append([_label(series.get("metric") or {}), _number(series["value"][1])])
    if now and not rows:  # a scalar or string result
        rows.append(["(scalar)", _number(str(now[1] if isinstance(now, list) and len(now) > 1 else now))])
    result.add(Table(["SERIES", "VALUE"], rows, empty_text="no data: the query matched no series"))
    if len(now) > 50:
        result.add(Text(f"_{len(now)} series; showing 50._"))
    if rows and rows[0][0] != "(scalar)":
        history = prom.range(expression, window)
        plot = Plot(title=expression[:90], series=[(_label(s["metric"]), range_points(s)) for s in history])
        result.add(Image(render_png([plot]), filename="query.png", title=expression[:150]))
    return result


PROCEDURES = [
    Procedure(
        name="metrics",
        kube=(),  # no Kubernetes
        summary="Key metrics: pod memory, request rate, error rate, p95 latency, with a graph",
        risk=RiskClass.READ,
        runbook=(SECTION, "Monitoring & Alerting › Key Metrics to Monitor"),
        run=metrics,
        params=(Param("range", "option", "graph window", metavar="DURATION", default=3600,
                      convert=duration(7 * 86400)),),
    ),
    Procedure(
        name="query",
        kube=(),  # no Kubernetes
        summary="Evaluate PromQL now and graph it",
        risk=RiskClass.READ,
        runbook=(SECTION,),
        run=query,
        params=(
            Param("promql", "rest", "PromQL expression", metavar="PROMQL", required=True, convert=promql),
            Param("range", "option", "graph window", metavar="DURATION", default=3600, convert=duration(7 * 86400)),
        ),
        examples=('/aia query rate(http_requests_total{status=~"5.."}[5m]) --range 6h',),
    ),
]
