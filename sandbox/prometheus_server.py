"""A local Prometheus HTTP API with the AIA system's key metrics, for the console sandbox.

It answers ``/api/v1/query``, ``/api/v1/query_range``, ``/api/v1/alerts``, ``/api/v1/rules``
and ``/-/healthy`` in Prometheus' JSON format, so the bot's real Prometheus client talks to it
unchanged. The series tell the sandbox cluster's story: steady traffic with a daily swing,
5xx errors and p95 latency climbing over the last 20 minutes (HighErrorRate fires), and the
crash-looping pod's memory climbing to its limit again and again.

It evaluates the PromQL the runbook and the bot use, not all of PromQL: instant selectors with
``=``, ``!=``, ``=~``, ``!~`` matchers; ``rate``, ``irate`` and ``increase`` over a range;
``sum``, ``avg``, ``max``, ``min``, ``count`` with ``by (...)``; ``histogram_quantile``; and a
comparison with a number (``> 0.1``). Anything else is answered as Prometheus answers a query
it cannot parse (400, ``bad_data``), saying what the sandbox understands. The tests use a real
Prometheus; this exists so a newcomer can try ``/aia metrics`` and ``/aia query`` anywhere.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Labels = dict[str, str]
# (labels, value at time t): a gauge's value, or a counter's per-second rate.
RateOrValue = Callable[[float], float]

SUPPORTED = ("the sandbox Prometheus understands selectors with =, !=, =~, !~; rate, irate, increase; "
             "sum, avg, max, min, count with by (...); histogram_quantile; and a comparison with a number")
MEMORY_LIMIT = 1024 * 1024 * 1024
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf")


class PromQLError(ValueError):
    pass


@dataclass(frozen=True)
class Raw:
    labels: Labels
    counter: bool
    fn: RateOrValue


class SandboxPrometheus:
    """The series and a small PromQL evaluator over them (no HTTP: see FakePrometheusServer)."""

    def __init__(self, namespace: str, api_pods: list[str], crashing: list[str] | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.now = now
        # The story is anchored at the moment the sandbox starts: the incident began 20 minutes earlier.
        self.incident_start = now() - 20 * 60
        self.origin = now() - 6 * 3600
        self.series: list[Raw] = []
        crashing = crashing or []
        for index, pod in enumerate(api_pods):
            self._api_pod(pod, index, pod in crashing)
        for job in ("aia-api", "kube-state-metrics", "node-exporter", "prometheus"):
            self.series.append(Raw({"__name__": "up", "job": job, "namespace": namespace}, False, lambda t: 1.0))
        for pod in crashing:
            self.series.append(Raw({"__name__": "kube_pod_container_status_restarts_total", "namespace": namespace,
                                    "pod": pod, "container": "api"}, True, lambda t: 7 / 3 / 3600))

    # -- the story ------------------------------------------------------------------------
    def _incident(self, t: float) -> float:
        """0 before the incident, rising to 1 over its first 5 minutes."""
        return min(1.0, max(0.0, (t - self.incident_start) / 300))

    def _traffic(self, t: float, share: float) -> float:
        return share * 40 * (1 + 0.25 * math.sin(2 * math.pi * t / 86400) + 0.05 * math.sin(t / 97))

    def _api_pod(self, pod: str, index: int, crashing: bool) -> None:
        ns = self.namespace
        share = 1 / 4

        def ok(t: float) -> float:
            return self._traffic(t, share) * (1 - 0.02 - 0.06 * self._incident(t))

        def errors(t: float) -> float:
            return self._traffic(t, share) * (0.002 + 0.06 * self._incident(t))

        def unauthorized(t: float) -> float:
            return self._traffic(t, share) * 0.018

        for status, fn in (("200", ok), ("500", errors), ("401", unauthorized)):
            self.series.append(Raw({"__name__": "http_requests_total", "namespace": ns, "pod": pod,
                                    "job": "aia-api", "method": "GET", "status": status}, True, fn))

        def mean_latency(t: float) -> float:
            return 0.06 + 0.25 * self._incident(t) + 0.01 * math.sin(t / 53 + index)

        for le in BUCKETS:
            bound = math.inf if le == "+Inf" else float(le)

            def bucket(t: float, bound: float = bound) -> float:
                total = self._traffic(t, share)
                return total if math.isinf(bound) else total * (1 - math.exp(-bound / mean_latency(t)))

            self.series.append(Raw({"__name__": "http_request_duration_seconds_bucket", "namespace": ns,
                                    "pod": pod, "job": "aia-api", "le": le}, True, bucket))

        def memory(t: float) -> float:
            if crashing:  # climbs to the limit in ~7 minutes, OOMKilled, starts again
                return MEMORY_LIMIT * (0.55 + 0.45 * ((t % 420) / 420))
            return (310 + 15 * index + 12 * math.sin(t / 600 + index)) * 1024 * 1024

        self.series.append(Raw({"__name__": "container_memory_usage_bytes", "namespace": ns, "pod": pod,
                                "container": "api"}, False, memory))

    def alerts(self) -> list[dict[str, Any]]:
        """What the runbook's rules make fire now, as /api/v1/alerts lists it."""
        at = self.now()
        firing = []
        error_rate = self.evaluate(
            f'sum(rate(http_requests_total{{namespace="{self.namespace}",status=~"5.."}}[5m]))', at)
        if error_rate and error_rate[0][1] > 0.1:
            firing.append(({"alertname": "HighErrorRate", "severity": "warning", "namespace": self.namespace},
                           error_rate[0][1]))
        for labels, value in self.evaluate(
                f'increase(kube_pod_container_status_restarts_total{{namespace="{self.namespace}"}}[15m])', at):
            if value > 0:
                firing.append(({"alertname": "PodCrashLooping", "severity": "warning",
                                "namespace": self.namespace, "pod": labels.get("pod", "")}, value))
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.incident_start + 300))
        return [{"labels": labels, "annotations": {}, "state": "firing", "activeAt": started, "value": str(value)}
                for labels, value in firing]

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, query: str, at: float) -> list[tuple[Labels, float]]:
        query = query.strip()
        if re.fullmatch(r'ALERTS\s*(\{\s*alertstate\s*=\s*"firing"\s*\})?', query):
            return [({"__name__": "ALERTS", "alertstate": "firing", **a["labels"]}, 1.0) for a in self.alerts()]
        parser = _Parser(query)
        node = parser.expression()
        parser.end()
        return node(self, at)

    def select(self, name: str, matchers: list[tuple[str, str, str]]) -> list[Raw]:
        chosen = []
        for raw in self.series:
            if raw.labels.get("__name__") != name:
                continue
            if all(_matches(raw.labels.get(key, ""), op, value) for key, op, value in matchers):
                chosen.append(raw)
        return chosen

    def value(self, raw: Raw, at: float) -> float:
        if not raw.counter:
            return raw.fn(at)
        step = 300.0
        steps = max(1, int((at - self.origin) / step))
        return sum(raw.fn(self.origin + (i + 0.5) * step) for i in range(steps)) * step

    def rate(self, raw: Raw, at: float, window: float) -> float:
        samples = 6
        return sum(raw.fn(at - window * (i + 0.5) / samples) for i in range(samples)) / samples


