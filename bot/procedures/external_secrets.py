"""Forcing an ExternalSecret to refresh and following it until the Kubernetes Secret holds the
new value: shared by ``/aia secrets sync``, ``/aia secrets rotate`` (secret_manager.py) and the
database password rotation (database_secret.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime
from typing import Any

from bot.errors import BackendUnavailable, UserError
from bot.procedures import kube_format as kf
from bot.registry import ProcedureContext
from bot.results import Result, Table
from bot.store.audit import AuditRecord

# The External Secrets Operator refreshes an ExternalSecret whose annotation changes.
FORCE_SYNC = "force-sync"


def _ready(es: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (es.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})


def _sync_state(es: dict[str, Any], forced_at: datetime) -> tuple[str, str]:
    """("synced" | "failed" | "waiting", detail) for a refresh forced at ``forced_at``."""
    ready = _ready(es)
    refreshed = kf.parse_time((es.get("status") or {}).get("refreshTime"))
    changed = kf.parse_time(ready.get("lastTransitionTime"))
    if ready.get("status") == "True" and refreshed is not None and refreshed >= forced_at:
        return "synced", f"refreshed at {refreshed:%H:%M:%S} UTC"
    if ready.get("status") == "False" and changed is not None and changed >= forced_at:
        return "failed", f"{ready.get('reason') or 'not ready'}: {str(ready.get('message') or '')[:300]}"
    # A condition that was already False before the refresh keeps its old transition time (the
    # operator only moves it when the status flips): its message is still the best hint.
    hint = f": {str(ready.get('message') or '')[:200]}" if ready.get("status") == "False" else ""
    return "waiting", str(ready.get("reason") or "no status yet") + hint


def force_refresh(ctx: ProcedureContext, names: list[str]) -> datetime:
    """Annotate each ExternalSecret with ``force-sync``; the moment the refresh was asked for."""
    forced_at = datetime.now(UTC).replace(microsecond=0)
    for name in names:
        ctx.kube.annotate_external_secret(name, {FORCE_SYNC: str(int(forced_at.timestamp()))})
    return forced_at


def wait_synced(ctx: ProcedureContext, names: list[str], forced_at: datetime,
                ) -> Iterator[tuple[dict[str, tuple[str, str]], bool]]:
    """Progress of the refresh of ``names``: (state per name, finished) until all synced, one failed, or timeout."""
    timeout = ctx.settings.aia_secret_sync_timeout_seconds
    deadline = time.monotonic() + timeout
    pause = 0.25
    while True:
        states: dict[str, tuple[str, str]] = {}
        for name in names:
            try:
                states[name] = _sync_state(ctx.kube.external_secret(name), forced_at)
            except (UserError, BackendUnavailable) as exc:
                states[name] = ("waiting", str(exc)[:200])
        if all(s == "synced" for s, _ in states.values()) or any(s == "failed" for s, _ in states.values()):
            yield states, True
            return
        if time.monotonic() >= deadline:
            yield {n: (s if s != "waiting" else "never synced", d) for n, (s, d) in states.items()}, True
            return
        yield states, False
        time.sleep(pause)
        pause = min(pause * 1.5, 5.0)


SyncStates = dict[str, tuple[str, str]]


def follow_sync(ctx: ProcedureContext, names: list[str], forced_at: datetime,
                waiting: Callable[[SyncStates], Result]) -> Generator[Result, None, SyncStates]:
    """Yield ``waiting(states)`` while the refresh is under way; return the final states
    (``states = yield from follow_sync(...)`` in a procedure's follow-up)."""
    for states, finished in wait_synced(ctx, names, forced_at):
        if finished:
            return states
        yield waiting(states)
    return {}  # wait_synced always ends with a finished round


def all_synced(states: SyncStates) -> bool:
    return bool(states) and all(state == "synced" for state, _ in states.values())


def synced_text(states: SyncStates) -> str:
    return ", ".join(f"`{name}` ({detail})" for name, (_, detail) in states.items())


def problems_text(states: SyncStates) -> str:
    return "; ".join(f"`{name}` {state}: {detail}" for name, (state, detail) in states.items())


def sync_table(states: dict[str, tuple[str, str]]) -> Table:
    return Table(["EXTERNALSECRET", "STATE", "DETAIL"], [[n, s, d] for n, (s, d) in states.items()])


def audit_change(ctx: ProcedureContext, action: str, outcome: str, detail: str, risk: str) -> None:
    ctx.audit.append(AuditRecord(actor=ctx.caller.user_id, action=action, outcome=outcome, detail=detail,
                                 team_id=ctx.caller.team_id, channel_id=ctx.caller.channel_id, risk=risk))
