"""Secret Manager: versions, forced ExternalSecret refresh, and rotation (runbook: "Rotate secrets").

The bot never reads or shows a secret value. Rotation generates the new value itself
(``secrets.token_urlsafe``: nobody sees or types it), adds it as a new version, makes
the ExternalSecret refresh (the External Secrets Operator's ``force-sync`` annotation)
and only once the Kubernetes Secret holds the new value restarts the live colour. If
the refresh never happens, it stops there: restarting onto a Secret that did not
change (or is missing) gains nothing and can take the app down.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from bot.adapters.secretmanager import SECRET_ID
from bot.errors import BackendUnavailable, UserError
from bot.procedures import kube_format as kf
from bot.procedures.changes import (
    BREAK_GLASS,
    _deployment_of,
    _restart_patch,
    live_colour,
    rollout_followup,
)
from bot.procedures.database_secret import (
    database_url_template,
    execute_database_rotation,
    is_database_secret,
    plan_database_rotation,
)
from bot.procedures.external_secrets import (
    FORCE_SYNC,
    all_synced,
    audit_change,
    follow_sync,
    force_refresh,
    problems_text,
    sync_table,
    synced_text,
)
from bot.registry import Param, Plan, Procedure, ProcedureContext, RiskClass, can
from bot.results import Result, Status, Table, Text
from bot.validators import k8s_name

SECTION_SECRETS = "Access & Authentication › Secret Management"
SECTION_ROTATE = "Security Incident › Rotate secrets"
# 48 random bytes, URL-safe base64 (64 characters): fits env vars, URLs and headers unquoted.
GENERATED_BYTES = 48


def secret_id(text: str) -> str:
    if not SECRET_ID.fullmatch(text):
        raise ValueError("a Secret Manager secret id is letters, digits, '-' and '_' (e.g. aia-api-key)")
    return text


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _references(es: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(secret id, key in the Kubernetes Secret, pinned version or None) for each remote ref."""
    spec = es.get("spec") or {}
    refs = []
    for item in spec.get("data") or []:
        ref = item.get("remoteRef") or {}
        version = ref.get("version")
        refs.append((str(ref.get("key")), str(item.get("secretKey")),
                     None if version in (None, "", "latest") else str(version)))
    for item in spec.get("dataFrom") or []:
        ref = item.get("extract") or {}
        if ref.get("key"):
            version = ref.get("version")
            refs.append((str(ref["key"]), "*", None if version in (None, "", "latest") else str(version)))
    return refs


def _users_of(ctx: ProcedureContext, secret: str) -> list[tuple[str, str, str | None]]:
    """(ExternalSecret, key, pinned version) reading ``secret`` in the bot's namespace."""
    found = []
    for es in ctx.kube.external_secrets():
        for name, key, version in _references(es):
            if name == secret:
                found.append((kf.name_of(es), key, version))
    return found


def _known_secrets(ctx: ProcedureContext) -> str:
    try:
        names = sorted({name for es in ctx.kube.external_secrets() for name, _, _ in _references(es)})
    except (UserError, BackendUnavailable):
        return ""
    return (" The ExternalSecrets here read: " + ", ".join(f"`{n}`" for n in names) + ".") if names else ""


def _versions(ctx: ProcedureContext, secret: str) -> list[Any]:
    try:
        return ctx.backends.secret_manager.versions(secret)
    except UserError as exc:
        raise UserError(exc.message + _known_secrets(ctx)) from None


# -- secrets versions ---------------------------------------------------------------

