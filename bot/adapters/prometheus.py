"""Prometheus through prometheus-api-client."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from bot.errors import BackendUnavailable, UserError

Series = list[dict[str, Any]]


def _prometheus_error(exc: PrometheusApiClientException) -> tuple[int | None, str]:
    text = str(exc)
    status_match = re.search(r"HTTP Status Code (\d+)", text)
    status = int(status_match.group(1)) if status_match else None
    body = re.search(r"\((b?)'(.*)'\)\s*$", text, re.S)
    message = text
    if body:
        raw = body.group(2).encode().decode("unicode_escape")
        try:
            message = json.loads(raw).get("error", raw)
        except ValueError:
            message = raw
    return status, message


def range_points(series: dict[str, Any]) -> list[tuple[float, float]]:
    """(unix time, value) pairs of one range-query series; NaN-like strings are skipped."""
    points = []
    for t, v in series.get("values") or []:
        try:
            points.append((float(t), float(v)))
        except (TypeError, ValueError):
            continue
    return points


class PrometheusGateway:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        # One quick retry only: a human is waiting in Slack.
        retry = Retry(total=1, backoff_factor=0.2, status_forcelist=[502, 503, 504])
        self._prom = PrometheusConnect(url=url, disable_ssl=False, retry=retry, timeout=int(max(1, timeout)))

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrometheusApiClientException as exc:
            status, message = _prometheus_error(exc)
            if status in (400, 422):
                raise UserError(
                    f"Prometheus rejected the query: {message[:300]}",
                    "Usage: `/aia query PROMQL [--range 1h]`, e.g. "
                    "`/aia query rate(http_requests_total[5m])`",
                ) from None
            raise BackendUnavailable(f"Prometheus answered {status} while {what}") from None
        except requests.RequestException as exc:
            raise BackendUnavailable(
                f"Prometheus at {self.url} did not answer while {what} ({type(exc).__name__})"
            ) from None

    def instant(self, query: str) -> Series:
        return self._guard("evaluating a query", self._prom.custom_query, query)

    def range(self, query: str, seconds: int, points: int = 120) -> Series:
        end = datetime.now(UTC)
        start = end - timedelta(seconds=seconds)
        step = max(1, seconds // points)
        return self._guard(
            "evaluating a range query",
            self._prom.custom_query_range,
            query,
            start_time=start,
            end_time=end,
            step=f"{step}s",
        )

    def firing_alerts(self) -> Series:
        return self.instant('ALERTS{alertstate="firing"}')

    def healthy(self) -> bool:
        try:
            return bool(self._prom.check_prometheus_connection())
        except requests.RequestException:
            return False
