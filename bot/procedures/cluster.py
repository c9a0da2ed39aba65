"""Read-only Kubernetes procedures: triage, pods, events, nodes, resources, rollouts, secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.errors import BackendUnavailable
from bot.procedures import kube_format as kf
from bot.registry import Param, Procedure, ProcedureContext, RiskClass, can
from bot.results import Action, Fields, Result, Status, Table, Text
from bot.validators import choice, duration, k8s_name, label_selector

SECTION_SYSTEM_DOWN = "Emergency Procedures › System Down"
SECTION_PODS = "Troubleshooting › Pods Not Starting"
SECTION_RESOURCES = "Troubleshooting › Resource Constraints"


def _deployment_row(dep: dict[str, Any]) -> list[str]:
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    desired = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    ready = int(status.get("readyReplicas") or 0)
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    image = containers[0].get("image", "?").rsplit("/", 1)[-1] if containers else "?"
    return [kf.name_of(dep), f"{ready}/{desired}", str(status.get("updatedReplicas") or 0), image]


def status(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    kube = ctx.kube
    nodes = kube.nodes()
    pods = kube.pods()
    deployments = kube.deployments()

    not_ready_nodes = [kf.name_of(n) for n in nodes if not kf.node_ready(n)]
    pressured = [f"{kf.name_of(n)} ({', '.join(kf.node_problems(n))})" for n in nodes if kf.node_problems(n)]
    troubled = [
        p for p in pods
        if (p.get("status") or {}).get("phase") != "Succeeded" and (not kf.is_ready(p) or kf.restarts(p) > 0)
    ]
    dead_deployments = [
        d for d in deployments
        if int((d.get("spec") or {}).get("replicas") or 0) > 0
        and int((d.get("status") or {}).get("readyReplicas") or 0) == 0
    ]
    short_deployments = [
        d for d in deployments
        if int((d.get("status") or {}).get("readyReplicas") or 0) < int((d.get("spec") or {}).get("replicas") or 0)
    ]

    result = Result(title=f"System status · {kube.namespace}")
    ready_nodes = len(nodes) - len(not_ready_nodes)
    node_line = f"*Nodes:* {ready_nodes}/{len(nodes)} ready"
    if not_ready_nodes:
        node_line += f" — NotReady: {', '.join(not_ready_nodes)}"
    if pressured:
        node_line += f" — pressure: {', '.join(pressured)}"
    ready_pods = sum(1 for p in pods if kf.is_ready(p))
    result.add(Text(f"{node_line}\n*Pods:* {ready_pods}/{len(pods)} ready"))
    result.add(Table(["DEPLOYMENT", "READY", "UP-TO-DATE", "IMAGE"], [_deployment_row(d) for d in deployments],
                     title="Deployments", empty_text="no deployments"))
    if troubled:
        result.add(
            Table(
                ["POD", "READY", "STATUS", "RESTARTS", "LAST TERMINATION"],
                [
                    [
                        kf.name_of(p),
                        "{}/{}".format(*kf.ready_count(p)),
                        kf.status_text(p),
                        str(kf.restarts(p)),
                        ", ".join(filter(None, (kf.last_termination(c) for c in kf.container_statuses(p)))) or "-",
                    ]
                    for p in sorted(troubled, key=kf.restarts, reverse=True)
                ],
                title="Pods not ready or restarting",
            )
        )

    alert_count = 0
    try:
        alerts = ctx.prometheus.firing_alerts()
        alert_count = len(alerts)
        rows = [
            [
                a["metric"].get("alertname", "?"),
                a["metric"].get("severity", "-"),
                ", ".join(
                    f"{k}={v}" for k, v in sorted(a["metric"].items())
                    if k not in {"__name__", "alertname", "alertstate", "severity"}
                )[:120] or "-",
            ]
            for a in alerts
        ]
        result.add(Table(["ALERT", "SEVERITY", "LABELS"], rows, title="Firing alerts", empty_text="no alerts firing"))
    except BackendUnavailable as exc:
        result.add(Text(f"*Alerts:* unknown — {exc}"))

    if not_ready_nodes or dead_deployments:
        result.status = Status.CRITICAL
    elif troubled or pressured or short_deployments or alert_count:
        result.status = Status.WARNING
    else:
        result.status = Status.OK
    result.summary = (
        f"nodes {ready_nodes}/{len(nodes)} ready, pods {ready_pods}/{len(pods)} ready, "
        f"{len(troubled)} troubled, {alert_count} alerts firing"
    )
    result.actions = [Action("Events", "events --since 1h"), Action("Top pods", "top pods")]
    if troubled:
        worst = kf.name_of(max(troubled, key=kf.restarts))
        result.actions.insert(0, Action(f"Describe {worst}"[:75], f"describe pod {worst}"))
    return result


def pods(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    selector = args.get("selector")
    items = ctx.kube.pods(selector=selector)
    rows = [
        [
            kf.name_of(p),
            "{}/{}".format(*kf.ready_count(p)),
            kf.status_text(p),
            str(kf.restarts(p)),
            kf.age((p.get("metadata") or {}).get("creationTimestamp")),
            str((p.get("spec") or {}).get("nodeName") or "-"),
        ]
        for p in sorted(items, key=kf.name_of)
    ]
    not_ready = sum(1 for p in items if not kf.is_ready(p) and (p.get("status") or {}).get("phase") != "Succeeded")
    where = f" matching `{selector}`" if selector else ""
    return Result(
        title=f"Pods in {ctx.kube.namespace}{where}",
        status=Status.WARNING if not_ready else Status.OK,
        parts=[Table(["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"], rows, empty_text="no pods found")],
        summary=f"{len(items)} pods, {not_ready} not ready",
    )


def describe_pod(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    name = args["name"]
    pod = ctx.kube.pod(name)
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    st = pod.get("status") or {}
    result = Result(title=f"Pod {name}", status=Status.OK if kf.is_ready(pod) else Status.WARNING)
    result.add(
        Fields(
            [
                ("Status", kf.status_text(pod)),
                ("Node", str(spec.get("nodeName") or "-")),
                ("Pod IP", str(st.get("podIP") or "-")),
                ("Started", f"{kf.age(st.get('startTime'))} ago"),
                ("Labels", ", ".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())) or "-"),
                ("QoS", str(st.get("qosClass") or "-")),
            ]
        )
    )
    statuses = {c.get("name"): c for c in kf.container_statuses(pod)}
    rows = []
    oom = []
    for container in spec.get("containers") or []:
        cs = statuses.get(container.get("name"), {})
        state = cs.get("state") or {}
        state_text = next(iter(state.keys()), "unknown")
        detail = (state.get(state_text) or {}).get("reason")
        last = kf.last_termination(cs)
        if last and last.startswith("OOMKilled"):
            oom.append(container.get("name"))
        limits = (container.get("resources") or {}).get("limits") or {}
        rows.append(
            [
                str(container.get("name")),
                str(container.get("image", "?")).rsplit("/", 1)[-1],
                f"{state_text}" + (f" ({detail})" if detail else ""),
                "yes" if cs.get("ready") else "no",
                str(cs.get("restartCount", 0)),
                last or "-",
                f"cpu {limits.get('cpu', '-')}, mem {limits.get('memory', '-')}",
            ]
        )
    result.add(Table(["CONTAINER", "IMAGE", "STATE", "READY", "RESTARTS", "LAST TERMINATION", "LIMITS"], rows))
    if oom:
        result.status = Status.CRITICAL
        result.add(Text(f":boom: *OOMKilled* last time: {', '.join(oom)} — the memory limit is too low or the app leaks. "
                        f"Check `/aia top pods --sort memory` and `/aia logs {name} --previous --grep memory|oom`."))
    conditions = [
        f"{c.get('type')}={c.get('status')}" + (f" ({c.get('reason')})" if c.get("reason") else "")
        for c in st.get("conditions") or []
    ]
    if conditions:
        result.add(Text("*Conditions:* " + ", ".join(conditions)))
    events = ctx.kube.events(field_selector=f"involvedObject.name={name}")
    result.add(_events_table(events, title="Events", limit=15))
    result.summary = f"{kf.status_text(pod)}, restarts {kf.restarts(pod)}" + (", OOMKilled" if oom else "")
    result.actions = [
        Action("Logs", f"logs {name} --since 1h"),
        Action("Previous logs", f"logs {name} --previous"),
    ]
    return result


def _events_table(events: list[dict[str, Any]], title: str, limit: int | None = None) -> Table:
    ordered = sorted(events, key=lambda e: kf.event_time(e) or "", reverse=True)
    if limit:
        ordered = ordered[:limit]
    rows = [
        [
            kf.age(kf.event_time(e)),
            str(e.get("type") or "-"),
            str(e.get("reason") or "-"),
            f"{(e.get('involvedObject') or {}).get('kind', '?').lower()}/{(e.get('involvedObject') or {}).get('name', '?')}",
            str(e.get("message") or "").replace("\n", " ")[:200] + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else ""),
        ]
        for e in ordered
    ]
    return Table(["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows, title=title, empty_text="no events")


def events(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    since = args["since"]
    cutoff = datetime.now(UTC) - timedelta(seconds=since)
    items = [e for e in ctx.kube.events() if (kf.parse_time(kf.event_time(e)) or cutoff) >= cutoff]
    if args.get("warnings"):
        items = [e for e in items if e.get("type") == "Warning"]
    warnings = sum(1 for e in items if e.get("type") == "Warning")
    from bot.validators import format_duration

    return Result(
        title=f"Events in {ctx.kube.namespace}, last {format_duration(since)}",
        status=Status.WARNING if warnings else Status.OK,
        parts=[_events_table(items, title=f"{len(items)} events, {warnings} warnings")],
        summary=f"{len(items)} events, {warnings} warnings",
    )


def nodes(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    items = ctx.kube.nodes()
    rows = []
    for node in sorted(items, key=kf.name_of):
        labels = (node.get("metadata") or {}).get("labels") or {}
        roles = [k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")]
        addresses = {a.get("type"): a.get("address") for a in (node.get("status") or {}).get("addresses") or []}
        state = "Ready" if kf.node_ready(node) else "NotReady"
        problems = kf.node_problems(node)
        rows.append(
            [
                kf.name_of(node),
                ",".join([state, *problems]),
                ",".join(roles) or "<none>",
                kf.age((node.get("metadata") or {}).get("creationTimestamp")),
                str(((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") or "?"),
                str(addresses.get("InternalIP") or "-"),
            ]
        )
    bad = sum(1 for n in items if not kf.node_ready(n))
    return Result(
        title="Nodes",
        status=Status.CRITICAL if bad else Status.OK,
        parts=[Table(["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"], rows, empty_text="no nodes")],
        summary=f"{len(items) - bad}/{len(items)} nodes ready",
    )


def top_pods(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    sort = args.get("sort") or "cpu"
    metrics = ctx.kube.pod_metrics()
    rows_data = []
    for item in metrics:
        cpu = sum(kf.millicores((c.get("usage") or {}).get("cpu")) for c in item.get("containers") or [])
        mem = sum(kf.parse_quantity((c.get("usage") or {}).get("memory")) for c in item.get("containers") or [])
        rows_data.append((kf.name_of(item), cpu, mem))
    rows_data.sort(key=lambda r: r[1] if sort == "cpu" else r[2], reverse=True)
    rows = [[name, f"{cpu}m", kf.human_bytes(mem)] for name, cpu, mem in rows_data]
    top = rows_data[0] if rows_data else None
    return Result(
        title=f"Pod usage in {ctx.kube.namespace} (by {sort})",
        parts=[Table(["POD", "CPU", "MEMORY"], rows, empty_text="no metrics (is metrics-server running?)")],
        summary=f"{len(rows)} pods; top {top[0]}" if top else "no pod metrics",
    )


def top_nodes(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    allocatable = {
        kf.name_of(n): (n.get("status") or {}).get("allocatable") or {} for n in ctx.kube.nodes()
    }
    rows = []
    hot = 0
    for item in sorted(ctx.kube.node_metrics(), key=kf.name_of):
        name = kf.name_of(item)
        cpu = kf.millicores((item.get("usage") or {}).get("cpu"))
        mem = kf.parse_quantity((item.get("usage") or {}).get("memory"))
        alloc = allocatable.get(name, {})
        cpu_pct = 100 * cpu / max(1, kf.millicores(alloc.get("cpu")))
        mem_pct = 100 * mem / max(1.0, kf.parse_quantity(alloc.get("memory")))
        hot += cpu_pct >= 90 or mem_pct >= 90
        rows.append([name, f"{cpu}m", f"{cpu_pct:.0f}%", kf.human_bytes(mem), f"{mem_pct:.0f}%"])
    return Result(
        title="Node usage",
        status=Status.WARNING if hot else Status.OK,
        parts=[Table(["NODE", "CPU", "CPU%", "MEMORY", "MEMORY%"], rows, empty_text="no node metrics")],
        summary=f"{len(rows)} nodes, {hot} at 90% or more",
    )


def quota(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    rows = []
    near = 0
    for rq in ctx.kube.resource_quotas():
        st = rq.get("status") or {}
        hard = st.get("hard") or (rq.get("spec") or {}).get("hard") or {}
        used = st.get("used") or {}
        for resource in sorted(hard):
            limit = kf.parse_quantity(hard[resource])
            value = kf.parse_quantity(used.get(resource, "0"))
            pct = 100 * value / limit if limit else 0
            near += pct >= 90
            rows.append([kf.name_of(rq), resource, str(used.get(resource, "0")), str(hard[resource]), f"{pct:.0f}%"])
    return Result(
        title=f"Resource quotas in {ctx.kube.namespace}",
        status=Status.WARNING if near else Status.OK,
        parts=[Table(["QUOTA", "RESOURCE", "USED", "HARD", "USE"], rows, empty_text="no resource quotas")],
        summary=f"{len(rows)} quota lines, {near} at 90% or more",
    )


def rollout_status(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    """kubectl rollout status, one look (no waiting): the same rules kubectl applies."""
    name = args["deployment"]
    dep = ctx.kube.deployment(name)
    meta, spec, st = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    desired = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(st.get("updatedReplicas") or 0)
    replicas = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    progressing: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), {})
    revision = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", "?")
    if int(meta.get("generation") or 0) > int(st.get("observedGeneration") or 0):
        text, state = "Waiting for the deployment spec update to be observed…", Status.WARNING
    elif progressing.get("reason") == "ProgressDeadlineExceeded":
        text, state = f"Rollout *failed*: progress deadline exceeded. {progressing.get('message', '')}", Status.CRITICAL
    elif updated < desired:
        text, state = f"Waiting for rollout to finish: {updated} of {desired} new replicas have been updated…", Status.WARNING
    elif replicas > updated:
        text, state = f"Waiting for rollout to finish: {replicas - updated} old replicas are pending termination…", Status.WARNING
    elif available < updated:
        text, state = f"Waiting for rollout to finish: {available} of {updated} updated replicas are available…", Status.WARNING
    else:
        text, state = f"Deployment `{name}` successfully rolled out.", Status.OK
    return Result(
        title=f"Rollout of {name}",
        status=state,
        parts=[Text(text), Fields([("Revision", str(revision)), ("Desired", str(desired)), ("Updated", str(updated)),
                                   ("Available", str(available))])],
        summary=text.replace("*", "")[:200],
    )


def secrets(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    """Sync status from the ExternalSecrets alone: the bot holds no right to read Secrets, not
    even their names. The operator records the Secret it wrote in ``status.binding``."""
    kube = ctx.kube
    failing = 0
    rows = []
    for es in sorted(kube.external_secrets(), key=kf.name_of):
        spec, st = es.get("spec") or {}, es.get("status") or {}
        ready: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
        ok = ready.get("status") == "True"
        failing += not ok
        target = str((spec.get("target") or {}).get("name") or kf.name_of(es))
        written = (st.get("binding") or {}).get("name")
        rows.append(
            [
                kf.name_of(es),
                target,
                "yes" if written else "not yet",
                "Ready" if ok else "NOT READY",
                str(ready.get("reason") or "-"),
                kf.age(st.get("refreshTime")) if st.get("refreshTime") else "never",
                str(ready.get("message") or "")[:150] if not ok else "",
            ]
        )
    return Result(
        title=f"Secrets in {kube.namespace}: sync from Secret Manager (values are never read)",
        status=Status.WARNING if failing else Status.OK,
        parts=[
            Table(["EXTERNALSECRET", "SECRET", "WRITTEN", "STATUS", "REASON", "LAST SYNC", "MESSAGE"], rows,
                  title="ExternalSecrets (Secret Manager sync)", empty_text="no ExternalSecrets"),
        ],
        summary=f"{len(rows)} external secrets, {failing} not syncing",
    )


PROCEDURES = [
    Procedure(
        name="status",
        kube=(can("list", "nodes", cluster=True), can("list", "pods"), can("list", "deployments", "apps")),
        summary="System Down triage: nodes, pods not ready or restarting, deployments, firing alerts",
        risk=RiskClass.READ,
        runbook=(SECTION_SYSTEM_DOWN,),
        run=status,
    ),
    Procedure(
        name="pods",
        kube=(can("list", "pods"),),
        summary="List pods (kubectl get pods)",
        risk=RiskClass.READ,
        runbook=(SECTION_PODS,),
        run=pods,
        params=(Param("selector", "positional", "label selector, e.g. app=aia-api,version=blue",
                      metavar="LABEL-SELECTOR", convert=label_selector),),
        examples=("/aia pods", "/aia pods version=green"),
    ),
    Procedure(
        name="describe pod",
        kube=(can("get", "pods"), can("list", "events")),
        summary="Pod details: containers, restarts, last termination (OOMKilled), conditions, events",
        risk=RiskClass.READ,
        runbook=(SECTION_PODS,),
        run=describe_pod,
        params=(Param("name", "positional", "pod name", metavar="NAME", required=True, convert=k8s_name),),
    ),
    Procedure(
        name="events",
        kube=(can("list", "events"),),
        summary="Recent events of the namespace, newest first",
        risk=RiskClass.READ,
        runbook=(SECTION_PODS,),
        run=events,
        params=(
            Param("since", "option", "how far back", metavar="DURATION", default=3600, convert=duration(7 * 86400)),
            Param("warnings", "flag", "only Warning events"),
        ),
        examples=("/aia events --since 30m", "/aia events --warnings"),
    ),
    Procedure(
        name="nodes",
        kube=(can("list", "nodes", cluster=True),),
        summary="Nodes with readiness, pressure conditions, version and IP (kubectl get nodes -o wide)",
        risk=RiskClass.READ,
        runbook=(SECTION_SYSTEM_DOWN, "Troubleshooting › Image Pull Issues"),
        run=nodes,
    ),
    Procedure(
        name="top pods",
        kube=(can("list", "pods", "metrics.k8s.io"),),
        summary="CPU and memory of each pod (metrics.k8s.io)",
        risk=RiskClass.READ,
        runbook=(SECTION_RESOURCES, "Performance Troubleshooting › High CPU Usage",
                 "Performance Troubleshooting › Memory Issues"),
        run=top_pods,
        params=(Param("sort", "option", "sort by", metavar="cpu|memory", default="cpu", convert=choice("cpu", "memory")),),
        examples=("/aia top pods --sort memory",),
    ),
    Procedure(
        name="top nodes",
        kube=(can("list", "nodes", cluster=True), can("list", "nodes", "metrics.k8s.io", cluster=True)),
        summary="CPU and memory of each node against what it can allocate",
        risk=RiskClass.READ,
        runbook=(SECTION_RESOURCES, "Performance Troubleshooting › Storage Issues"),
        run=top_nodes,
    ),
    Procedure(
        name="quota",
        kube=(can("list", "resourcequotas"),),
        summary="Resource quotas: used against hard limits",
        risk=RiskClass.READ,
        runbook=(SECTION_RESOURCES,),
        run=quota,
    ),
    Procedure(
        name="rollout status",
        kube=(can("get", "deployments", "apps"),),
        summary="Where a deployment's rollout stands (kubectl rollout status)",
        risk=RiskClass.READ,
        runbook=("Deployment Procedures › Rolling Updates",),
        run=rollout_status,
        params=(Param("deployment", "positional", "deployment name", metavar="DEPLOYMENT", required=True,
                      convert=k8s_name),),
        examples=("/aia rollout status aia-api-blue",),
    ),
    Procedure(
        name="secrets",
        kube=(can("list", "externalsecrets", "external-secrets.io"),),
        summary="ExternalSecret sync status and the Secrets they write — never a secret value",
        risk=RiskClass.READ,
        runbook=("Access & Authentication › Secret Management", "Troubleshooting › Secret Management Issues"),
        run=secrets,
    ),
]