def secrets_versions(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    secret = args["name"]
    versions = _versions(ctx, secret)
    rows = [[str(v.number), v.state, v.created.strftime("%Y-%m-%d %H:%M:%S UTC") if v.created else "?",
             kf.age(v.created.isoformat()) if v.created else "?"] for v in versions]
    users = _users_of(ctx, secret)
    enabled = [v.number for v in versions if v.state == "ENABLED"]
    parts: list[Any] = [Table(["VERSION", "STATE", "CREATED", "AGE"], rows, empty_text="no versions")]
    parts.append(Text("*Read by:* " + (", ".join(f"ExternalSecret `{es}` as `{key}`"
                                                   + (f" (pinned to version {pin})" if pin else " (latest)")
                                                   for es, key, pin in users)
                                       or f"no ExternalSecret in `{ctx.kube.namespace}`")
                      + ". Values are never shown."))
    return Result(
        title=f"Secret Manager versions of {secret}",
        status=Status.OK if enabled else Status.WARNING,
        parts=parts,
        summary=f"{secret}: {len(versions)} versions, latest enabled "
                + (str(max(enabled)) if enabled else "none"),
    )


# -- secrets sync -----------------------------------------------------------------------

def secrets_sync(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    name = args.get("name") or ctx.settings.aia_external_secret
    try:
        ctx.kube.external_secret(name)
    except UserError:
        existing = ", ".join(f"`{kf.name_of(es)}`" for es in ctx.kube.external_secrets()) or "none"
        raise UserError(f"ExternalSecret `{name}` does not exist in `{ctx.kube.namespace}`; there are: "
                        f"{existing}.") from None
    forced_at = force_refresh(ctx, [name])
    result = Result(
        title=f"Refresh of ExternalSecret {name} requested",
        status=Status.INFO,
        parts=[Text(f"Annotated `{FORCE_SYNC}={int(forced_at.timestamp())}` on ExternalSecret `{name}`; "
                    f"following it for up to {ctx.settings.aia_secret_sync_timeout_seconds}s. "
                    "Pods read the new value only after a restart (`/aia restart`).")],
        summary=f"force-sync of {name} requested",
    )

    def follow() -> Iterator[Result]:
        states = yield from follow_sync(ctx, [name], forced_at, lambda states: Result(
            f"Waiting for ExternalSecret {name} to sync", Status.INFO, [sync_table(states)]))
        state, detail = states[name]
        ok = state == "synced"
        audit_change(ctx, "secrets sync", "synced" if ok else "not_synced", f"{name}: {state} ({detail})", "write")
        text = (f":white_check_mark: `{name}` synced ({detail}). Restart the app to use the new values."
                if ok else f":x: `{name}` {state}: {detail}. The Kubernetes Secret still holds the old values; "
                "check the operator (`/aia secrets`) and the Secret Manager permissions.")
        yield Result(f"ExternalSecret {name}: {state}", Status.OK if ok else Status.CRITICAL,
                     [Text(text), sync_table(states)], summary=f"{name}: {state}")

    result.followup = follow
    return result


# -- secrets rotate ----------------------------------------------------------------------

def _refuse_unrotatable(ctx: ProcedureContext, secret: str) -> None:
    if is_database_secret(ctx, secret):
        database_url_template(ctx, secret)  # refuses when the rest of the URL is not configured
        return  # rotated with the Cloud SQL user's password (database_secret.py), never given a random value
    rotatable = _csv(ctx.settings.aia_rotatable_secrets)
    if secret not in rotatable:
        raise UserError(
            f"`{secret}` is not a secret the bot may regenerate (AIA_ROTATABLE_SECRETS: "
            + (", ".join(f"`{s}`" for s in rotatable) or "none") + "). Only secrets the app itself owns can "
            "take a random value; a key issued by someone else must be replaced at its issuer. Nothing was changed.")


def plan_rotate(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    secret = args["name"]
    _refuse_unrotatable(ctx, secret)
    versions = _versions(ctx, secret)
    users = _users_of(ctx, secret)
    if not users:
        raise UserError(f"No ExternalSecret in `{ctx.kube.namespace}` reads `{secret}`: a new version would "
                        "reach no pod. Nothing was changed.")
    pinned = [(es, pin) for es, _, pin in users if pin]
    if pinned:
        raise UserError("ExternalSecret " + ", ".join(f"`{es}` pins version {pin}" for es, pin in pinned)
                        + f" of `{secret}`: a new version would not reach the app. Nothing was changed.")
    live = live_colour(ctx)
    deployment = _deployment_of(ctx, live)
    dep = ctx.kube.deployment(deployment)
    external = sorted({es for es, _, _ in users})
    latest = max((v.number for v in versions), default=0)
    enabled = sorted(v.number for v in versions if v.state == "ENABLED")
    snapshot = {"secret": secret, "latest": latest, "enabled": enabled, "external_secrets": external,
                "live": live, "deployment": deployment, "generation": (dep.get("metadata") or {}).get("generation")}
    if is_database_secret(ctx, secret):
        return plan_database_rotation(ctx, secret, snapshot)
    preview = "\n".join([
        f"1. add version {latest + 1} to projects/{ctx.settings.gcp_project}/secrets/{secret}: "
        f"a {GENERATED_BYTES * 4 // 3}-character value generated by the bot (never shown, never logged)",
        *[f"2. annotate ExternalSecret {es} {FORCE_SYNC}=<now>; wait until it has synced "
          f"(at most {ctx.settings.aia_secret_sync_timeout_seconds}s; if it never syncs: stop, no restart)"
          for es in external],
        f"3. rollout restart deployment/{deployment} (live colour {live}) and follow it",
        f"Versions now: {len(versions)}, enabled {enabled or 'none'}; the old ones stay enabled for rollback.",
    ])
    return Plan(
        target_key=f"secret/{secret}",
        snapshot=snapshot,
        preview=preview,
        summary=f"Rotate `{secret}`: new generated version {latest + 1}, refresh "
                + ", ".join(f"`{es}`" for es in external) + f", then restart `{deployment}`",
    )


def execute_rotate(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    if "database" in plan.snapshot:
        return execute_database_rotation(ctx, plan)
    secret = plan.snapshot["secret"]
    external: list[str] = plan.snapshot["external_secrets"]
    deployment = plan.snapshot["deployment"]
    # The value exists only here, between generation and the gRPC call; nothing else holds it.
    version = ctx.backends.secret_manager.add_version(secret, secrets.token_urlsafe(GENERATED_BYTES).encode())
    done = [f":white_check_mark: Added version {version} of `{secret}` (generated by the bot; not shown)."]
    audit_change(ctx, "secrets rotate", "version_added", f"{secret}: version {version} added", "destructive")
    try:
        forced_at = force_refresh(ctx, external)
    except (UserError, BackendUnavailable) as exc:
        done.append(f":x: Could not force the refresh of {', '.join(external)}: {exc}")
        done.append(f":no_entry: `{deployment}` was NOT restarted. Run `/aia secrets sync` once Kubernetes answers, "
                    f"then `/aia restart {deployment}`.")
        audit_change(ctx, "secrets rotate", "sync_not_requested", f"{secret}: {exc}", "destructive")
        return Result(f"Rotation of {secret} stopped", Status.CRITICAL, [Text("\n".join(done))],
                      summary=f"{secret}: version {version} added; refresh not requested; no restart")
    done.append(f":arrows_counterclockwise: Forced a refresh of {', '.join(f'`{e}`' for e in external)}.")
    result = Result(f"Rotating {secret}", Status.INFO, [Text("\n".join(done))],
                    summary=f"{secret}: version {version} added, refresh of {', '.join(external)} requested")

    def follow() -> Iterator[Result]:
        states = yield from follow_sync(ctx, external, forced_at, lambda states: Result(
            f"Rotating {secret}: waiting for the sync", Status.INFO, [Text("\n".join(done)), sync_table(states)]))
        if not all_synced(states):
            done.append(":x: " + problems_text(states))
            done.append(f":no_entry: Stopped: `{deployment}` was NOT restarted, so the running pods keep the "
                        f"old value (version {version - 1} and older stay enabled). Fix the sync, then "
                        f"`/aia secrets sync` and `/aia restart {deployment}`.")
            audit_change(ctx, "secrets rotate", "not_synced", f"{secret}: version {version}; no restart; "
                         + "; ".join(f"{n} {s}" for n, (s, _) in states.items()), "destructive")
            yield Result(f"Rotation of {secret} stopped: the ExternalSecret never synced", Status.CRITICAL,
                         [Text("\n".join(done)), sync_table(states)],
                         summary=f"{secret}: version {version} added, not synced, not restarted")
            return
        done.append(":white_check_mark: Synced: " + synced_text(states))
        ctx.kube.patch_deployment(deployment, _restart_patch())
        done.append(f":arrows_counterclockwise: Restarted `{deployment}` (live colour {plan.snapshot['live']}).")
        audit_change(ctx, "secrets rotate", "restarted", f"{secret}: version {version} synced; {deployment} restarted",
               "destructive")
        for step in rollout_followup(ctx, deployment):
            yield Result(f"Rotation of {secret}: {step.title}", step.status,
                         [Text("\n".join(done)), *step.parts], summary=step.summary)

    result.followup = follow
    return result


NAME = Param("name", "positional", "Secret Manager secret id", metavar="NAME", required=True, convert=secret_id)

PROCEDURES = [
    Procedure(
        name="secrets versions", summary="Secret Manager versions of a secret (state, created) — never a value",
        risk=RiskClass.READ, runbook=(SECTION_SECRETS, "Troubleshooting › Secret Management Issues"),
        run=secrets_versions, params=(NAME,), examples=("/aia secrets versions aia-database-url",),
        kube=(can("list", "externalsecrets", "external-secrets.io"),),
    ),
    Procedure(
        name="secrets sync", summary="Force an ExternalSecret to refresh from Secret Manager and follow it",
        risk=RiskClass.WRITE, runbook=("Troubleshooting › Secret Management Issues",), run=secrets_sync,
        params=(Param("name", "positional", "ExternalSecret (default AIA_EXTERNAL_SECRET)", metavar="EXTERNALSECRET",
                      convert=k8s_name),),
        examples=("/aia secrets sync aia-secrets",),
        kube=(can("list,get,patch", "externalsecrets", "external-secrets.io"),),
    ),
    Procedure(
        name="secrets rotate",
        summary="New generated value as a new version, ExternalSecret refreshed, then the live colour restarted",
        risk=RiskClass.DESTRUCTIVE, runbook=(SECTION_ROTATE, SECTION_SECRETS),
        run=lambda ctx, args: execute_rotate(ctx, args, plan_rotate(ctx, args)),
        plan=plan_rotate, execute=execute_rotate, params=(NAME, BREAK_GLASS),
        examples=("/aia secrets rotate aia-api-key",),
        kube=(can("list,get,patch", "externalsecrets", "external-secrets.io"), can("get", "services", names=("{aia_api_service}",)),
              can("get,patch", "deployments", "apps"), can("list", "pods")),
        notes="Secrets in AIA_ROTATABLE_SECRETS get a random value; a database secret (AIA_DATABASE_URL_TEMPLATES) "
              "gets a new URL and its Cloud SQL user the same new password, secret first.",
    ),
]

