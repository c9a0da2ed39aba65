"""Write and destructive procedures: the runbook's deployment, troubleshooting and emergency steps.

Each change is a plan (read the target, server-side dry run, preview, snapshot)
and an execute. Write procedures do both at once; destructive ones are planned at
request time and planned again right before execution, and the two snapshots must
match (the two-person rule in bot/approvals).
"""

from __future__ import annotations

import copy
import difflib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import yaml

from bot.errors import UserError
from bot.procedures import kube_format as kf
from bot.procedures.images import pin_image
from bot.redaction import looks_secret_key, looks_secret_value, redact, redact_env_value
from bot.registry import Param, Plan, Procedure, ProcedureContext, RiskClass, can
from bot.results import Action, Preformatted, Result, Status, Table, Text
from bot.validators import (
    bounded_int,
    config_pairs,
    image_reference,
    k8s_name,
    reason,
    replica_count,
)

Obj = dict[str, Any]
COLOURS = ("blue", "green")
SECTION_BG = "Deployment Procedures › Blue-Green Deployment Process"
SECTION_ROLLING = "Deployment Procedures › Rolling Updates"
SECTION_CONFIG = "Deployment Procedures › Configuration Updates"
SECTION_EMERGENCY = "Emergency Procedures"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
BREAK_GLASS = Param("break-glass", "option", "admins only, when enabled: run without approval, say why",
                    metavar="REASON", convert=reason)


# -- reading what is there ------------------------------------------------------

def _clean(obj: Obj, keep: tuple[str, ...] = ("spec",)) -> Obj:
    return {key: obj.get(key) for key in keep if key in obj}


