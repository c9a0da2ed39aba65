"""Disaster recovery from a stored configuration backup, without `kubectl delete namespace`.

The runbook's recovery is ``kubectl delete namespace aia-production`` then
``kubectl apply -f backup-$(date +%Y%m%d).yaml``: it destroys everything first and trusts a file
that may not exist, may be from another day, and holds Secrets in plain text. The bot instead:

* reads a backup kept by `/aia config backup` (table ``config_backups``) and refuses it unless its
  sha256 still matches the stored text;
* `/aia dr plan BACKUP_ID` compares every object with what exists: a missing object is checked with
  a server-side dry run (``dryRun=All``) and listed as "would be created"; a present one is left
  alone and its differences are listed, never applied;
* `/aia dr restore BACKUP_ID` (destructive, two approvers) takes a fresh configuration backup
  first and names it, then creates the missing objects only: it never deletes, replaces or patches
  anything. The approval is bound to the backup id, its checksum and the exact set of missing
  objects, so a request goes stale if someone recreated (or deleted) an object meanwhile;
* never restores a Secret: backups hold no Secret values, and the ExternalSecret recreates them
  from Secret Manager.

The code is generic over kinds: whatever apiVersion/kind the backup holds is read and created
through the API's discovery (bot/adapters/kube_objects.py). Server-set fields (uid,
resourceVersion, managedFields, status, cluster IPs, owner references...) are stripped before a
create, so objects come back as new objects with their configuration, not as stale copies.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import select

from bot.adapters.kube_objects import KindUnknown, KubeObjects, ObjectRefused
from bot.errors import UserError
from bot.procedures.changes import BACKUP_READS
from bot.redaction import redact
from bot.registry import Param, Plan, Procedure, ProcedureContext, RiskClass, can
from bot.results import Action, Fields, Preformatted, Result, Status, Table, Text
from bot.store.models import ConfigBackup
from bot.timeutil import assume_utc
from bot.validators import reason

Obj = dict[str, Any]
SECTION = "Backup & Recovery › Disaster Recovery"

# Never recreated from a backup: Secrets come back through their ExternalSecret; the rest is made
# by controllers from the objects that are restored.
NOT_RESTORED = {
    "Secret": "Secret values are never kept in a backup; the ExternalSecret recreates it from Secret Manager",
    "Pod": "made by its ReplicaSet", "ReplicaSet": "made by its Deployment",
    "Endpoints": "made by its Service", "EndpointSlice": "made by its Service", "Event": "history, not configuration",
}
# apiVersion of kinds whose backup entry may lack it (list items from a real API server carry none).
DEFAULT_API_VERSIONS = {
    "ConfigMap": "v1", "Service": "v1", "ServiceAccount": "v1", "Secret": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
    "Ingress": "networking.k8s.io/v1", "NetworkPolicy": "networking.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1",
    # v1: External Secrets Operator serves only v1 since v0.17.
    "ExternalSecret": "external-secrets.io/v1", "SecretStore": "external-secrets.io/v1",
}
# Creation order: what others refer to comes first (accounts before bindings, config before pods).
CREATE_ORDER = ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "SecretStore", "ExternalSecret",
                "PersistentVolumeClaim", "Service", "Deployment", "StatefulSet", "DaemonSet",
                "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress")
SERVER_SET_METADATA = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation",
                       "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences")
SERVER_SET_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",
                          "deployment.kubernetes.io/revision")
RECENT = 5


# -- reading a backup ------------------------------------------------------------------

def _recent(ctx: ProcedureContext) -> list[ConfigBackup]:
    with ctx.audit.sessions() as session:
        return list(session.execute(
            select(ConfigBackup).where(ConfigBackup.namespace == ctx.kube.namespace)
            .order_by(ConfigBackup.created_at.desc()).limit(RECENT)).scalars())


def _describe(backup: ConfigBackup) -> str:
    return f"`{backup.id}` ({backup.created_at:%Y-%m-%d %H:%M} UTC, by <@{backup.actor}>)"


def _load(ctx: ProcedureContext, backup_id: str) -> ConfigBackup:
    with ctx.audit.sessions() as session:
        backup = session.get(ConfigBackup, backup_id)
    if backup is None:
        recent = _recent(ctx)
        listing = ("Recent backups of `" + ctx.kube.namespace + "`: " + ", ".join(_describe(b) for b in recent)
                   if recent else f"There is no backup of `{ctx.kube.namespace}` yet: take one with "
                   "`/aia config backup` while the namespace is healthy.")
        raise UserError(f"No configuration backup `{backup_id}`. {listing}", "Usage: `/aia dr plan BACKUP_ID`")
    if backup.namespace != ctx.kube.namespace:
        raise UserError(f"Backup `{backup_id}` is of namespace `{backup.namespace}`; the bot works in "
                        f"`{ctx.kube.namespace}`. Nothing was planned.")
    actual = hashlib.sha256(backup.content.encode()).hexdigest()
    if actual != backup.sha256:
        raise UserError(f":no_entry: Backup `{backup_id}` fails its checksum: stored sha256 "
                        f"`{backup.sha256[:12]}…`, its text now hashes to `{actual[:12]}…`. It was changed after it "
                        "was taken, so it is not used. Nothing was planned or restored; pick another backup.")
    return backup


def _documents(backup: ConfigBackup) -> list[Obj]:
    try:
        docs = [d for d in yaml.safe_load_all(backup.content) if d]
    except yaml.YAMLError:
        raise UserError(f"Backup `{backup.id}` is not readable YAML; nothing was planned.") from None
    if not all(isinstance(d, dict) and d.get("kind") and (d.get("metadata") or {}).get("name") for d in docs):
        raise UserError(f"Backup `{backup.id}` holds an entry without kind or name; nothing was planned.")
    return docs


def restorable(doc: Obj) -> Obj:
    """The object as it can be created: configuration only, nothing the server sets."""
    body = copy.deepcopy(doc)
    body["apiVersion"] = body.get("apiVersion") or DEFAULT_API_VERSIONS.get(str(body["kind"]), "")
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    for key in SERVER_SET_METADATA:
        meta.pop(key, None)
    meta.pop("namespace", None)  # the namespace on the URL decides
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_SET_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    spec = body.get("spec")
    if body["kind"] == "Service" and isinstance(spec, dict):
        # Cluster IPs are allocated by the server; a headless service keeps "None".
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        spec.pop("healthCheckNodePort", None)
    if body["kind"] == "ServiceAccount":
        body.pop("secrets", None)  # token Secrets of the old account, made again by the cluster
    return body


def _why_not_restored(doc: Obj) -> str:
    if doc["kind"] != "Secret":
        return NOT_RESTORED[str(doc["kind"])]
    owners = [o for o in (doc.get("metadata") or {}).get("ownerReferences") or [] if o.get("kind") == "ExternalSecret"]
    if owners:
        return f"values are never kept in a backup; ExternalSecret `{owners[0].get('name')}` recreates it"
    return "values are never kept in a backup; not made by an ExternalSecret: recreate it from its source"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _key(doc: Obj) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _order(key: str) -> tuple[int, str]:
    kind = key.split("/", 1)[0]
    return (CREATE_ORDER.index(kind) if kind in CREATE_ORDER else len(CREATE_ORDER), key)


# -- comparing with the cluster ---------------------------------------------------------

def _comparable(obj: Obj) -> Obj:
    body = restorable(obj)
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
    return {"metadata": kept, **{k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")}}


def _differences(backup_doc: Obj, live: Obj) -> list[str]:
    a = yaml.safe_dump(_comparable(backup_doc), sort_keys=True, width=200).splitlines()
    b = yaml.safe_dump(_comparable(live), sort_keys=True, width=200).splitlines()
    return list(difflib.unified_diff(a, b, f"{_key(backup_doc)} (backup)", f"{_key(backup_doc)} (live)",
                                     n=1, lineterm=""))


@dataclass
class Analysis:
    backup: ConfigBackup
    missing: dict[str, Obj] = field(default_factory=dict)  # key -> body to create
    refused: dict[str, str] = field(default_factory=dict)  # missing, but the dry run refused it
    present: dict[str, list[str]] = field(default_factory=dict)  # key -> diff lines (empty: same)
    not_restored: dict[str, str] = field(default_factory=dict)  # key -> why
    unknown: dict[str, str] = field(default_factory=dict)  # key -> why the cluster cannot take it

    @property
    def creatable(self) -> list[str]:
        return sorted((k for k in self.missing if k not in self.refused), key=_order)


def analyse(ctx: ProcedureContext, backup_id: str) -> Analysis:
    backup = _load(ctx, backup_id)
    found = Analysis(backup)
    objects = KubeObjects(ctx.kube)
    for doc in _documents(backup):
        key, kind = _key(doc), str(doc["kind"])
        if kind in NOT_RESTORED:
            found.not_restored[key] = _why_not_restored(doc)
            continue
        body = restorable(doc)
        try:
            live = objects.get(str(body["apiVersion"]), kind, str(body["metadata"]["name"]))
        except KindUnknown as exc:
            found.unknown[key] = str(exc)
            continue
        except ObjectRefused as exc:
            found.unknown[key] = f"cannot be read ({exc.status}): {redact(exc.message)[:200]}"
            continue
        if live is not None:
            found.present[key] = _differences(doc, live)
            continue
        found.missing[key] = body
        try:
            objects.create(body, dry_run=True)
        except ObjectRefused as exc:
            found.refused[key] = redact(exc.message)[:300]
    return found


def _rows(found: Analysis) -> list[list[str]]:
    rows: list[list[str]] = []
    for key in sorted(found.missing, key=_order):
        if key in found.refused:
            rows.append([key, "missing: dry run REFUSED", found.refused[key]])
        else:
            rows.append([key, "missing: would be created", "server-side dry run passed"])
    for key, diff in sorted(found.present.items()):
        changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        rows.append([key, "exists: left alone", f"{changed} differing lines, not applied" if diff else "same"])
    for key, why in sorted(found.not_restored.items()):
        rows.append([key, "not restored", why])
    for key, why in sorted(found.unknown.items()):
        rows.append([key, "cannot be restored", why])
    return rows


def _secrets_note(ctx: ProcedureContext, found: Analysis) -> str:
    # Always said, whether or not the backup lists Secrets: people expect a restore to bring them.
    return (f":lock: Secrets are not restored from a backup (it holds no values): ExternalSecret "
            f"`{ctx.settings.aia_external_secret}` recreates them from Secret Manager once it exists. "
            "Check with `/aia secrets`.")


def _header(found: Analysis) -> Fields:
    b = found.backup
    return Fields([("Backup", f"`{b.id}`"), ("Taken", f"{b.created_at:%Y-%m-%d %H:%M} UTC by <@{b.actor}>"),
                   ("Namespace", f"`{b.namespace}`"), ("Checksum", f"sha256 `{b.sha256[:12]}…` verified")])


def _counts(found: Analysis) -> str:
    return (f"{len(found.creatable)} missing and would be created, {len(found.refused)} missing but refused by "
            f"the dry run, {len(found.present)} exist and are left alone "
            f"({sum(1 for d in found.present.values() if d)} differ), {len(found.not_restored)} not restored, "
            f"{len(found.unknown)} cannot be restored")


# -- /aia dr plan -------------------------------------------------------------------------

def dr_plan(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    found = analyse(ctx, args["backup"])
    parts: list[Any] = [_header(found), Text(_counts(found) + ". Nothing is ever deleted or overwritten."),
                        Table(["OBJECT", "STATE", "DETAIL"], _rows(found))]
    parts.append(Text(_secrets_note(ctx, found)))
    diffs = [line for diff in found.present.values() for line in diff]
    if diffs:
        parts.append(Preformatted(redact("\n".join(diffs)), f"dr-plan-{found.backup.id}.diff",
                                  "Differences of existing objects (backup → live; not applied)"))
    actions = []
    if found.creatable:
        actions.append(Action(f"Restore {_n(len(found.creatable), 'missing object')}", f"dr restore {found.backup.id}",
                              style="danger"))
    status = Status.WARNING if found.creatable or found.refused else Status.OK
    return Result(title=f"Disaster recovery plan from backup {found.backup.id}", status=status, parts=parts,
                  actions=actions, summary=f"dr plan {found.backup.id}: " + _counts(found))


# -- /aia dr restore ----------------------------------------------------------------------

def plan_dr_restore(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    found = analyse(ctx, args["backup"])
    if not found.creatable:
        why = (f" {len(found.refused)} missing objects are refused by the server's dry run; see `/aia dr plan "
               f"{found.backup.id}`." if found.refused else "")
        raise UserError(f"Nothing to restore from backup `{found.backup.id}`: no missing object can be created."
                        f"{why} Existing objects are never overwritten.")
    # "NAME: why" would read as a secret to the redaction when NAME ends in -token: dashes instead.
    lines = [f"+ create {key}" for key in found.creatable]
    lines += [f"! skip {key} — the dry run was refused — {why}" for key, why in sorted(found.refused.items())]
    differing = sorted(key for key, diff in found.present.items() if diff)
    lines += [f"= keep {key} — exists and differs from the backup; not changed" for key in differing]
    if len(found.present) > len(differing):
        lines.append(f"= keep {_n(len(found.present) - len(differing), 'other existing object')} as they are")
    lines += [f"- not restored {key} — {why}" for key, why in sorted(found.not_restored.items())]
    warning = None
    if found.refused:
        warning = f"{len(found.refused)} missing objects would be refused by the API server and are not created."
    return Plan(
        target_key=f"dr/{ctx.kube.namespace}",
        snapshot={"backup": found.backup.id, "sha256": found.backup.sha256, "missing": found.creatable,
                  "refused": sorted(found.refused)},
        preview=redact("\n".join(lines)),
        summary=(f"Recreate {_n(len(found.creatable), 'missing object')} in `{ctx.kube.namespace}` from backup "
                 f"`{found.backup.id}` ({found.backup.created_at:%Y-%m-%d %H:%M} UTC); a fresh backup is taken "
                 "first; nothing is deleted or overwritten; Secrets come back through the ExternalSecret"),
        warning=warning,
    )


def _fresh_backup(ctx: ProcedureContext) -> str:
    """`/aia config backup`, exactly as an operator would take it; returns the new backup's id."""
    from bot.procedures.changes import config_backup

    started = datetime.now(UTC)
    result = config_backup(ctx, {})
    with ctx.audit.sessions() as session:
        newest = session.execute(
            select(ConfigBackup).where(ConfigBackup.namespace == ctx.kube.namespace,
                                       ConfigBackup.actor == ctx.caller.user_id)
            .order_by(ConfigBackup.created_at.desc()).limit(1)).scalar_one_or_none()
    if newest is None or assume_utc(newest.created_at) < started.replace(microsecond=0):
        raise UserError(f"The fresh backup before restoring could not be confirmed ({result.summary}); "
                        "nothing was restored.")
    return str(newest.id)