def _matches(actual: str, op: str, wanted: str) -> bool:
    if op == "=":
        return actual == wanted
    if op == "!=":
        return actual != wanted
    found = re.fullmatch(wanted, actual) is not None
    return found if op == "=~" else not found


Node = Callable[[SandboxPrometheus, float], list[tuple[Labels, float]]]
_TOKEN = re.compile(r'\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)|(?P<string>"(?:[^"\\]|\\.)*")'
                    r'|(?P<duration>\[\d+[smhd]\])|(?P<op>=~|!~|!=|==|>=|<=|[=(){},><]))')
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum, "avg": lambda v: sum(v) / len(v), "max": max, "min": min, "count": lambda v: float(len(v)),
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None:
                raise PromQLError(f"unexpected character at position {position}; {SUPPORTED}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token_kind, token = self.peek()
        if (value is not None and token != value) or (kind is not None and token_kind != kind):
            raise PromQLError(f"unexpected {token or 'end of query'!r}; {SUPPORTED}")
        self.index += 1
        return token

    def end(self) -> None:
        if self.peek()[0] != "end":
            raise PromQLError(f"unexpected {self.peek()[1]!r}; {SUPPORTED}")

    def expression(self) -> Node:
        left = self.term()
        if self.peek()[1] in (">", "<", ">=", "<=", "==", "!="):
            op = self.take()
            threshold = float(self.take(kind="number"))
            compare = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__,
                       "==": float.__eq__, "!=": float.__ne__}[op]
            return lambda prom, at: [(labels, v) for labels, v in left(prom, at) if compare(float(v), threshold)]
        return left

    def labels_list(self) -> list[str]:
        self.take("(")
        names = []
        while self.peek()[1] != ")":
            names.append(self.take(kind="name"))
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return names

    def term(self) -> Node:
        kind, word = self.peek()
        if kind != "name":
            raise PromQLError(f"unexpected {word or 'end of query'!r}; {SUPPORTED}")
        if word in _AGGREGATIONS:
            self.take()
            by = self.labels_list() if self.peek()[1] == "by" and self.take() else None
            self.take("(")
            inner = self.expression()
            self.take(")")
            if by is None and self.peek()[1] == "by":
                self.take()
                by = self.labels_list()
            return _aggregate(_AGGREGATIONS[word], by or [], inner)
        if word in ("rate", "irate", "increase"):
            self.take()
            self.take("(")
            name, matchers = self.selector()
            window = self.take(kind="duration")
            self.take(")")
            seconds = int(window[1:-2]) * _SECONDS[window[-2]]
            return _rate(name, matchers, seconds, word == "increase")
        if word == "histogram_quantile":
            self.take()
            self.take("(")
            quantile = float(self.take(kind="number"))
            self.take(",")
            inner = self.expression()
            self.take(")")
            return _histogram_quantile(quantile, inner)
        name, matchers = self.selector()
        if self.peek()[0] == "duration":
            raise PromQLError("a range vector cannot be shown; wrap it in rate(...) or increase(...)")
        return lambda prom, at: [({k: v for k, v in r.labels.items()}, prom.value(r, at))
                                 for r in prom.select(name, matchers)]

    def selector(self) -> tuple[str, list[tuple[str, str, str]]]:
        name = self.take(kind="name")
        matchers: list[tuple[str, str, str]] = []
        if self.peek()[1] == "{":
            self.take("{")
            while self.peek()[1] != "}":
                key = self.take(kind="name")
                op = self.take()
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"unexpected {op!r} after {key}; {SUPPORTED}")
                matchers.append((key, op, json.loads(self.take(kind="string"))))
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
        return name, matchers