def _diff(before: Obj, after: Obj, keep: tuple[str, ...] = ("spec",), name: str = "object") -> str:
    a = yaml.safe_dump(_clean(before, keep), sort_keys=True, width=200).splitlines()
    b = yaml.safe_dump(_clean(after, keep), sort_keys=True, width=200).splitlines()
    lines = list(difflib.unified_diff(a, b, f"{name} (live)", f"{name} (after)", n=2, lineterm=""))
    return "\n".join(lines) if lines else "(no change)"


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _containers(dep: Obj) -> list[Obj]:
    return list(((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [])


def _dep_snapshot(dep: Obj) -> dict[str, Any]:
    return {
        "resourceVersion": _rv(dep),
        "replicas": (dep.get("spec") or {}).get("replicas"),
        "images": {c.get("name"): c.get("image") for c in _containers(dep)},
    }


def live_colour(ctx: ProcedureContext) -> str:
    """The colour the API service sends traffic to, read from its selector, never assumed."""
    service = ctx.kube.service(ctx.settings.aia_api_service)
    colour = ((service.get("spec") or {}).get("selector") or {}).get("version")
    if colour not in COLOURS:
        raise UserError(
            f"Service `{ctx.settings.aia_api_service}` selects version={colour!r}, not blue or green; "
            "fix the selector by hand before using blue-green procedures."
        )
    return str(colour)


def _other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def _deployment_of(ctx: ProcedureContext, colour: str) -> str:
    return ctx.settings.aia_deployment_blue if colour == "blue" else ctx.settings.aia_deployment_green



def rollout_followup(ctx: ProcedureContext, name: str, timeout: float | None = None) -> Iterator[Result]:
    """Rollout progress until done, failed or timed out (kubectl rollout status, watched)."""
    from bot.procedures.cluster import rollout_status

    deadline = time.monotonic() + (timeout or ctx.settings.aia_rollout_timeout_seconds)
    while True:
        result = rollout_status(ctx, {"deployment": name})
        done = result.status in (Status.OK, Status.CRITICAL)
        if not done and time.monotonic() >= deadline:
            result.status = Status.CRITICAL
            result.parts.insert(0, Text(f":hourglass: Gave up following after "
                                        f"{int(timeout or ctx.settings.aia_rollout_timeout_seconds)}s."))
            yield result
            return
        yield result
        if done:
            return
        time.sleep(ctx.settings.aia_rollout_poll_seconds)


def _change_result(title: str, plan: Plan, status: Status = Status.OK) -> Result:
    return Result(title=title, status=status, parts=[Text(plan.summary), Preformatted(plan.preview, "preview.diff",
                  "What changed")], summary=plan.summary)


def _two_step(proc_plan: Any, proc_execute: Any) -> Any:
    def run(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
        plan = proc_plan(ctx, args)
        return proc_execute(ctx, args, plan)

    return run


# -- scale ------------------------------------------------------------------------

def plan_scale(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    name, replicas = args["deployment"], args["replicas"]
    dep = ctx.kube.deployment(name)
    after = ctx.kube.scale_deployment(name, replicas, dry_run=True)
    current = (dep.get("spec") or {}).get("replicas")
    warning = None
    if replicas > ctx.settings.aia_hpa_max_replicas:
        warning = (f"{replicas} is above the HPA maximum of {ctx.settings.aia_hpa_max_replicas}: "
                   "the autoscaler may scale it back, and the quota may not allow it.")
    return Plan(
        target_key=f"deployment/{name}",
        snapshot=_dep_snapshot(dep),
        preview=f"spec.replicas: {current} → {(after.get('spec') or {}).get('replicas', replicas)}",
        summary=f"Scale `{name}` from {current} to {replicas} replicas",
        warning=warning,
    )


def execute_scale(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    name = args["deployment"]
    ctx.kube.scale_deployment(name, args["replicas"])
    result = _change_result(f"Scaled {name}", plan)
    result.followup = lambda: rollout_followup(ctx, name)
    return result


def scale(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    plan = plan_scale(ctx, args)
    if plan.warning and not args.get("confirm"):
        command = f"scale {args['deployment']} {args['replicas']} --confirm"
        return Result(
            title=f"Confirm scaling {args['deployment']} to {args['replicas']}",
            status=Status.WARNING,
            parts=[Text(f":warning: {plan.warning}\nNothing was changed. Confirm to go ahead.")],
            actions=[Action(f"Scale to {args['replicas']}", command, style="danger")],
            summary="confirmation asked: " + plan.warning,
        )
    return execute_scale(ctx, args, plan)


def _scale_risk(args: dict[str, Any]) -> RiskClass:
    return RiskClass.DESTRUCTIVE if args.get("replicas") == 0 else RiskClass.WRITE


def plan_emergency_scale_up(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    name = _deployment_of(ctx, live_colour(ctx))
    return plan_scale(ctx, {"deployment": name, "replicas": ctx.settings.aia_hpa_max_replicas})


def execute_emergency_scale_up(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    name = plan.target_key.split("/", 1)[1]
    return execute_scale(ctx, {"deployment": name, "replicas": ctx.settings.aia_hpa_max_replicas}, plan)


def plan_isolate(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    plan = plan_scale(ctx, {"deployment": args["deployment"], "replicas": 0})
    return Plan(plan.target_key, plan.snapshot, plan.preview,
                f"Isolate `{args['deployment']}`: scale it to 0 (security incident)")


def execute_isolate(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    ctx.kube.scale_deployment(args["deployment"], 0)
    return _change_result(f"Isolated {args['deployment']}", plan, Status.WARNING)


# -- restart, set image, rollback ---------------------------------------------------

def _restart_patch() -> Obj:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}


def plan_restart(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    name = args["deployment"]
    dep = ctx.kube.deployment(name)
    after = ctx.kube.patch_deployment(name, _restart_patch(), dry_run=True)
    return Plan(f"deployment/{name}", _dep_snapshot(dep), _diff(dep, after, name=name),
                f"Rolling restart of `{name}` ({(dep.get('spec') or {}).get('replicas')} replicas)")


def execute_restart(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    name = args["deployment"]
    ctx.kube.patch_deployment(name, _restart_patch())
    result = _change_result(f"Restarting {name}", plan)
    result.followup = lambda: rollout_followup(ctx, name)
    return result


def _split_image(ctx: ProcedureContext, dep: Obj, spec: str) -> tuple[str, str]:
    container, eq, image = spec.partition("=")
    if not eq:
        container, image = "", spec
    names = [c.get("name") for c in _containers(dep)]
    if not container:
        if len(names) != 1:
            raise UserError(f"`{kf.name_of(dep)}` has containers {', '.join(map(str, names))}: "
                            "say which, as CONTAINER=IMAGE.")
        container = str(names[0])
    elif container not in names:
        raise UserError(f"`{kf.name_of(dep)}` has no container `{container}`; it has {', '.join(map(str, names))}.")
    try:
        image_reference(image)
    except ValueError as exc:
        raise UserError(f"IMAGE `{image[:80]}` is not valid: {exc}",
                        "Usage: `/aia set-image DEPLOYMENT [CONTAINER=]IMAGE`") from None
    return container, image


def plan_set_image(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    name = args["deployment"]
    dep = ctx.kube.deployment(name)
    container, image = _split_image(ctx, dep, args["image"])
    # The approval binds the digest: a tag pushed again before execution makes the request stale.
    pinned = pin_image(ctx, image)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": pinned.pinned}]}}}}
    after = ctx.kube.patch_deployment(name, patch, dry_run=True)
    old = {c.get("name"): c.get("image") for c in _containers(dep)}.get(container)
    snapshot = {**_dep_snapshot(dep), "container": container, "image": pinned.pinned}
    return Plan(f"deployment/{name}", snapshot, _diff(dep, after, name=name),
                f"Set image of `{name}` container `{container}`: `{old}` → `{image}` (digest `{pinned.short}…`)")


def execute_set_image(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    name = args["deployment"]
    container, image = plan.snapshot["container"], plan.snapshot["image"]
    ctx.kube.patch_deployment(
        name, {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}
    )
    result = _change_result(f"New image on {name}", plan)
    result.followup = lambda: rollout_followup(ctx, name)
    return result


def _revisions(ctx: ProcedureContext, dep: Obj) -> dict[int, Obj]:
    uid = (dep.get("metadata") or {}).get("uid")
    owned = [
        rs for rs in ctx.kube.replica_sets()
        if any(ref.get("uid") == uid for ref in (rs.get("metadata") or {}).get("ownerReferences") or [])
    ]
    revisions: dict[int, Obj] = {}
    for rs in owned:
        value = ((rs.get("metadata") or {}).get("annotations") or {}).get("deployment.kubernetes.io/revision")
        if value and str(value).isdigit():
            revisions[int(value)] = rs
    return revisions


def _rollback_template(ctx: ProcedureContext, args: dict[str, Any], dep: Obj) -> tuple[int, int, Obj]:
    revisions = _revisions(ctx, dep)
    current = int(((dep.get("metadata") or {}).get("annotations") or {}).get("deployment.kubernetes.io/revision") or 0)
    wanted = args.get("to-revision")
    if wanted is None:
        older = [r for r in revisions if r < current]
        if not older:
            raise UserError(f"`{kf.name_of(dep)}` has no earlier revision to roll back to.")
        wanted = max(older)
    if wanted not in revisions:
        raise UserError(f"`{kf.name_of(dep)}` has no revision {wanted}; it has "
                        f"{', '.join(map(str, sorted(revisions)))}.")
    if wanted == current:
        raise UserError(f"Revision {wanted} is the current one; nothing to roll back.")
    template = dict((revisions[wanted].get("spec") or {}).get("template") or {})
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop("pod-template-hash", None)
    template["metadata"] = {**(template.get("metadata") or {}), "labels": labels}
    return current, wanted, template


def plan_rollback(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    name = args["deployment"]
    dep = ctx.kube.deployment(name)
    current, wanted, template = _rollback_template(ctx, args, dep)
    after = ctx.kube.patch_deployment(name, {"spec": {"template": template}}, dry_run=True)
    snapshot = {**_dep_snapshot(dep), "revision": current, "to": wanted}
    return Plan(f"deployment/{name}", snapshot, _diff(dep, after, name=name),
                f"Roll back `{name}` from revision {current} to {wanted}")


def execute_rollback(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    name = args["deployment"]
    dep = ctx.kube.deployment(name)
    _, _, template = _rollback_template(ctx, {**args, "to-revision": plan.snapshot["to"]}, dep)
    ctx.kube.patch_deployment(name, {"spec": {"template": template}})
    result = _change_result(f"Rolled back {name}", plan)
    result.followup = lambda: rollout_followup(ctx, name)
    return result


# -- blue-green --------------------------------------------------------------------

def _colour_labels(obj: Obj, colour: str) -> None:
    for path in (("metadata",), ("spec", "selector"), ("spec", "template", "metadata")):
        node = obj
        for key in path:
            node = node.setdefault(key, {})
        labels = node.setdefault("matchLabels" if path == ("spec", "selector") else "labels", {})
        labels["version"] = colour


def _idle_change(ctx: ProcedureContext, live: str, image: str) -> tuple[Obj | None, Obj]:
    """(the idle colour's deployment or None, the body to create or the patch to apply)."""
    idle_name = _deployment_of(ctx, _other(live))
    live_dep = ctx.kube.deployment(_deployment_of(ctx, live))
    replicas = max(int((live_dep.get("spec") or {}).get("replicas") or 0), ctx.settings.aia_hpa_min_replicas)
    try:
        idle_dep: Obj | None = ctx.kube.deployment(idle_name)
    except UserError:
        idle_dep = None
    if idle_dep is None:
        # No idle deployment (cleaned up after the last switch): a copy of the live one.
        body: Obj = {"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": idle_name,
                                  "labels": dict((live_dep.get("metadata") or {}).get("labels") or {})},
                     "spec": yaml.safe_load(yaml.safe_dump(live_dep.get("spec") or {}))}
        _colour_labels(body, _other(live))
        body["spec"]["replicas"] = replicas
        body["spec"]["template"]["spec"]["containers"][0]["image"] = image
        return None, body
    container = str(_containers(live_dep)[0].get("name"))
    current = int((idle_dep.get("spec") or {}).get("replicas") or 0)
    return idle_dep, {"spec": {"replicas": max(replicas, current),
                               "template": {"spec": {"containers": [{"name": container, "image": image}]}}}}


def plan_bluegreen_deploy(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    # Before anything else: the idle colour gets the live colour's env, service account and secrets.
    pinned = pin_image(ctx, args["image"])
    live = live_colour(ctx)
    idle = _other(live)
    idle_name = _deployment_of(ctx, idle)
    idle_dep, change = _idle_change(ctx, live, pinned.pinned)
    if idle_dep is None:
        preview = _diff({}, ctx.kube.create_deployment(change, dry_run=True), name=idle_name)
        snapshot: dict[str, Any] = {"live": live, "idle": None}
    else:
        preview = _diff(idle_dep, ctx.kube.patch_deployment(idle_name, change, dry_run=True), name=idle_name)
        snapshot = {"live": live, "idle": _dep_snapshot(idle_dep)}
    snapshot["image"] = pinned.pinned
    replicas = change["spec"]["replicas"]
    return Plan(f"deployment/{idle_name}", snapshot, preview,
                f"Deploy `{args['image']}` (digest `{pinned.short}…`) to the idle colour {idle} "
                f"(`{idle_name}`, {replicas} replicas); {live} keeps the traffic")


def execute_bluegreen_deploy(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    live = plan.snapshot["live"]
    idle = _other(live)
    idle_name = _deployment_of(ctx, idle)
    idle_dep, change = _idle_change(ctx, live, plan.snapshot["image"])
    if idle_dep is None:
        ctx.kube.create_deployment(change)
    else:
        ctx.kube.patch_deployment(idle_name, change)
    result = _change_result(f"Deploying to {idle} ({idle_name})", plan)
    result.actions = [Action("Validate", "bluegreen validate"),
                      Action(f"Switch traffic to {idle}", "bluegreen switch", style="danger")]
    result.followup = lambda: rollout_followup(ctx, idle_name)
    return result


def bluegreen_validate(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    live = live_colour(ctx)
    idle = _other(live)
    idle_name = _deployment_of(ctx, idle)
    pods = ctx.kube.pods(selector=f"version={idle}")
    ready = [p for p in pods if kf.is_ready(p)]
    service = f"{ctx.settings.aia_api_service}-{idle}"
    status, body = ctx.kube.service_health(service, ctx.settings.aia_api_port)
    healthy = status == 200 and bool(ready) and len(ready) == len(pods)
    rows = [[kf.name_of(p), "{}/{}".format(*kf.ready_count(p)), kf.status_text(p)] for p in pods]
    result = Result(
        title=f"Validation of {idle} ({idle_name})",
        status=Status.OK if healthy else Status.CRITICAL,
        parts=[
            Text(f"*Pods ready:* {len(ready)}/{len(pods)} · *GET /health via service `{service}`:* "
                 f"{'200 ' + body[:100] if status == 200 else 'failed: ' + body[:200]}"),
            Table(["POD", "READY", "STATUS"], rows, empty_text=f"no {idle} pods"),
        ],
        summary=f"{idle}: {len(ready)}/{len(pods)} ready, health {'ok' if status == 200 else 'failed'}",
    )
    if healthy:
        result.actions = [Action(f"Switch traffic to {idle}", "bluegreen switch", style="danger")]
    return result


def _plan_switch_to(ctx: ProcedureContext, target: str, why: str) -> Plan:
    service_name = ctx.settings.aia_api_service
    service = ctx.kube.service(service_name)
    live = live_colour(ctx)
    if target == live:
        raise UserError(f"Traffic already goes to {live}.")
    target_dep = ctx.kube.deployment(_deployment_of(ctx, target))
    ready = int((target_dep.get("status") or {}).get("readyReplicas") or 0)
    if ready == 0:
        raise UserError(f"{target} (`{kf.name_of(target_dep)}`) has no ready pods; "
                        "deploy and validate it first (`/aia bluegreen validate`).")
    after = ctx.kube.patch_service(service_name, {"spec": {"selector": {"version": target}}}, dry_run=True)
    snapshot = {"service": _rv(service), "live": live, "target": _dep_snapshot(target_dep), "target_ready": ready}
    going_live = _dep_snapshot(target_dep)["images"]
    try:
        leaving = _dep_snapshot(ctx.kube.deployment(_deployment_of(ctx, live)))["images"]
    except UserError:
        leaving = {}
    # The approver decides on what will serve traffic, not only on a selector diff.
    images = "\n".join([f"# goes live ({target}): {c}={i}" for c, i in going_live.items()]
                       + [f"# leaves traffic ({live}): {c}={i}" for c, i in leaving.items()])
    return Plan(f"service/{service_name}", snapshot, images + "\n" + _diff(service, after, name=service_name),
                f"{why}: service `{service_name}` from {live} to {target} ({ready} ready pods), putting live "
                + ", ".join(f"`{i}`" for i in going_live.values()))


def plan_bluegreen_switch(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    return _plan_switch_to(ctx, _other(live_colour(ctx)), "Switch traffic")


def plan_bluegreen_rollback(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    return _plan_switch_to(ctx, _other(live_colour(ctx)), "Roll traffic back")


def execute_switch(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    target = _other(plan.snapshot["live"])
    ctx.kube.patch_service(ctx.settings.aia_api_service, {"spec": {"selector": {"version": target}}})
    result = _change_result(f"Traffic now goes to {target}", plan)
    result.actions = [Action(f"Roll back to {plan.snapshot['live']}", "bluegreen rollback", style="danger")]
    return result


def plan_bluegreen_cleanup(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    live = live_colour(ctx)
    idle_name = _deployment_of(ctx, _other(live))
    dep = ctx.kube.deployment(idle_name)
    ctx.kube.delete_deployment(idle_name, dry_run=True)
    return Plan(f"deployment/{idle_name}", {"live": live, "idle": _dep_snapshot(dep)},
                f"- deployment {idle_name} ({(dep.get('spec') or {}).get('replicas')} replicas, "
                f"{', '.join(str(i) for i in _dep_snapshot(dep)['images'].values())})",
                f"Delete the idle colour's deployment `{idle_name}` ({live} keeps the traffic)")


def execute_bluegreen_cleanup(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    ctx.kube.delete_deployment(plan.target_key.split("/", 1)[1])
    return _change_result("Idle colour removed", plan)


# -- config map ---------------------------------------------------------------------

def _plan_config(ctx: ProcedureContext, pairs: dict[str, str], summary: str) -> Plan:
    name = ctx.settings.aia_config_map
    cm = ctx.kube.config_map(name)
    after = ctx.kube.patch_config_map(name, {"data": pairs}, dry_run=True)
    live_dep = _deployment_of(ctx, live_colour(ctx))
    dep = ctx.kube.deployment(live_dep)
    return Plan(f"configmap/{name}", {"configmap": _rv(cm), "restart": _dep_snapshot(dep), "deployment": live_dep},
                _diff(cm, after, keep=("data",), name=name) + f"\nthen: rollout restart deployment/{live_dep}",
                summary)


def _execute_config(ctx: ProcedureContext, pairs: dict[str, str], plan: Plan) -> Result:
    ctx.kube.patch_config_map(ctx.settings.aia_config_map, {"data": pairs})
    name = plan.snapshot["deployment"]
    ctx.kube.patch_deployment(name, _restart_patch())
    result = _change_result(f"Config changed; restarting {name}", plan)
    result.followup = lambda: rollout_followup(ctx, name)
    return result


def plan_config_set(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    pairs = args["pairs"]
    return _plan_config(ctx, pairs, "Set " + ", ".join(f"{k}={v}" for k, v in pairs.items())
                        + f" in `{ctx.settings.aia_config_map}`, then restart")


def execute_config_set(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    return _execute_config(ctx, args["pairs"], plan)


def plan_maintenance(ctx: ProcedureContext, args: dict[str, Any]) -> Plan:
    value = "true" if args["state"] == "on" else "false"
    name = ctx.settings.aia_config_map
    current = ((ctx.kube.config_map(name).get("data") or {}).get("MAINTENANCE_MODE") or "").strip()
    # The app reads an absent key as off; an approval card whose preview is "(no change)"
    # would only ask a second person to restart the API for nothing.
    if (current.lower() == "true") == (args["state"] == "on"):
        shown = f"MAINTENANCE_MODE={current}" if current else "MAINTENANCE_MODE is not set"
        raise UserError(f"Maintenance mode is already {args['state']} ({shown} in `{name}`); nothing to do.")
    return _plan_config(ctx, {"MAINTENANCE_MODE": value}, f"Maintenance mode {args['state']} (MAINTENANCE_MODE={value}), "
                        "then restart")


def execute_maintenance(ctx: ProcedureContext, args: dict[str, Any], plan: Plan) -> Result:
    return _execute_config(ctx, {"MAINTENANCE_MODE": "true" if args["state"] == "on" else "false"}, plan)


# -- backup and cleanup ---------------------------------------------------------------

_NOISE = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")
# kubectl apply keeps the whole last applied object here; for a Secret that is its data.
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_V1_KINDS = {"Service", "ConfigMap", "ServiceAccount"}


def _redact_pod_spec(spec: Obj) -> None:
    """Literal env values whose name or content looks secret, and secret-looking command lines."""
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            for env in container.get("env") or []:
                if "value" in env and env["value"] is not None:
                    env["value"] = redact_env_value(str(env.get("name") or ""), str(env["value"]))
            for field in ("command", "args"):
                if container.get(field):
                    container[field] = [redact(str(word)) for word in container[field]]


def _for_backup(kind: str, obj: Obj) -> Obj:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _NOISE}
    annotations = {k: redact(str(v)) for k, v in (meta.get("annotations") or {}).items()
                   if k not in _DROPPED_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out: Obj = {"apiVersion": obj.get("apiVersion") or ("v1" if kind in _V1_KINDS else ""), "kind": kind,
                "metadata": meta}
    for key, value in obj.items():
        if key in {"apiVersion", "kind", "metadata", "status"}:
            continue
        out[key] = copy.deepcopy(value)
    if kind == "ConfigMap":
        out["data"] = {k: redact_env_value(k, str(v)) for k, v in (out.get("data") or {}).items()}
        out.pop("binaryData", None)  # not readable, so not checkable for secrets: left out
    elif kind == "Deployment":
        template = ((out.get("spec") or {}).get("template") or {}).get("spec")
        if isinstance(template, dict):
            _redact_pod_spec(template)
    elif kind == "Service":
        # Assigned by the cluster: re-applying them elsewhere fails.
        for field in ("clusterIP", "clusterIPs"):
            (out.get("spec") or {}).pop(field, None)
    return out


def config_backup(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    from bot.store.backups import BackupStore, dump_backup

    objects = ctx.kube.list_for_backup()
    backed_up = {kind: [_for_backup(kind, obj) for obj in items] for kind, items in objects.items()}
    text = dump_backup(backed_up)
    stored = BackupStore(ctx.audit.sessions).save(ctx.caller.user_id, ctx.kube.namespace, text)
    counts = ", ".join(f"{len(items)} {kind}" for kind, items in objects.items() if items)
    name = f"backup-{ctx.kube.namespace}-{stored.created_at:%Y%m%d-%H%M%S}.yaml"
    return Result(
        title=f"Configuration backup {stored.id}",
        status=Status.OK,
        parts=[Text(f"{counts}. Secrets are not backed up (they come back from Secret Manager through the "
                    "ExternalSecret); secret-looking env and config values are redacted. Kept in the bot's "
                    f"database as backup `{stored.id}` (sha256 `{stored.sha256[:12]}`)."),
               Preformatted(text, filename=name, title="Backup")],
        summary=f"backup {stored.id}: {sum(len(v) for v in backed_up.values())} objects",
    )


def cleanup_evicted(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    evicted = [p for p in ctx.kube.pods(field_selector="status.phase=Failed")
               if (p.get("status") or {}).get("reason") == "Evicted"]
    rows = [[kf.name_of(p), kf.age((p.get("metadata") or {}).get("creationTimestamp")),
             str((p.get("status") or {}).get("message") or "")[:120]] for p in evicted]
    deleted = []
    for pod in evicted:
        try:
            ctx.kube.delete_pod(kf.name_of(pod))
            deleted.append(kf.name_of(pod))
        except UserError:
            continue  # already gone: that is what we wanted
    return Result(
        title=f"Evicted pods in {ctx.kube.namespace}",
        status=Status.OK,
        parts=[Table(["DELETED POD", "AGE", "WHY EVICTED"], rows, empty_text="no evicted pods"),
               Text(f"Deleted {len(deleted)} of {len(evicted)}; only namespace `{ctx.kube.namespace}` was touched.")],
        summary=f"deleted {len(deleted)} evicted pods",
    )


# -- declarations ---------------------------------------------------------------------

# Kubernetes rights (RBAC rules) the procedures below use; tests/test_least_privilege.py runs each
# procedure under the rendered Role and fails on a request not declared here, or a rule not used.
READ_DEPLOYMENT = can("get", "deployments", "apps")
PATCH_DEPLOYMENT = can("patch", "deployments", "apps")
SCALE = can("patch", "deployments/scale", "apps")
LIVE_COLOUR = can("get", "services", names=("{aia_api_service}",))
SWITCH = can("patch", "services", names=("{aia_api_service}",))
# /health of each colour's own Service (aia-api-blue, aia-api-green), port included in the name.
SERVICE_PROXY = can("get", "services/proxy", names=("{aia_api_service}-blue:{aia_api_port}",
                                                   "{aia_api_service}-green:{aia_api_port}"))
DELETE_COLOUR = can("delete", "deployments", "apps", names=("{aia_deployment_blue}", "{aia_deployment_green}"))
APP_CONFIG = can("get,patch", "configmaps", names=("{aia_config_map}",))
# config backup lists every kind that rebuilds the namespace (KubeGateway.list_for_backup); dr restore
# takes one first. Lists cannot be narrowed by name; Secrets are not among them.
BACKUP_READS = (
    can("list", "serviceaccounts"), can("list", "roles", "rbac.authorization.k8s.io"),
    can("list", "rolebindings", "rbac.authorization.k8s.io"),
    can("list", "configmaps"), can("list", "secretstores", "external-secrets.io"), can("list", "deployments", "apps"),
    can("list", "services"), can("list", "horizontalpodautoscalers", "autoscaling"),
    can("list", "poddisruptionbudgets", "policy"), can("list", "networkpolicies", "networking.k8s.io"),
    can("list", "ingresses", "networking.k8s.io"),
    can("list", "externalsecrets", "external-secrets.io"),
)

DEPLOYMENT = Param("deployment", "positional", "deployment name", metavar="DEPLOYMENT", required=True, convert=k8s_name)


def config_pairs_without_secrets(text: str) -> dict[str, str]:
    """KEY=VALUE pairs for the config map; secrets are refused: they belong in Secret Manager.

    A config map is readable by anything that can read the namespace and lands in backups
    and the audit log; a password put there by mistake at 3 a.m. would be everywhere.
    """
    pairs = config_pairs(text)
    for key, value in pairs.items():
        if looks_secret_key(key) or looks_secret_value(value):
            what = "is named like a secret" if looks_secret_key(key) else "has a value that looks like a credential"
            raise ValueError(f"{key} {what}: secrets belong in Secret Manager (the ExternalSecret syncs them "
                             "into the namespace), not in the config map; nothing was changed")
    return pairs


def _config_risk(safe_keys: set[str]) -> Callable[[dict[str, Any]], RiskClass]:
    def risk(args: dict[str, Any]) -> RiskClass:
        return RiskClass.WRITE if set(args.get("pairs") or {}) <= safe_keys else RiskClass.DESTRUCTIVE

    return risk


def build(safe_keys: set[str]) -> list[Procedure]:
    """The procedures; ``safe_keys`` decides when `config set` needs no approval."""
    return [
        Procedure(
            name="scale", summary="Set a deployment's replicas (0 needs approval)", risk=RiskClass.WRITE,
            kube=(READ_DEPLOYMENT, SCALE),
            runbook=("Performance Troubleshooting › High CPU Usage", "Security Incident › Isolate affected components"),
            run=scale, plan=plan_scale, execute=execute_scale, risk_for=_scale_risk,
            params=(DEPLOYMENT, Param("replicas", "positional", "replica count", metavar="N", required=True,
                                      convert=replica_count),
                    Param("confirm", "flag", "go ahead above the HPA maximum"), BREAK_GLASS),
            examples=("/aia scale aia-api-blue 4",),
        ),
        Procedure(
            name="emergency scale-up", summary="Scale the live colour to the HPA maximum (runbook: 5)",
            kube=(LIVE_COLOUR, READ_DEPLOYMENT, SCALE),
            risk=RiskClass.WRITE, runbook=("System Down › Scale up critical services",),
            run=_two_step(plan_emergency_scale_up, execute_emergency_scale_up),
            plan=plan_emergency_scale_up, execute=execute_emergency_scale_up,
        ),
        Procedure(
            name="restart", summary="Rolling restart of a deployment, progress in the thread", risk=RiskClass.WRITE,
            kube=(READ_DEPLOYMENT, PATCH_DEPLOYMENT),
            runbook=(SECTION_CONFIG, "Security Incident › Rotate secrets"),
            run=_two_step(plan_restart, execute_restart), plan=plan_restart, execute=execute_restart,
            params=(DEPLOYMENT,),
        ),
        Procedure(
            name="bluegreen deploy", summary="Put IMAGE on the idle colour and follow it until Ready",
            kube=(LIVE_COLOUR, READ_DEPLOYMENT, PATCH_DEPLOYMENT, can("create", "deployments", "apps")),
            risk=RiskClass.WRITE, runbook=(SECTION_BG + " › Prepare Green Environment",),
            run=_two_step(plan_bluegreen_deploy, execute_bluegreen_deploy),
            plan=plan_bluegreen_deploy, execute=execute_bluegreen_deploy,
            params=(Param("image", "positional", "image with tag", metavar="IMAGE", required=True,
                          convert=image_reference),),
            examples=("/aia bluegreen deploy gcr.io/a-467519/aia-system:v1.5.1",),
        ),
        Procedure(
            name="bluegreen validate", summary="Idle colour: pods ready and /health through the service proxy",
            kube=(LIVE_COLOUR, can("list", "pods"), SERVICE_PROXY),
            risk=RiskClass.WRITE, runbook=(SECTION_BG + " › Validate Green Environment",), run=bluegreen_validate,
        ),
        Procedure(
            name="bluegreen switch", summary="Send traffic to the idle colour (service selector)",
            kube=(LIVE_COLOUR, READ_DEPLOYMENT, can("list", "pods"), SWITCH),
            risk=RiskClass.DESTRUCTIVE, runbook=(SECTION_BG + " › Switch Traffic",),
            run=_two_step(plan_bluegreen_switch, execute_switch), plan=plan_bluegreen_switch, execute=execute_switch,
            params=(BREAK_GLASS,),
        ),
        Procedure(
            name="bluegreen rollback", summary="Send traffic back to the previous colour",
            kube=(LIVE_COLOUR, READ_DEPLOYMENT, can("list", "pods"), SWITCH),
            risk=RiskClass.DESTRUCTIVE, runbook=(SECTION_BG + " › Switch Traffic",),
            run=_two_step(plan_bluegreen_rollback, execute_switch), plan=plan_bluegreen_rollback,
            execute=execute_switch, params=(BREAK_GLASS,),
        ),
        Procedure(
            name="bluegreen cleanup", summary="Delete the idle colour's deployment after a switch",
            kube=(LIVE_COLOUR, READ_DEPLOYMENT, DELETE_COLOUR),
            risk=RiskClass.DESTRUCTIVE, runbook=(SECTION_BG + " › Cleanup Old Version",),
            run=_two_step(plan_bluegreen_cleanup, execute_bluegreen_cleanup), plan=plan_bluegreen_cleanup,
            execute=execute_bluegreen_cleanup, params=(BREAK_GLASS,),
        ),
        Procedure(
            name="set-image", summary="Change a deployment's image (rolling update)", risk=RiskClass.DESTRUCTIVE,
            kube=(READ_DEPLOYMENT, PATCH_DEPLOYMENT),
            runbook=(SECTION_ROLLING,), run=_two_step(plan_set_image, execute_set_image),
            plan=plan_set_image, execute=execute_set_image,
            params=(DEPLOYMENT, Param("image", "positional", "[CONTAINER=]IMAGE", metavar="[CONTAINER=]IMAGE",
                                      required=True), BREAK_GLASS),
            examples=("/aia set-image aia-api-blue api=gcr.io/a-467519/aia-system:v1.5.1",),
        ),
        Procedure(
            name="rollback", summary="Undo a deployment's rollout (to the previous or a given revision)",
            kube=(READ_DEPLOYMENT, PATCH_DEPLOYMENT, can("list", "replicasets", "apps")),
            risk=RiskClass.DESTRUCTIVE, runbook=(SECTION_ROLLING,), run=_two_step(plan_rollback, execute_rollback),
            plan=plan_rollback, execute=execute_rollback,
            params=(DEPLOYMENT, Param("to-revision", "option", "revision number", metavar="N",
                                      convert=bounded_int(1, 1_000_000)), BREAK_GLASS),
        ),
        Procedure(
            name="isolate", summary="Security incident: scale a deployment to 0", risk=RiskClass.DESTRUCTIVE,
            kube=(READ_DEPLOYMENT, SCALE),
            runbook=("Security Incident › Isolate affected components",), run=_two_step(plan_isolate, execute_isolate),
            plan=plan_isolate, execute=execute_isolate, params=(DEPLOYMENT, BREAK_GLASS),
        ),
        Procedure(
            name="maintenance", summary="Maintenance mode on or off (config map), then restart",
            kube=(APP_CONFIG, LIVE_COLOUR, READ_DEPLOYMENT, PATCH_DEPLOYMENT),
            risk=RiskClass.DESTRUCTIVE, runbook=("Database Emergency › Enable maintenance mode",),
            run=_two_step(plan_maintenance, execute_maintenance), plan=plan_maintenance, execute=execute_maintenance,
            params=(Param("state", "positional", "on or off", metavar="on|off", required=True,
                          convert=lambda t: _on_off(t)), BREAK_GLASS),
        ),
        Procedure(
            name="config set", summary="Change config map keys, then restart (safe keys need no approval)",
            kube=(APP_CONFIG, LIVE_COLOUR, READ_DEPLOYMENT, PATCH_DEPLOYMENT),
            risk=RiskClass.WRITE, runbook=(SECTION_CONFIG,), run=_two_step(plan_config_set, execute_config_set),
            plan=plan_config_set, execute=execute_config_set,
            risk_for=_config_risk(safe_keys),
            params=(Param("pairs", "rest", "KEY=VALUE pairs", metavar="KEY=VALUE [KEY=VALUE...]", required=True,
                          convert=config_pairs_without_secrets), BREAK_GLASS),
            examples=("/aia config set LOG_LEVEL=DEBUG",),
        ),
        Procedure(
            name="config backup", summary="Namespace configuration as YAML (ExternalSecrets, never Secrets), kept in the database",
            kube=BACKUP_READS,
            risk=RiskClass.WRITE, runbook=("Backup & Recovery › Configuration Backups",), run=config_backup,
        ),
        Procedure(
            name="cleanup evicted", summary="Delete Evicted pods of the bot's namespace only",
            kube=(can("list", "pods"), can("delete", "pods")),
            risk=RiskClass.WRITE, runbook=("Performance Troubleshooting › Storage Issues",), run=cleanup_evicted,
        ),
    ]


def _on_off(text: str) -> str:
    value = text.lower()
    if value not in ("on", "off"):
        raise ValueError("say on or off")
    return value