def execute_dr_restore(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    found = analyse(ctx, args["backup"])
    fresh = _fresh_backup(ctx)
    objects = KubeObjects(ctx.kube)
    rows: list[list[str]] = []
    created = 0
    for key in plan.snapshot["missing"]:
        body = found.missing.get(key)
        if body is None:
            rows.append([key, "left alone", "exists again"])
            continue
        try:
            objects.create(body)
            created += 1
            rows.append([key, "created", ""])
        except ObjectRefused as exc:
            # 409: someone created it in the last second. Never replaced.
            rows.append([key, "exists: left alone" if exc.status == 409 else "FAILED", redact(exc.message)[:300]])
    failed = sum(1 for r in rows if r[1] == "FAILED")
    parts: list[Any] = [
        _header(found),
        Text(f":floppy_disk: Fresh backup `{fresh}` was taken first (the state before this restore: "
             f"`/aia dr plan {fresh}`)."),
        Table(["OBJECT", "OUTCOME", "DETAIL"], rows),
    ]
    parts.append(Text(_secrets_note(ctx, found)))
    rolled = [key.split("/", 1)[1] for key, outcome, _ in rows if outcome == "created" and key.startswith("Deployment/")]
    follow = "".join(f" `/aia rollout status {name}`," for name in rolled)
    parts.append(Text(f"Nothing was deleted or overwritten. Follow the app with{follow} `/aia status` and "
                      "`/aia pods`."))
    return Result(
        title=f"Recreated {_n(created, 'object')} from backup {found.backup.id}",
        status=Status.WARNING if failed else Status.OK, parts=parts,
        summary=f"dr restore {found.backup.id}: created {created}, failed {failed}; fresh backup {fresh}",
    )


# Off unless AIA_BREAK_GLASS_ENABLED; admins only, audited: a disaster with one person awake.
BREAK_GLASS = Param("break-glass", "option", "admins only, when enabled: run without approval, say why",
                    metavar="REASON", convert=reason)


def _restore_now(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    return execute_dr_restore(ctx, args, plan_dr_restore(ctx, args))


def _backup_id(text: str) -> str:
    value = text.strip()
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_" for c in value):
        raise ValueError("a backup id is the short code `/aia config backup` printed, like `3f9c2a7b1d04`")
    return value.lower()


BACKUP_ID = Param("backup", "positional", "id of a configuration backup (`/aia config backup`)",
                  metavar="BACKUP_ID", required=True, convert=_backup_id)

# Reading a backup's objects: a `get` of each by name, on every kind config backup keeps (the names
# are whatever the namespace held, so no resourceNames; the same objects are listable anyway).
# Roles and RoleBindings are read, to compare them, and never created.
DR_READS = (
    can("get", "serviceaccounts"), can("get", "roles", "rbac.authorization.k8s.io"),
    can("get", "rolebindings", "rbac.authorization.k8s.io"), can("get", "configmaps"),
    can("get", "secretstores", "external-secrets.io"), can("get", "externalsecrets", "external-secrets.io"),
    can("get", "deployments", "apps"), can("get", "services"), can("get", "horizontalpodautoscalers", "autoscaling"),
    can("get", "poddisruptionbudgets", "policy"), can("get", "networkpolicies", "networking.k8s.io"),
    can("get", "ingresses", "networking.k8s.io"),
)
# Creating a missing object, and the plan's server-side dry run of it (RBAC checks a dryRun=All
# create as a create): the configuration kinds, never Secrets, Roles, RoleBindings or SecretStores.
DR_CREATES = (
    can("create", "serviceaccounts"), can("create", "configmaps"), can("create", "externalsecrets", "external-secrets.io"),
    can("create", "services"), can("create", "deployments", "apps"), can("create", "horizontalpodautoscalers", "autoscaling"),
    can("create", "poddisruptionbudgets", "policy"), can("create", "networkpolicies", "networking.k8s.io"),
    can("create", "ingresses", "networking.k8s.io"),
)

PROCEDURES = [
    Procedure(
        name="dr plan", summary="What a configuration backup would recreate: dry run and diff, nothing changed",
        risk=RiskClass.READ, runbook=(SECTION,), run=dr_plan, params=(BACKUP_ID,), kube=DR_READS + DR_CREATES,
        examples=("/aia dr plan 3f9c2a7b1d04",),
        notes="Verifies the backup's checksum; missing objects are dry-run created, existing ones only compared.",
    ),
    Procedure(
        name="dr restore", summary="Recreate missing objects from a verified backup (never deletes; 2 approvers)",
        risk=RiskClass.DESTRUCTIVE, runbook=(SECTION,), run=_restore_now,
        plan=plan_dr_restore, execute=execute_dr_restore, params=(BACKUP_ID, BREAK_GLASS), approvals=2,
        kube=BACKUP_READS + DR_READS + DR_CREATES,
        examples=("/aia dr restore 3f9c2a7b1d04",),
        notes=("Takes a fresh `config backup` first; Secrets come back through the ExternalSecret; "
               "the runbook's `kubectl delete namespace` is never done."),
    ),
]