def _rate(name: str, matchers: list[tuple[str, str, str]], window: int, increase: bool) -> Node:
    def run(prom: SandboxPrometheus, at: float) -> list[tuple[Labels, float]]:
        out = []
        for raw in prom.select(name, matchers):
            labels = {k: v for k, v in raw.labels.items() if k != "__name__"}
            per_second = prom.rate(raw, at, window) if raw.counter else 0.0
            out.append((labels, per_second * window if increase else per_second))
        return out

    return run


def _aggregate(combine: Callable[[list[float]], float], by: list[str], inner: Node) -> Node:
    def run(prom: SandboxPrometheus, at: float) -> list[tuple[Labels, float]]:
        groups: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for labels, value in inner(prom, at):
            key = tuple((k, labels.get(k, "")) for k in by)
            groups.setdefault(key, []).append(value)
        return [({k: v for k, v in key if v}, float(combine(values))) for key, values in groups.items()]

    return run


def _histogram_quantile(quantile: float, inner: Node) -> Node:
    """Prometheus' interpolation inside the bucket the quantile falls into."""

    def run(prom: SandboxPrometheus, at: float) -> list[tuple[Labels, float]]:
        groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for labels, value in inner(prom, at):
            if "le" not in labels:
                continue
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            groups.setdefault(key, []).append((float(labels["le"]), value))
        out = []
        for key, buckets in groups.items():
            buckets.sort()
            total = buckets[-1][1]
            if total <= 0:
                continue
            rank = quantile * total
            lower_bound, lower_count = 0.0, 0.0
            for bound, count in buckets:
                if count >= rank:
                    if math.isinf(bound):
                        value = lower_bound
                    else:
                        share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
                        value = lower_bound + (bound - lower_bound) * share
                    out.append((dict(key), value))
                    break
                lower_bound, lower_count = bound, count
        return out

    return run


