"""Security checks the runbook implies: Grafana's admin/admin default, secrets that do not sync."""

from __future__ import annotations

from typing import Any

import requests

from bot.errors import BackendUnavailable
from bot.registry import Procedure, ProcedureContext, RiskClass, can
from bot.results import Result, Status, Table

# The runbook ships Grafana with admin/admin "to change on first login": check that someone did.
GRAFANA_DEFAULT = ("admin", "admin")


def _grafana_default_login(url: str) -> tuple[str, str]:
    try:
        response = requests.get(f"{url}/api/user", auth=GRAFANA_DEFAULT, timeout=5)
    except requests.RequestException as exc:
        return "unknown", f"Grafana at {url} did not answer ({type(exc).__name__})"
    if response.status_code == 200:
        return "FAIL", "admin/admin still logs in: change the password now (Grafana › Profile › Change password)"
    if response.status_code in (401, 403):
        return "ok", "the default admin/admin password is refused"
    return "unknown", f"Grafana answered {response.status_code}"


def security_check(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    rows = []
    status, detail = _grafana_default_login(ctx.settings.aia_grafana_url)
    rows.append(["Grafana default credentials", status, detail])
    try:
        failing = [
            es["metadata"]["name"] for es in ctx.kube.external_secrets()
            if not any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (es.get("status") or {}).get("conditions") or [])
        ]
        rows.append(["ExternalSecrets in sync", "FAIL" if failing else "ok",
                     f"not syncing: {', '.join(failing)}" if failing else "all Ready"])
    except BackendUnavailable as exc:
        rows.append(["ExternalSecrets in sync", "unknown", str(exc)])
    failed = sum(r[1] == "FAIL" for r in rows)
    unknown = sum(r[1] == "unknown" for r in rows)
    return Result(
        title="Security check",
        status=Status.CRITICAL if failed else (Status.WARNING if unknown else Status.OK),
        parts=[Table(["CHECK", "RESULT", "DETAIL"], rows)],
        summary=f"{failed} failed, {unknown} unknown of {len(rows)} checks",
    )


PROCEDURES = [
    Procedure(
        name="security check",
        kube=(can("list", "externalsecrets", "external-secrets.io"),),
        summary="Grafana's admin/admin default still working? Secrets not syncing?",
        risk=RiskClass.READ,
        runbook=("Monitoring & Alerting › Grafana Access", "Emergency Procedures › Security Incident"),
        run=security_check,
    ),
]
