"""`secrets rotate` for a database URL secret: the Cloud SQL user's password and the secret together.

Order, chosen so that every stop leaves the running app working (docs/images-and-secrets.md):

1. add a new Secret Manager version holding the new URL (built from AIA_DATABASE_URL_TEMPLATES,
   never read from the secret): the database and the running pods are untouched;
2. force the ExternalSecret refresh and wait until synced: the running pods still hold the old
   URL in their environment and the database still accepts it;
3. only then set the new password on the Cloud SQL user (Users.Update) and follow the operation:
   from here the running pods keep their open connections but cannot open new ones;
4. restart the live colour at once and follow it.

Changing the database first (the obvious order) would make a Secret Manager or sync failure an
outage with no way back: the old password is unknown to the bot, which never reads a secret, so
it could not be set back, and the new one would exist only in the bot's memory. Secret first, the
password is durable before the database uses it, and a stop before step 3 changes nothing that
the running app relies on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

from bot.adapters.cloudsql import CloudSqlNotAllowed, OperationInfo
from bot.database_url import DatabaseUrlTemplate, database_url_templates
from bot.errors import BackendUnavailable, UserError
from bot.procedures.changes import (
    _deployment_of,
    _other,
    _restart_patch,
    rollout_followup,
)
from bot.procedures.external_secrets import (
    all_synced,
    audit_change,
    follow_sync,
    force_refresh,
    problems_text,
    sync_table,
    synced_text,
)
from bot.registry import Plan, ProcedureContext
from bot.results import Result, Status, Text

# 32 random bytes, URL-safe base64 (43 characters): no character needs quoting in a URL.
PASSWORD_BYTES = 32
_ACTION = "secrets rotate"


def is_database_secret(ctx: ProcedureContext, secret: str) -> bool:
    listed = [s.strip() for s in ctx.settings.aia_database_secrets.split(",") if s.strip()]
    return secret in listed or secret in database_url_templates(ctx.settings.aia_database_url_templates)


def database_url_template(ctx: ProcedureContext, secret: str) -> DatabaseUrlTemplate:
    template = database_url_templates(ctx.settings.aia_database_url_templates).get(secret)
    if template is None:
        raise UserError(
            f"`{secret}` holds the database password, and the bot does not know the rest of its URL: set "
            f"AIA_DATABASE_URL_TEMPLATES=\"{secret}=postgresql://USER:{{password}}@HOST:PORT/DB\" (the bot never "
            "reads a secret value, so it builds the new URL from that). Nothing was changed.")
    return template


def _last_user_change(ops: list[OperationInfo]) -> str | None:
    """The newest UPDATE_USER operation: a password set by hand (gcloud, console) after the request shows here."""
    changes = [o for o in ops if o.type == "UPDATE_USER"]
    return changes[0].name if changes else None


def _cloudsql_ready(ctx: ProcedureContext, template: DatabaseUrlTemplate) -> tuple[str | None, int]:
    """Refuses unless the instance is RUNNABLE, idle, and has the template's user; (last user change, settings)."""
    sql = ctx.cloudsql
    instance = sql.instance()
    if instance.state != "RUNNABLE":
        raise UserError(f"Cloud SQL instance `{instance.name}` is {instance.state}, not RUNNABLE: its user's password "
                        "cannot change now. Nothing was changed.")
    users = sql.users()
    if template.user not in users:
        raise UserError(f"AIA_DATABASE_URL_TEMPLATES names the database user `{template.user}`, which instance "
                        f"`{instance.name}` does not have (users: {', '.join(f'`{u}`' for u in users) or 'none'}). "
                        "Nothing was changed.")
    ops = sql.operations()
    running = [o for o in ops if not o.done]
    if running:
        raise UserError(f"`{instance.name}` is busy: {', '.join(f'{o.type} ({o.status.lower()})' for o in running)}. "
                        "Rotate when it is done (`/aia db operations`). Nothing was changed.")
    return _last_user_change(ops), instance.settings_version


