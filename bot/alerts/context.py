"""What an on-call engineer looks at first, gathered into the alert's thread.

The expression's current value and a 1-hour graph (from generatorURL, or the rules API),
the pods the alert's labels point to with readiness, restarts and last termination
(OOMKilled called out), their recent events, and the last log lines of the worst pod.
Each part fails on its own: Prometheus being down must not hide the pods, and the other
way round. Runs on an outbox task thread, never on the webhook path.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from bot.adapters.prometheus import range_points
from bot.alerts.payload import AlertStatus
from bot.alerts.runbook import RunbookMap
from bot.alerts.store import GroupView
from bot.context import Backends
from bot.errors import BackendUnavailable, ConfigurationError, UserError
from bot.procedures import kube_format as kf
from bot.redaction import redact
from bot.registry import can
from bot.results import Fields, Image, Preformatted, Result, Status, Table, Text
from bot.settings import Settings

log = logging.getLogger(__name__)
MAX_PODS = 10
MAX_EVENTS = 15
INLINE_ALERTS = 10
_COMPARISON = re.compile(r"(>=|<=|==|!=|>|<)")
# What the thread reads in Kubernetes (checked against the Role with the procedures' rights:
# tests/test_least_privilege.py).
KUBE_ACCESS = (
    can("get,list", "pods"),
    can("get", "deployments", "apps"),
    can("list", "events"),
    can("get", "pods/log"),
)


def expression_from_generator_url(url: str) -> str | None:
    """Prometheus links an alert to ``/graph?g0.expr=<expr>``."""
    if not url:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    values = query.get("g0.expr") or query.get("expr")
    return values[0].strip() if values and values[0].strip() else None


def split_comparison(expr: str) -> tuple[str, str | None, str | None]:
    """``sum(rate(x[5m])) > 0.1`` → (``sum(rate(x[5m]))``, ``>``, ``0.1``): the value to graph
    is the left side; only a comparison outside brackets, braces and quotes counts."""
    depth, quote, i = 0, "", 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            match = _COMPARISON.match(expr, i)
            if match:
                left, right = expr[:i].strip(), expr[match.end():].strip()
                right = re.sub(r"^bool\s+", "", right)
                return left, match.group(1), right
        i += 1
    return expr.strip(), None, None


def _rule_expression(backends: Backends, alertname: str) -> str | None:
    """Fallback when generatorURL holds no expression: Prometheus's rules API."""
    prom = backends.prometheus
    session = prom._prom._session  # prometheus-api-client has no rules call; reuse its session
    response = session.get(f"{prom.url}/api/v1/rules", params={"type": "alert"}, timeout=5)
    response.raise_for_status()
    for group in response.json().get("data", {}).get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("name") == alertname and rule.get("query"):
                return str(rule["query"])
    return None


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}"


def _series_label(metric: dict[str, str]) -> str:
    inner = ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__")
    return inner or metric.get("__name__", "value")


