"""Reading Kubernetes JSON the way kubectl prints it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(text: str | None) -> float:
    """A Kubernetes quantity ("250m", "1.5Gi", "100n") as a float of base units."""
    if not text:
        return 0.0
    text = str(text).strip()
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    if text[-1:].isalpha():
        return float(text[:-1]) * _DECIMAL.get(text[-1], 1)
    return float(text)


def millicores(text: str | None) -> int:
    return round(parse_quantity(text) * 1000)


def human_bytes(value: float) -> str:
    for unit in ("B", "Ki", "Mi", "Gi", "Ti"):
        if abs(value) < 1024 or unit == "Ti":
            return f"{value:.0f}{unit}" if unit in ("B", "Ki", "Mi") else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}Ti"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(text: str | None, now: datetime | None = None) -> str:
    when = parse_time(text)
    if when is None:
        return "?"
    seconds = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def container_statuses(pod: Obj) -> list[Obj]:
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def ready_count(pod: Obj) -> tuple[int, int]:
    statuses = container_statuses(pod)
    total = len(statuses) or len((pod.get("spec") or {}).get("containers") or [])
    return sum(1 for s in statuses if s.get("ready")), total


def is_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def restarts(pod: Obj) -> int:
    return sum(int(s.get("restartCount") or 0) for s in container_statuses(pod))


def status_text(pod: Obj) -> str:
    """The STATUS column of kubectl get pods."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    if status.get("reason"):
        return str(status["reason"])
    for cs in container_statuses(pod):
        state = cs.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            return str(state["waiting"]["reason"])
        if "terminated" in state and state["terminated"].get("reason"):
            return str(state["terminated"]["reason"])
    return str(status.get("phase") or "Unknown")


def last_termination(cs: Obj) -> str | None:
    terminated = (cs.get("lastState") or {}).get("terminated")
    if not terminated:
        return None
    reason = terminated.get("reason") or "Terminated"
    code = terminated.get("exitCode")
    return f"{reason} (exit {code})" if code is not None else reason


def node_ready(node: Obj) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def node_problems(node: Obj) -> list[str]:
    problems = []
    for condition in (node.get("status") or {}).get("conditions") or []:
        kind = condition.get("type")
        if kind != "Ready" and condition.get("status") == "True":
            problems.append(str(kind))
    if (node.get("spec") or {}).get("unschedulable"):
        problems.append("SchedulingDisabled")
    return problems


def event_time(event: Obj) -> str | None:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
    )


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "?")