def plan_database_rotation(ctx: ProcedureContext, secret: str, base: dict[str, Any]) -> Plan:
    """``base``: what plan_rotate read for every secret (versions, ExternalSecrets, live colour)."""
    template = database_url_template(ctx, secret)
    last_change, _ = _cloudsql_ready(ctx, template)
    instance = ctx.settings.cloudsql_instance
    external = base["external_secrets"]
    latest = base["latest"]
    deployment = base["deployment"]
    timeout = ctx.settings.aia_secret_sync_timeout_seconds
    preview = "\n".join([
        f"1. add version {latest + 1} to projects/{ctx.settings.gcp_project}/secrets/{secret}: a new URL "
        f"for {template.target} (from AIA_DATABASE_URL_TEMPLATES) with a password generated by the bot (never shown, never logged). Database and running pods untouched.",
        f"2. annotate ExternalSecret {', '.join(external)} force-sync=<now>; wait until synced (at most {timeout}s). "
        "If it never syncs: stop; the database password is NOT changed.",
        f"3. set the new password on Cloud SQL user `{template.user}` of `{instance}` and wait for the operation. "
        "From here running pods keep open connections but cannot open new ones until restarted.",
        f"4. rollout restart deployment/{deployment} (live colour {base['live']}) at once and follow it.",
        f"The idle colour (`{_deployment_of(ctx, _other(base['live']))}`) keeps the old password until it is "
        "restarted. Old versions stay enabled; the old password cannot be restored (the bot never reads it).",
    ])
    return Plan(
        target_key=f"secret/{secret}",
        snapshot={**base, "database": {"instance": instance, "target": template.target,
                                       "last_user_change": last_change}},
        preview=preview,
        summary=f"Rotate the database password in `{secret}`: Cloud SQL user `{template.user}` and version "
                f"{latest + 1}, then restart `{deployment}`",
        warning="Between step 3 and the end of step 4 the app cannot open new database connections.",
    )


def _follow_operation(ctx: ProcedureContext, op: OperationInfo) -> OperationInfo:
    """Poll the Users.Update operation until DONE; raises BackendUnavailable after the operation timeout."""
    deadline = time.monotonic() + ctx.settings.cloudsql_operation_timeout_seconds
    pause = ctx.settings.cloudsql_poll_seconds
    while not op.done:
        if time.monotonic() >= deadline:
            raise BackendUnavailable(f"operation `{op.name}` still {op.status} after "
                                     f"{ctx.settings.cloudsql_operation_timeout_seconds}s")
        time.sleep(pause)
        pause = min(pause * 1.5, 30.0)
        op = ctx.cloudsql.operation(op.name)
    return op