def _vector(result: list[tuple[Labels, float]], at: float) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [at, _text(value)]} for labels, value in result]


def _text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class FakePrometheusServer:
    """The HTTP side: ``start()``, ``url``, ``stop()``, like the other sandbox servers."""

    def __init__(self, prometheus: SandboxPrometheus) -> None:
        self.prometheus = prometheus
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FakePrometheusServer:
        prometheus = self.prometheus

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(urllib.parse.urlsplit(self.path).query)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length).decode())

            def _answer(self, raw_query: str) -> None:
                path = urllib.parse.urlsplit(self.path).path
                params = {k: v[-1] for k, v in urllib.parse.parse_qs(raw_query).items()}
                try:
                    status, body = 200, self._route(path, params)
                except PromQLError as exc:
                    status, body = 400, {"status": "error", "errorType": "bad_data", "error": str(exc)}
                except (KeyError, ValueError) as exc:
                    status, body = 400, {"status": "error", "errorType": "bad_data", "error": f"invalid parameter {exc}"}
                if body is None:
                    status, body = 404, {"status": "error", "errorType": "not_found", "error": "not found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
                if path in ("/-/healthy", "/-/ready"):
                    return {"status": "success"}
                if path == "/api/v1/query":
                    at = float(params.get("time") or prometheus.now())
                    result = prometheus.evaluate(params["query"], at)
                    return {"status": "success", "data": {"resultType": "vector", "result": _vector(result, at)}}
                if path == "/api/v1/query_range":
                    return {"status": "success", "data": {"resultType": "matrix", "result": _matrix(params)}}
                if path == "/api/v1/alerts":
                    return {"status": "success", "data": {"alerts": prometheus.alerts()}}
                if path == "/api/v1/rules":
                    alerts = prometheus.alerts()
                    rules = [{"name": a["labels"]["alertname"], "type": "alerting", "state": "firing",
                              "labels": {"severity": a["labels"]["severity"]}, "alerts": [a]} for a in alerts]
                    return {"status": "success", "data": {"groups": [{"name": "aia", "rules": rules}]}}
                return None

        def _matrix(params: dict[str, str]) -> list[dict[str, Any]]:
            start, end = _time(params["start"]), _time(params["end"])
            step = _step(params["step"])
            if step <= 0 or (end - start) / step > 11000:
                raise PromQLError("exceeded maximum resolution of 11,000 points per timeseries")
            series: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
            at = start
            while at <= end:
                for labels, value in prometheus.evaluate(params["query"], at):
                    series.setdefault(tuple(sorted(labels.items())), []).append([at, _text(value)])
                at += step
            return [{"metric": dict(key), "values": values} for key, values in series.items()]

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sandbox-prometheus", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        from datetime import datetime

        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _step(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if match is None:
        raise ValueError("step")
    return float(match.group(1)) * _SECONDS.get(match.group(2) or "s", 1)
