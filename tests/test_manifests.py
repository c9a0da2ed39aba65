"""The deployment files as they would be applied: every kustomization rendered and checked.

`scripts/check_manifests.py` (in the .venv-deploy-checks virtualenv) renders each overlay with
`kubectl kustomize` and validates every object (kubernetes-validate --strict, the CRD schemas
in manifests/crd-schemas, probes, limits, digests, RBAC), runs checkov and hadolint; the
deliberately broken kustomizations under tests/manifests/ must each fail naming the object
and the field. The properties docs/deploy.md promises (non-root, read-only root, only the
Slack paths public, the documented Slack scopes) are checked on the rendered objects.
Least privilege is proved separately: tests/test_least_privilege.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import BotConfigFile
from tests.harness.bot_process import aia_bot_executable
from tests.harness.manifests import render

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = MANIFESTS / "overlays"
SLACK_MANIFEST = MANIFESTS / "slack-app-manifest.yaml"

APP_NAMESPACE = "aia-production"
BOT_NAMESPACE = "aia-bot"
PUBLIC_PATHS = {"/slack/events", "/alertmanager"}
READ_VERBS = {"get", "list", "watch"}
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "approve", "sign"}
SLACK_BOT_SCOPES = {
    "commands",
    "chat:write",
    "files:write",
    "users:read",
    "users:read.email",
    "usergroups:read",
    "im:write",
    "channels:read",
    "channels:history",
    "groups:history",
    "im:history",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "IngressClass",
    "PriorityClass",
}

Obj = dict[str, Any]


def _yaml_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*")
                  if p.suffix in {".yaml", ".yml"} and "crd-schemas" not in p.parts
                  and p.name != "aia-bot.yaml")


def _load(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _base_objects() -> list[Obj]:
    """The production render: what the properties below are about."""
    return render(OVERLAYS / "production")


def _named(objs: list[Obj], kind: str, prefix: str) -> Obj:
    """A generated ConfigMap, whose rendered name ends in a content hash."""
    found = [o for o in objs if o["kind"] == kind and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", o["metadata"]["name"])]
    assert len(found) == 1, f"expected one generated {kind} {prefix}-<hash>, found {len(found)}"
    return found[0]


def _only(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return _base_objects()


@pytest.fixture(scope="module")
def deployment(base: list[Obj]) -> Obj:
    return _only(base, "Deployment", "aia-bot")


@pytest.fixture(scope="module")
def container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def slack() -> Obj:
    return _load(SLACK_MANIFEST)[0]


# --- every file parses; kustomizations point at real files -------------------


def test_manifests_exist() -> None:
    assert (BASE / "kustomization.yaml").is_file()
    assert (OVERLAYS / "production" / "kustomization.yaml").is_file()
    assert (OVERLAYS / "staging" / "kustomization.yaml").is_file()
    assert SLACK_MANIFEST.is_file()


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = _load(path)
    assert docs, f"{path} is empty"
    if path == SLACK_MANIFEST:
        return
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: object without apiVersion/kind"
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without a name"


@pytest.mark.parametrize(
    "kustomization",
    sorted(MANIFESTS.rglob("kustomization.yaml")),
    ids=lambda p: str(p.parent.relative_to(MANIFESTS)),
)
def test_kustomization_resources_exist(kustomization: Path) -> None:
    spec = _load(kustomization)[0]
    assert spec["resources"], f"{kustomization} lists no resources"
    for entry in spec["resources"]:
        target = (kustomization.parent / entry).resolve()
        assert target.exists(), f"{kustomization}: resource {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry} is not a kustomization"


def test_every_base_file_is_listed() -> None:
    listed = set(_load(BASE / "kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == listed, (
        f"not in kustomization: {on_disk - listed}; missing: {listed - on_disk}"
    )


def test_no_kustomization_uses_the_plain_namespace_field() -> None:
    # `namespace:` rewrites every namespaced object, which would move the Role
    # out of aia-production into the bot's own namespace.
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        assert "namespace" not in _load(kustomization)[0], kustomization


def test_base_objects_of_the_bot_leave_the_namespace_to_the_overlay() -> None:
    raw = [o for entry in _load(BASE / "kustomization.yaml")[0]["resources"] for o in _load(BASE / entry)]
    for obj in raw:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in {"Role", "RoleBinding"}:
            assert ns == APP_NAMESPACE, f"{obj['kind']} must be in {APP_NAMESPACE}"
        else:
            assert ns is None, f"{obj['kind']} {obj['metadata']['name']}: namespace set in the base"


# --- Deployment ------------------------------------------------------------


def test_deployment_runs_as_non_root_with_read_only_root(deployment: Obj, container: Obj) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert sc.get("privileged", False) is False
    assert pod.get("hostNetwork", False) is False


def test_deployment_has_a_writable_tmp(deployment: Obj, container: Obj) -> None:
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_deployment_port_and_probes(container: Obj) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000}
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "3000"]

    def probe(kind: str) -> tuple[str, Any]:
        http = container[kind]["httpGet"]
        port = ports.get(http["port"], http["port"])
        return http["path"], port

    assert probe("livenessProbe") == ("/healthz", 3000)
    assert probe("readinessProbe") == ("/readyz", 3000)
    assert probe("startupProbe") == ("/healthz", 3000)


def test_deployment_rollout_and_resources(deployment: Obj, container: Obj) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 3  # production
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["serviceAccountName"] == "aia-bot"
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pod["topologySpreadConstraints"]
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "512Mi"}
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "3000"


def test_deployment_env_comes_from_the_configmap_and_the_external_secret(
    base: list[Obj], deployment: Obj, container: Obj
) -> None:
    refs = {(k, v["name"]) for src in container["envFrom"] for k, v in src.items()}
    env_cm = _named(base, "ConfigMap", "aia-bot-env")
    external = _only(base, "ExternalSecret", "aia-bot-secrets")
    assert ("configMapRef", env_cm["metadata"]["name"]) in refs
    assert ("secretRef", external["spec"]["target"]["name"]) in refs
    assert "KUBECONFIG" not in env_cm["data"], "in-cluster config needs KUBECONFIG unset"
    assert not any(e["name"] == "KUBECONFIG" for e in container.get("env", []))
    secret_keys = {d["secretKey"] for d in external["spec"]["data"]}
    assert secret_keys == {
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "DATABASE_URL",
        "ALERTMANAGER_WEBHOOK_TOKEN",
        "AIA_AUDIT_KEY",  # keys the audit chain; `serve` refuses to start without it
        "SMTP_PASSWORD",  # production pages by email
        "AIA_PAGING_ROUTING_KEY",  # and by phone (PagerDuty Events v2)
    }
    assert external["spec"]["secretStoreRef"] == {
        "kind": "ClusterSecretStore",
        "name": "gcp-secret-manager",
    }
    assert not secret_keys & set(env_cm["data"]), "a secret in the plain ConfigMap"


def test_roles_file_is_mounted_where_aia_bot_config_points(
    base: list[Obj], deployment: Obj, container: Obj
) -> None:
    env_cm = _named(base, "ConfigMap", "aia-bot-env")
    config_cm = _named(base, "ConfigMap", "aia-bot-config")
    path = Path(env_cm["data"]["AIA_BOT_CONFIG"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mounts[str(path.parent)]
    )
    assert volume["configMap"]["name"] == config_cm["metadata"]["name"]
    assert path.name in config_cm["data"]
    # The example file is valid for the bot itself.
    parsed = BotConfigFile.model_validate(yaml.safe_load(config_cm["data"][path.name]))
    assert parsed.roles.approver and parsed.roles.operator
    assert env_cm["data"]["AIA_NAMESPACE"] == APP_NAMESPACE


def test_service_pdb_hpa(base: list[Obj], container: Obj) -> None:
    service = _only(base, "Service", "aia-bot")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert port["targetPort"] in ("http", 3000)
    assert _only(base, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    hpa = _only(base, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 5)  # production floor
    assert hpa["spec"]["scaleTargetRef"]["name"] == "aia-bot"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == 70


def test_service_account_has_workload_identity(base: list[Obj]) -> None:
    sa = _only(base, "ServiceAccount", "aia-bot")
    assert (
        sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        == "aia-bot@a-467519.iam.gserviceaccount.com"
    )


# --- RBAC --------------------------------------------------------------------


def _rules(obj: Obj) -> list[Obj]:
    return obj.get("rules") or []


def test_no_rbac_wildcards_or_dangerous_verbs(base: list[Obj]) -> None:
    for obj in _of_kind(base, "Role") + _of_kind(base, "ClusterRole"):
        assert "aggregationRule" not in obj
        for rule in _rules(obj):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{obj['metadata']['name']}: * in {field}"
            assert not set(rule["verbs"]) & DANGEROUS_VERBS
            assert "nonResourceURLs" not in rule


def test_cluster_roles_only_read(base: list[Obj]) -> None:
    cluster_roles = _of_kind(base, "ClusterRole")
    assert cluster_roles
    granted: set[tuple[str, str]] = set()
    for role in cluster_roles:
        for rule in _rules(role):
            assert set(rule["verbs"]) <= READ_VERBS, f"cluster-wide {rule['verbs']}"
            assert not rule.get("resourceNames")
            granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("", "nodes"), ("metrics.k8s.io", "nodes")}


def test_cluster_role_bindings_bind_only_read_roles(base: list[Obj]) -> None:
    names = {r["metadata"]["name"] for r in _of_kind(base, "ClusterRole")}
    for binding in _of_kind(base, "ClusterRoleBinding"):
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] in names, "binds a ClusterRole not defined here"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "aia-bot", "namespace": BOT_NAMESPACE}
        ]
    for binding in _of_kind(base, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", "a RoleBinding to a ClusterRole"


def test_no_secret_is_readable_and_no_escape_hatch(base: list[Obj]) -> None:
    """The full proof is tests/test_least_privilege.py; this names rights never wanted."""
    never = {"secrets", "pods/attach", "pods/portforward", "namespaces", "serviceaccounts/token"}
    for role in _of_kind(base, "Role") + _of_kind(base, "ClusterRole"):
        for rule in _rules(role):
            assert not set(rule["resources"]) & never, f"{role['metadata']['name']}: {rule}"


def test_bot_never_writes_permissions_or_secret_sources(base: list[Obj]) -> None:
    """dr restore recreates configuration, never what grants rights or says where secrets come from."""
    never_written = {"roles", "rolebindings", "secrets", "secretstores", "serviceaccounts/token"}
    for role in _of_kind(base, "Role") + _of_kind(base, "ClusterRole"):
        for rule in _rules(role):
            if set(rule["verbs"]) - READ_VERBS:
                assert not set(rule["resources"]) & never_written, f"{role['metadata']['name']}: {rule}"


def test_staging_grants_what_production_grants(base: list[Obj]) -> None:
    staging = render(OVERLAYS / "staging")

    def rules(objs: list[Obj]) -> dict[str, list[Obj]]:
        return {r["metadata"]["name"]: r["rules"] for r in _of_kind(objs, "Role")}

    assert rules(staging) == rules(base)
    assert {r["metadata"]["namespace"] for r in _of_kind(staging, "Role")} == {"aia-staging"}


# --- Ingress, network policy --------------------------------------------------


def test_ingress_exposes_only_the_slack_and_alertmanager_paths(base: list[Obj]) -> None:
    ingress = _only(base, "Ingress", "aia-bot")
    assert "defaultBackend" not in ingress["spec"], "a default backend would expose /metrics"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "aia-bot.013a.tech"
    paths = rule["http"]["paths"]
    assert {p["path"] for p in paths} == PUBLIC_PATHS
    for p in paths:
        assert p["pathType"] == "Exact"
        assert p["backend"]["service"]["name"] == "aia-bot"
    annotations = ingress["metadata"]["annotations"]
    cert = _only(base, "ManagedCertificate", annotations["networking.gke.io/managed-certificates"])
    assert cert["spec"]["domains"] == ["aia-bot.013a.tech"]
    frontend = _only(
        base, "FrontendConfig", annotations["networking.gke.io/v1beta1.FrontendConfig"]
    )
    assert frontend["spec"]["redirectToHttps"]["enabled"] is True


def test_backend_config_health_checks_healthz(base: list[Obj]) -> None:
    service = _only(base, "Service", "aia-bot")
    ref = yaml.safe_load(service["metadata"]["annotations"]["cloud.google.com/backend-config"])
    backend = _only(base, "BackendConfig", ref["default"])
    assert backend["spec"]["healthCheck"]["requestPath"] == "/healthz"
    assert backend["spec"]["healthCheck"]["port"] == 3000


def test_network_policy(base: list[Obj]) -> None:
    policy = _only(base, "NetworkPolicy", "aia-bot")
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "aia-bot"}
    for rule in spec["ingress"]:
        assert [p["port"] for p in rule["ports"]] == [3000]
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}
    assert {53, 443, 5432, 9090, 587} <= egress_ports
    for rule in spec["egress"]:
        assert rule.get("ports"), "egress rule without ports allows everything"
        for peer in rule.get("to", []):
            if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                # Open to anywhere only for HTTPS (Slack has no fixed IPs) and SMTP submission.
                assert {p["port"] for p in rule["ports"]} <= {443, 587, 465}


# --- Slack app manifest ---------------------------------------------------------


def test_slack_manifest_points_at_slack_events(slack: Obj) -> None:
    assert slack["_metadata"] == {"major_version": 1, "minor_version": 1}
    assert slack["display_information"]["name"] == "AIA Runbook Bot"
    (command,) = slack["features"]["slash_commands"]
    assert command["command"] == "/aia"
    assert command["url"] == "https://aia-bot.013a.tech/slack/events"
    assert command["should_escape"] is False
    assert "/aia help" in command["usage_hint"]
    interactivity = slack["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"] == "https://aia-bot.013a.tech/slack/events"
    assert slack["features"]["bot_user"]["display_name"]


def test_slack_manifest_scopes_are_exactly_the_documented_ones(slack: Obj) -> None:
    scopes = slack["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}, "no user-token scopes"
    assert len(scopes["bot"]) == len(set(scopes["bot"]))
    assert set(scopes["bot"]) == SLACK_BOT_SCOPES


def test_slack_manifest_settings(slack: Obj) -> None:
    settings = slack["settings"]
    assert settings["org_deploy_enabled"] is False
    assert settings["socket_mode_enabled"] is False
    assert settings["token_rotation_enabled"] is False


def test_slack_urls_match_the_ingress(base: list[Obj], slack: Obj) -> None:
    ingress = _only(base, "Ingress", "aia-bot")
    host = ingress["spec"]["rules"][0]["host"]
    for url in (
        slack["features"]["slash_commands"][0]["url"],
        slack["settings"]["interactivity"]["request_url"],
    ):
        assert url.startswith(f"https://{host}/")
        assert url.removeprefix(f"https://{host}") in PUBLIC_PATHS


# --- Dockerfile ------------------------------------------------------------------


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) == 2, "multi-stage: builder + runtime"
    assert "USER 10001:10001" in lines
    assert "EXPOSE 3000" in lines
    assert 'ENTRYPOINT ["aia-bot"]' in lines
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]' in lines
    for env in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "MPLCONFIGDIR=/tmp/matplotlib"):
        assert env in text
    # hatchling needs README.md (project.readme) and the two packages; never the sandbox.
    assert "COPY pyproject.toml README.md" in text
    assert not any(ln.startswith("COPY") and "sandbox" in ln for ln in lines)
    # Every dependency from the hashed lock, nothing else.
    assert "COPY requirements/image.lock" in text
    assert any("--require-hashes" in ln and "-r requirements/image.lock" in ln for ln in lines)
    assert any("--no-deps --no-build-isolation --no-index ." in ln for ln in lines)
    assert "ARG PYTHON_IMAGE=" in text and "FROM ${PYTHON_IMAGE} AS builder" in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("pyproject.toml", "README.md", "requirements", "bot", "handlers"):
        assert needed not in ignored
    assert "sandbox" in ignored
    assert ".venv" in ignored and ".git" in ignored




# --- rendered and checked as CI does (scripts/check_manifests.py) ----------------------------

DEPLOY_CHECKS_PYTHON = ROOT / ".venv-deploy-checks" / "bin" / "python"
# A stand-in for the digest the release step takes from `docker push` (docs/deploy.md).
RELEASE_DIGEST = "sha256:" + "5d41402abc4b2a76b9719d911017c592" * 2
BROKEN = ROOT / "tests" / "manifests"


def _check_manifests(*args: str) -> subprocess.CompletedProcess[str]:
    assert DEPLOY_CHECKS_PYTHON.exists(), (
        "the deploy checks need their virtualenv: scripts/test.sh makes it, or "
        "python3 -m venv .venv-deploy-checks && .venv-deploy-checks/bin/pip install -r scripts/deploy-checks.txt"
    )
    return subprocess.run([str(DEPLOY_CHECKS_PYTHON), str(ROOT / "scripts" / "check_manifests.py"), *args],
                          capture_output=True, text=True, timeout=900, check=False)


def test_every_shipped_kustomization_passes_after_the_release_step() -> None:
    """All renders: kubernetes-validate --strict, CRD schemas, policy, checkov, hadolint."""
    done = _check_manifests("--release-digest", RELEASE_DIGEST)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "3 renders" in done.stdout and ": 0 problem(s)" in done.stdout


def test_a_render_with_the_placeholder_left_fails() -> None:
    done = _check_manifests("--no-checkov", "--no-hadolint", "--overlay", str(OVERLAYS / "production"))
    assert done.returncode == 1
    assert ("manifests/overlays/production: Deployment/aia-bot: spec.template.spec.containers[0].image: "
            "placeholder left ('gcr.io/a-467519/aia-bot@sha256:REPLACE_WITH_RELEASE_DIGEST')") in done.stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("render-fails", "tests/manifests/render-fails: render failed: "),
        ("unknown-field", "Deployment/aia-bot: spec.template.spec.containers[0]: Additional properties "
                          "are not allowed ('readinesProbe' was unexpected)"),
        ("unknown-crd-field", "ExternalSecret/aia-bot-secrets: spec: Additional properties are not "
                              "allowed ('refreshEvery' was unexpected)"),
        ("deprecated-api", "ExternalSecret/aia-bot-secrets: apiVersion: external-secrets.io/v1beta1 is "
                           "deprecated or no longer served; use external-secrets.io/v1"),
        ("missing-probe", "Deployment/aia-bot: spec.template.spec.containers[0].readinessProbe: "
                          "container aia-bot has no readinessProbe"),
        ("missing-limit", "Deployment/aia-bot: spec.template.spec.containers[0].resources.limits.memory: "
                          "container aia-bot sets no memory limit"),
        ("default-service-account", "RoleBinding/aia-bot: subjects[0].name: binds the `default` "
                                    "ServiceAccount"),
        ("wildcard-verb", "Role/aia-bot: rules[0].verbs: wildcard '*' grants everything"),
        ("image-by-tag", "Deployment/aia-bot: spec.template.spec.containers[0].image: "
                         "'gcr.io/a-467519/aia-bot:v1.2.3' is not pinned by digest"),
    ],
)
def test_a_broken_kustomization_fails_naming_object_and_field(case: str, expected: str) -> None:
    done = _check_manifests("--no-checkov", "--no-hadolint", "--overlay", str(BROKEN / case))
    assert done.returncode == 1
    problems = done.stderr.strip().splitlines()
    assert len(problems) == 1, f"exactly the one mistake of {case}: {problems}"
    assert expected in problems[0], problems[0]


def test_checkov_skips_say_why() -> None:
    for obj in render(OVERLAYS / "production"):
        for key, value in ((obj["metadata"].get("annotations")) or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(reason.split()) >= 5, (key, value)


# --- the production configuration passes `aia-bot check --config-only` -----------------------

SECRET_STAND_INS = {
    "SLACK_BOT_TOKEN": "xoxb-1234567890-0987654321-stand-in",
    "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
    # Loopback and a closed port: nothing is reached even if a check tried.
    "DATABASE_URL": "postgresql://aia_bot:stand-in@127.0.0.1:1/aia_bot?sslmode=require",
    "ALERTMANAGER_WEBHOOK_TOKEN": "stand-in-webhook-token-0123456789",
    "SMTP_PASSWORD": "stand-in-smtp-password",
    "AIA_AUDIT_KEY": "stand-in-audit-key-0123456789abcdef0123456789abcdef",
    "AIA_PAGING_ROUTING_KEY": "stand-in-routing-key-0123456789ab",
}


def _deployed_env(objs: list[Obj], tmp_path: Path) -> dict[str, str]:
    """The environment a production pod gets: the env ConfigMap, the ExternalSecret's keys
    (stand-in values: the real ones live in Secret Manager) and the mounted roles file."""
    env_cm = _named(objs, "ConfigMap", "aia-bot-env")
    config_cm = _named(objs, "ConfigMap", "aia-bot-config")
    external = _only(objs, "ExternalSecret", "aia-bot-secrets")
    keys = {d["secretKey"] for d in external["spec"]["data"]}
    assert keys <= set(SECRET_STAND_INS), f"a secret this test does not know: {keys - set(SECRET_STAND_INS)}"
    config = tmp_path / "aia-bot.yaml"
    config.write_text(config_cm["data"]["aia-bot.yaml"], encoding="utf-8")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLACK_", "AIA_", "SMTP_", "KUBECONFIG", "PROMETHEUS", "DATABASE_"))}
    return {**clean, **env_cm["data"], **{k: SECRET_STAND_INS[k] for k in keys},
            "AIA_BOT_CONFIG": str(config)}


def _config_check(env: dict[str, str], config_only: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["--config-only"] if config_only else []
    return subprocess.run([aia_bot_executable(), "check", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_production_configuration_passes_aia_bot_check(tmp_path: Path) -> None:
    objs = render(OVERLAYS / "production")
    done = _config_check(_deployed_env(objs, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "FAIL" not in out and "warn" not in out, out
    assert "4 levels: 1 on-call, 2 senior-devops, 3 devops-team-lead, 4 architect-cto" in out
    assert "smtp-relay.gmail.com:587" in out and "events.pagerduty.com" in out
    assert "channel #aia-production-alerts" in out
    policy = yaml.safe_load(_named(objs, "ConfigMap", "aia-bot-config")["data"]["aia-bot.yaml"])["escalation"]
    assert any("devops@013a.tech" in level.get("email", []) for level in policy["levels"])
    assert sum(bool(level.get("webhook")) for level in policy["levels"]) >= 1  # the phone/pager slot
    for secret in SECRET_STAND_INS.values():
        assert secret not in out + done.stderr


def test_staging_has_its_own_roles_and_passes_aia_bot_check(tmp_path: Path) -> None:
    production, staging = render(OVERLAYS / "production"), render(OVERLAYS / "staging")
    prod_config = _named(production, "ConfigMap", "aia-bot-config")["data"]["aia-bot.yaml"]
    staging_config = _named(staging, "ConfigMap", "aia-bot-config")["data"]["aia-bot.yaml"]
    assert yaml.safe_load(prod_config)["roles"] != yaml.safe_load(staging_config)["roles"]
    assert yaml.safe_load(staging_config)["escalation"] != yaml.safe_load(prod_config)["escalation"]
    done = _config_check(_deployed_env(staging, tmp_path))
    assert done.returncode == 0, done.stdout
    assert "channel #aia-staging-alerts" in done.stdout and "namespace aia-staging" in done.stdout


@pytest.mark.parametrize("mode", ["--config-only", "--full"])
def test_email_pages_without_smtp_fail_the_check_as_smtp(tmp_path: Path, mode: str) -> None:
    env = _deployed_env(render(OVERLAYS / "production"), tmp_path)
    del env["SMTP_HOST"]
    done = _config_check(env, config_only=mode == "--config-only")
    assert done.returncode == 1
    assert re.search(r"^FAIL +smtp +SMTP_HOST is not set, but the escalation policy pages by email",
                     done.stdout, re.M), done.stdout
    assert "database" not in done.stdout  # named for what it is, stopped before the database


# --- reproducible image -----------------------------------------------------------------------


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lock = (ROOT / "requirements" / "image.lock").read_text(encoding="utf-8")
    pinned = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+ \\$", lock, re.M)}
    wanted = _names(project["project"]["dependencies"]) | _names(project["build-system"]["requires"])
    missing = {n for n in wanted if n not in pinned}
    assert not missing, f"not in requirements/image.lock (run scripts/lock.sh): {sorted(missing)}"
    entries = re.findall(r"^([A-Za-z0-9_.-]+==\S+)((?: \\\n +--hash=sha256:[0-9a-f]{64})+)", lock, re.M)
    assert len(entries) == len(pinned), "every pinned release carries its sha256 hashes"
