"""Alertmanager webhook payloads (version 4) as Alertmanager builds them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def alert(name: str = "HighErrorRate", status: str = "firing", severity: str = "warning",
          start: datetime = T0, end: datetime | None = None, **labels: str) -> dict[str, Any]:
    all_labels = {"alertname": name, "severity": severity, "namespace": "aia-production", **labels}
    fingerprint = hashlib.sha256(repr(sorted(all_labels.items())).encode()).hexdigest()[:16]
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{name} summary", "description": f"{name} is {status}"},
        "startsAt": start.isoformat().replace("+00:00", "Z"),
        "endsAt": (end or datetime(1, 1, 1, tzinfo=UTC)).isoformat().replace("+00:00", "Z")
        if end else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=sum%28rate%28http_requests_total%7Bstatus%3D~%225..%22%7D%5B1m%5D%29%29+%3E+0.1&g0.tab=1",
        "fingerprint": fingerprint,
    }


def payload(alerts: list[dict[str, Any]], group: str = "HighErrorRate", status: str | None = None) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "aia-bot",
        "status": status or ("firing" if firing else "resolved"),
        "alerts": alerts,
        "groupLabels": {"alertname": group},
        "commonLabels": {"alertname": group, "namespace": "aia-production"},
        "commonAnnotations": {"summary": f"{group} summary"},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}',
        "truncatedAlerts": 0,
    }


def resolved(a: dict[str, Any], after: timedelta = timedelta(minutes=12)) -> dict[str, Any]:
    start = datetime.fromisoformat(a["startsAt"].replace("Z", "+00:00"))
    return {**a, "status": "resolved", "endsAt": (start + after).isoformat().replace("+00:00", "Z")}