def execute_database_rotation(ctx: ProcedureContext, plan: Plan) -> Result:
    snap = plan.snapshot
    secret, external, deployment = snap["secret"], snap["external_secrets"], snap["deployment"]
    template = database_url_template(ctx, secret)
    instance, user = snap["database"]["instance"], template.user
    project = ctx.settings.gcp_project
    # The password lives only in this frame and the follow() closure, and in the gRPC requests.
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    version = ctx.backends.secret_manager.add_version(secret, template.render(password).encode())
    done = [f":white_check_mark: 1. Added version {version} of `{secret}` (new URL for `{template.target}`, "
            "password generated by the bot; not shown). The database password is unchanged so far."]
    audit_change(ctx, _ACTION, "version_added", f"{secret}: version {version} added ({template.target})", "destructive")
    # The full resource name, not --secret=NAME: the redaction of posted text masks a "--secret" flag's value.
    undo = (f"`gcloud secrets versions disable projects/{project}/secrets/{secret}/versions/{version}` (the old version "
            f"becomes `latest` again), then `/aia secrets sync`")

    def stopped_before_database(reason: str, outcome: str) -> Result:
        done.append(f":x: {reason}")
        done.append(f":no_entry: Stopped. The database password was NOT changed and `{deployment}` was NOT restarted: "
                    "the running app keeps working. But version "
                    f"{version} holds a password the database does not accept, so any pod that starts with it "
                    f"will fail to connect. Undo: {undo}; or fix the cause and run `/aia secrets rotate {secret}` "
                    "again.")
        audit_change(ctx, _ACTION, outcome, f"{secret}: version {version}; database password unchanged; no restart; "
               + reason[:200], "destructive")
        return Result(f"Rotation of {secret} stopped before the database password changed", Status.CRITICAL,
                      [Text("\n".join(done))], summary=f"{secret}: version {version} added; database password "
                      "unchanged; not restarted")

    try:
        forced_at = force_refresh(ctx, external)
    except (UserError, BackendUnavailable) as exc:
        return stopped_before_database(f"Could not force the refresh of {', '.join(external)}: {exc}",
                                       "sync_not_requested")
    done.append(f":arrows_counterclockwise: 2. Forced a refresh of {', '.join(f'`{e}`' for e in external)}.")
    result = Result(f"Rotating {secret}", Status.INFO, [Text("\n".join(done))],
                    summary=f"{secret}: version {version} added, refresh requested")

    def follow() -> Iterator[Result]:
        states = yield from follow_sync(ctx, external, forced_at, lambda states: Result(
            f"Rotating {secret}: waiting for the sync", Status.INFO, [Text("\n".join(done)), sync_table(states)]))
        if not all_synced(states):
            stop = stopped_before_database("The ExternalSecret did not sync: " + problems_text(states), "not_synced")
            stop.title = f"Rotation of {secret} stopped: the ExternalSecret never synced"
            stop.parts.append(sync_table(states))
            yield stop
            return
        done.append(":white_check_mark: Synced: " + synced_text(states)
                    + ". The Kubernetes Secret holds the new URL; running pods still use the old one.")
        yield Result(f"Rotating {secret}: setting the database password", Status.INFO, [Text("\n".join(done))])

        failure: str | None = None
        known_unchanged = True
        try:
            op = ctx.cloudsql.set_user_password(user, password)
        except (UserError, CloudSqlNotAllowed) as exc:  # refused: the request was not applied
            failure = str(exc)
        except BackendUnavailable as exc:  # timed out or cut: it may have been applied
            failure, known_unchanged = str(exc), False
        else:
            try:
                op = _follow_operation(ctx, op)
                failure = f"the operation failed: {op.error}" if op.error else None
            except (UserError, BackendUnavailable) as exc:  # accepted, outcome not seen
                failure, known_unchanged = str(exc), False
        if failure is not None:
            if known_unchanged:
                yield stopped_before_database(f"Cloud SQL did not set the password of `{user}`: {failure}",
                                              "password_not_set")
                return
            done.append(f":x: Cloud SQL did not confirm the new password of `{user}`: {failure}")
            done.append(
                ":rotating_light: It is UNKNOWN whether the database password changed. `"
                f"{deployment}` was NOT restarted. Check `/aia db operations` (an UPDATE_USER operation on "
                f"`{instance}`): if it is DONE without error, the database has the new password: run "
                f"`/aia restart {deployment}` now (running pods cannot open new connections). If it failed or is "
                f"absent, nothing changed on the database: {undo}. If unsure, escalate to the database owner.")
            audit_change(ctx, _ACTION, "password_unknown", f"{secret}: version {version}; Cloud SQL did not answer; "
                   "no restart", "destructive")
            yield Result(f"Rotation of {secret}: database password state unknown", Status.CRITICAL,
                         [Text("\n".join(done))], summary=f"{secret}: database password state unknown; not restarted")
            return
        done.append(f":white_check_mark: 3. Set the new password on Cloud SQL user `{user}` of `{instance}` "
                    f"(operation `{op.name}`). Open connections keep working; new ones need the restart.")
        audit_change(ctx, _ACTION, "password_set", f"{secret}: Cloud SQL user {user} on {instance}; operation {op.name}",
               "destructive")

        try:
            ctx.kube.patch_deployment(deployment, _restart_patch())
        except (UserError, BackendUnavailable) as exc:
            done.append(f":x: Could not restart `{deployment}`: {exc}")
            done.append(f":rotating_light: The DATABASE PASSWORD CHANGED and the Secret holds it, but `{deployment}` "
                        "still runs with the old one: its pods cannot open new database connections. Run "
                        f"`/aia restart {deployment}` now; escalate if Kubernetes does not answer.")
            audit_change(ctx, _ACTION, "not_restarted", f"{secret}: password set; restart failed: {str(exc)[:200]}",
                   "destructive")
            yield Result(f"Rotation of {secret}: restart failed", Status.CRITICAL, [Text("\n".join(done))],
                         summary=f"{secret}: database password changed; {deployment} NOT restarted")
            return
        idle = _deployment_of(ctx, _other(snap["live"]))
        done.append(f":arrows_counterclockwise: 4. Restarted `{deployment}` (live colour {snap['live']}). The idle "
                    f"colour `{idle}` still runs with the old one; restart it (`/aia restart {idle}`) before "
                    "switching to it.")
        audit_change(ctx, _ACTION, "restarted", f"{secret}: version {version} synced; password set; {deployment} restarted",
               "destructive")
        for step in rollout_followup(ctx, deployment):
            yield Result(f"Rotation of {secret}: {step.title}", step.status,
                         [Text("\n".join(done)), *step.parts], summary=step.summary)

    result.followup = follow
    return result
