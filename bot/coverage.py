"""Which procedure implements each command of RUNBOOK.md, or why none does.

A test reads every command line of the runbook's code blocks and fails when one
is matched by nothing here; ``aia-bot docs`` renders this as docs/coverage.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Gap:
    """Not a procedure (yet): who will do it, or why the bot never will."""

    where: str
    why: str


Target = str | Gap

CLOUD_SQL = Gap("not filed yet: Cloud SQL procedures", "needs the Cloud SQL Admin adapter and its local server")

# (pattern over one command line, target). First match wins; order matters.
COVERAGE: list[tuple[str, Target]] = [
    (r"^- alert: HighErrorRate|^expr: |^alert: ", Gap("alert threads", "shipped as a Prometheus rule file")),
    (r"gcloud container clusters get-credentials", Gap("deployment", "the bot runs in-cluster (Workload Identity) or with KUBECONFIG; `aia-bot check` verifies access")),
    (r"kubectl cluster-info", "status"),
    (r"kubectl get secrets", "secrets"),
    (r"kubectl (get|describe) externalsecrets?", "secrets"),
    (r"gcloud secrets versions add aia-database-url", "secrets rotate"),  # with the Cloud SQL user's password
    (r"gcloud secrets versions add", "secrets rotate"),
    (r"gcloud secrets list", "secrets versions"),
    (r"gcloud secrets access-secret", Gap("never", "the bot never shows a secret value; `/aia secrets` shows names and sync status")),
    (r"container_memory_usage_bytes", "metrics"),
    (r"rate\(http_requests_total", "metrics"),
    (r"kubectl apply -f aia-deployment-green\.yaml", "bluegreen deploy"),
    (r"kubectl wait --for=condition=Ready pod -l version=green", "bluegreen deploy"),
    (r"kubectl get pods -l version=green", "pods"),
    (r"kubectl port-forward service/aia-api-green|curl http://localhost:8001/health", "bluegreen validate"),
    (r"kubectl patch service aia-api", "bluegreen switch"),
    (r"kubectl describe service aia-api", "bluegreen switch"),
    (r"kubectl delete deployment", "bluegreen cleanup"),
    (r"kubectl set image", "set-image"),
    (r"kubectl rollout status", "rollout status"),
    (r"kubectl rollout undo", "rollback"),
    (r"kubectl patch configmap .*MAINTENANCE_MODE", "maintenance"),
    (r"kubectl patch configmap", "config set"),
    (r"kubectl rollout restart", "restart"),
    (r"kubectl get pods --all-namespaces \| grep Evicted", "cleanup evicted"),
    (r"kubectl get pods --all-namespaces", "status"),
    (r"kubectl get pods -n", "pods"),
    (r"kubectl describe pod", "describe pod"),
    (r"kubectl logs -n aia-production --since=1h", "logs"),
    (r"kubectl logs .*--previous", "logs"),
    (r"kubectl logs .*grep", "logs"),
    (r"gcloud container images list-tags", "images"),
    (r"kubectl get nodes", "nodes"),
    (r"kubectl top nodes", "top nodes"),
    (r"kubectl top pods", "top pods"),
    (r"kubectl describe resourcequota", "quota"),
    (r"kubectl describe nodes", "top nodes"),
    (r"kubectl exec .*(nslookup|psql)", "db check"),
    (r"kubectl exec", Gap("never as written", "arbitrary exec from chat is a security hazard; `/aia db check` runs one fixed script")),
    (r"kubectl scale deployment <affected-deployment> --replicas=0", "isolate"),
    (r"kubectl scale deployment", "scale"),
    (r"gcloud sql backups create", "db backup"),
    (r"gcloud sql backups list", "db backups"),
    (r"gcloud sql backups restore", "db restore"),
    (r"gcloud sql instances (describe|list)", "db status"),
    (r"gcloud sql ", CLOUD_SQL),
    (r"gcloud compute instances list", Gap("not filed yet: Compute Engine check", "node VMs are visible through `/aia nodes`")),
    (r"kubectl get (all|roles)", "config backup"),
    (r"kubectl delete namespace", Gap("never (deliberately refused)", "deleting the namespace destroys everything, Secrets and volumes included, before a restore that may fail; `/aia dr plan` and `/aia dr restore` recreate only what is missing")),
    (r"kubectl apply -f backup-", "dr restore"),
]

_COMMAND = re.compile(r"^\s*(kubectl|gcloud|curl)\b|container_memory_usage_bytes|rate\(http_requests_total|^\s*- alert:")


def runbook_commands(runbook: Path) -> list[tuple[str, str]]:
    """(section heading, command line) for each command in the runbook's code blocks."""
    commands: list[tuple[str, str]] = []
    heading = ""
    in_code = False
    for raw in runbook.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif re.match(r"^\d+\.\s+\*\*", line):
                heading = re.sub(r"[*\d.]", "", line).strip()
            continue
        if _COMMAND.search(line):
            commands.append((heading, line.rstrip(" \\")))
    return commands


def target_of(command: str) -> Target | None:
    for pattern, target in COVERAGE:
        if re.search(pattern, command):
            return target
    return None


def coverage_markdown(runbook: Path) -> str:
    lines = [
        "# Runbook coverage",
        "",
        "Generated by `aia-bot docs` from the procedure registry and `bot/coverage.py`;",
        "a test fails when this file is stale or a runbook command is not covered.",
        "",
        "| Runbook section | Command | Bot |",
        "| --- | --- | --- |",
    ]
    for heading, command in runbook_commands(runbook):
        target = target_of(command)
        if isinstance(target, str):
            cell = f"`/aia {target}`"
        elif isinstance(target, Gap):
            cell = f"{target.where}: {target.why}"
        else:
            cell = "**not covered**"
        shown = command.replace("|", "\\|")
        lines.append(f"| {heading} | `{shown}` | {cell} |")
    return "\n".join(lines) + "\n"