class ContextGatherer:
    def __init__(self, settings: Settings, backends: Backends, runbook: RunbookMap,
                 draw: Callable[..., bytes] | None = None) -> None:
        self.settings = settings
        self.backends = backends
        self.runbook = runbook
        self._draw = draw

    def gather(self, group: GroupView) -> Result:
        result = Result(title=f"Context · {group.title}"[:150],
                        status=Status.CRITICAL if group.severity == "critical" else Status.WARNING)
        labels = self._labels(group)
        self._guarded(result, "Prometheus", lambda: self._prometheus(result, group))
        self._guarded(result, "Kubernetes", lambda: self._kubernetes(result, labels))
        if len(group.alerts) > INLINE_ALERTS:
            result.add(Table(
                ["ALERT", "STATUS", "SINCE", "LABELS"],
                [[a.alertname, a.status, a.starts_at.strftime("%H:%M:%S"),
                  ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k != "alertname")]
                 for a in group.alerts],
                title=f"All {len(group.alerts)} alerts",
            ))
        result.actions = self.runbook.actions(group.alertnames, labels)
        if result.actions:
            result.add(Text("*Runbook steps* (they run as you, with your role):"))
        result.summary = f"context for alert group {group.id}"
        return result

    @staticmethod
    def _labels(group: GroupView) -> dict[str, str]:
        """Labels shared by the group, then the first firing alert's (for POD and friends)."""
        firing = [a for a in group.alerts if a.status == AlertStatus.FIRING] or group.alerts
        labels = dict(firing[0].labels) if firing else {}
        labels.update(group.common_labels)
        return labels

    @staticmethod
    def _guarded(result: Result, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (BackendUnavailable, ConfigurationError, UserError) as exc:
            text = exc.message if isinstance(exc, UserError) else str(exc)
            result.add(Text(f"_{what}: {redact(text)[:300]}_"))
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others
            log.warning("alert context: %s part failed: %s", what, type(exc).__name__, exc_info=True)
            result.add(Text(f"_{what}: could not be read ({type(exc).__name__})._"))

    # -- Prometheus -----------------------------------------------------------
    def _prometheus(self, result: Result, group: GroupView) -> None:
        expr = None
        for alert in group.alerts:
            expr = expression_from_generator_url(alert.generator_url)
            if expr:
                break
        if expr is None and group.alertnames:
            expr = _rule_expression(self.backends, group.alertnames[0])
        if expr is None:
            result.add(Text("_Prometheus: no expression for this alert (no generatorURL, no matching rule)._"))
            return
        value_expr, op, threshold = split_comparison(expr)
        prom = self.backends.prometheus
        now = prom.instant(value_expr)
        values = [(_series_label(s.get("metric") or {}), _number(s["value"][1]))
                  for s in now[:5] if isinstance(s, dict) and "value" in s]
        pairs = [("Expression", f"`{expr[:500]}`")]
        pairs += [(label[:100] or "value", value) for label, value in values] or [("Value now", "no data")]
        if len(now) > 5:
            pairs.append(("Series", f"{len(now)} (5 shown)"))
        result.add(Fields(pairs[:10]))
        history = prom.range(value_expr, 3600)
        series = [(_series_label(s.get("metric") or {}), range_points(s)) for s in history]
        limit = _float(threshold) if op else None
        if limit is not None and series and series[0][1]:
            first, last = series[0][1][0][0], series[0][1][-1][0]
            series.append((f"threshold {op} {threshold}", [(first, limit), (last, limit)]))
        from bot.graphs import Plot, render_png

        draw = self._draw or render_png
        png = draw([Plot(title=value_expr[:90], series=series)])
        result.add(Image(png, filename="alert-1h.png", title=f"{group.title}: last hour"[:150]))

    # -- Kubernetes -----------------------------------------------------------
    def _kubernetes(self, result: Result, labels: dict[str, str]) -> None:
        namespace = labels.get("namespace")
        if namespace and namespace != self.settings.aia_namespace:
            result.add(Text(f"_Pods: the alert is about namespace `{namespace}`; the bot reads only "
                            f"`{self.settings.aia_namespace}`._"))
            return
        pods = self._pods(labels)
        if pods is None:
            return
        if not pods:
            result.add(Text("_Pods: none found for the alert's labels._"))
            return
        rows, oom = [], []
        for pod in pods:
            terminations = [kf.last_termination(c) for c in kf.container_statuses(pod)]
            last = ", ".join(t for t in terminations if t) or "-"
            if "OOMKilled" in last:
                oom.append(kf.name_of(pod))
            rows.append([kf.name_of(pod), "{}/{}".format(*kf.ready_count(pod)), kf.status_text(pod),
                         str(kf.restarts(pod)), last])
        result.add(Table(["POD", "READY", "STATUS", "RESTARTS", "LAST TERMINATION"], rows, title="Pods"))
        if oom:
            result.status = Status.CRITICAL
            result.add(Text(f":boom: *OOMKilled*: {', '.join(oom)} — the memory limit is too low or the app leaks."))
        self._events(result, pods)
        self._worst_log(result, pods)

    def _pods(self, labels: dict[str, str]) -> list[dict[str, Any]] | None:
        kube = self.backends.kube
        if labels.get("pod"):
            try:
                return [kube.pod(labels["pod"])]
            except UserError:
                return []
        if labels.get("deployment"):
            deployment = kube.deployment(labels["deployment"])
            match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
            return kube.pods(selector=selector)[:MAX_PODS] if selector else []
        return None

    def _events(self, result: Result, pods: list[dict[str, Any]]) -> None:
        events: list[dict[str, Any]] = []
        for pod in pods[:5]:
            events += self.backends.kube.events(field_selector=f"involvedObject.name={kf.name_of(pod)}")
        events.sort(key=lambda e: kf.event_time(e) or "", reverse=True)
        rows = [[kf.age(kf.event_time(e)), str(e.get("type") or "-"), str(e.get("reason") or "-"),
                 (e.get("involvedObject") or {}).get("name", "?"),
                 redact(str(e.get("message") or "").replace("\n", " "))[:200]]
                for e in events[:MAX_EVENTS]]
        result.add(Table(["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows, title="Recent events",
                         empty_text="no events"))

    def _worst_log(self, result: Result, pods: list[dict[str, Any]]) -> None:
        lines = self.settings.aia_alert_log_lines
        if lines <= 0:
            return
        worst = sorted(pods, key=lambda p: (kf.is_ready(p), -kf.restarts(p)))[0]
        name = kf.name_of(worst)
        text = self.backends.kube.pod_log(name, tail_lines=lines, limit_bytes=256 * 1024)
        shown = "\n".join(redact(text).splitlines()[-lines:])
        result.add(Preformatted(shown or "(empty log)", filename=f"{name}.log",
                                title=f"Last {lines} log lines of {name}"))



def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
