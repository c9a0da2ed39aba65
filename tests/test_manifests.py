"""Static checks of the deployment files: Dockerfile, kustomize manifests, Slack app manifest.

Docker and a cluster are not needed: the YAML is parsed and checked for the
properties docs/deploy.md promises (non-root, read-only root, probes, least
privilege RBAC, only the Slack paths public, the documented Slack scopes). When
`kustomize` or `kubectl` is on PATH, the overlays are also built and checked.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import BotConfigFile

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = MANIFESTS / "overlays"
SLACK_MANIFEST = MANIFESTS / "slack-app-manifest.yaml"

APP_NAMESPACE = "aia-production"
BOT_NAMESPACE = "aia-bot"
PUBLIC_PATHS = {"/slack/events", "/alertmanager"}
READ_VERBS = {"get", "list", "watch"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "approve", "sign"}
# (apiGroup, resource) -> write verbs the bot may have in aia-production. Nothing else.
ALLOWED_WRITES = {
    ("apps", "deployments"): {"create", "update", "patch", "delete"},
    ("apps", "deployments/scale"): {"update", "patch"},
    ("", "pods"): {"delete"},
    # `/aia dr restore` (issue #10): create-only recreation of missing objects.
    ("", "configmaps"): {"patch", "create"},
    ("", "services"): {"patch", "create"},
    ("", "serviceaccounts"): {"create"},
    ("networking.k8s.io", "ingresses"): {"create"},
    ("networking.k8s.io", "networkpolicies"): {"create"},
    ("autoscaling", "horizontalpodautoscalers"): {"create"},
    ("policy", "poddisruptionbudgets"): {"create"},
    # create: `/aia dr restore`; patch: `/aia secrets sync|rotate` (the force-sync annotation).
    ("external-secrets.io", "externalsecrets"): {"create", "patch"},
}
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
    return sorted(p for p in MANIFESTS.rglob("*") if p.suffix in {".yaml", ".yml"})


def _load(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _base_objects() -> list[Obj]:
    kustomization = _load(BASE / "kustomization.yaml")[0]
    objs: list[Obj] = []
    for entry in kustomization["resources"]:
        objs.extend(_load(BASE / entry))
    return objs


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


def test_base_objects_of_the_bot_leave_the_namespace_to_the_overlay(base: list[Obj]) -> None:
    for obj in base:
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
    assert spec["replicas"] == 2
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
    env_cm = _only(base, "ConfigMap", "aia-bot-env")
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
    }
    assert external["spec"]["secretStoreRef"] == {
        "kind": "ClusterSecretStore",
        "name": "gcp-secret-manager",
    }
    assert not secret_keys & set(env_cm["data"]), "a secret in the plain ConfigMap"


def test_roles_file_is_mounted_where_aia_bot_config_points(
    base: list[Obj], deployment: Obj, container: Obj
) -> None:
    env_cm = _only(base, "ConfigMap", "aia-bot-env")
    config_cm = _only(base, "ConfigMap", "aia-bot-config")
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
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
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


def test_app_namespace_role(base: list[Obj]) -> None:
    role = _only(base, "Role", "aia-bot")
    assert role["metadata"]["namespace"] == APP_NAMESPACE
    binding = _only(base, "RoleBinding", "aia-bot")
    assert binding["metadata"]["namespace"] == APP_NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "aia-bot",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "aia-bot", "namespace": BOT_NAMESPACE}
    ]

    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in _rules(role):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])

    assert verbs[("", "secrets")] <= {"get", "list"}, "secrets: read key names only"
    writes = {k: v & WRITE_VERBS for k, v in verbs.items() if v & WRITE_VERBS}
    assert writes == ALLOWED_WRITES
    for resource in ("pods/exec", "pods/attach", "pods/portforward", "namespaces"):
        assert not any(r == resource for _, r in verbs), f"{resource} must not be granted"
    # What the read procedures need.
    for needed in [
        ("", "pods"),
        ("", "pods/log"),
        ("", "events"),
        ("", "services"),
        ("", "configmaps"),
        ("", "resourcequotas"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("networking.k8s.io", "ingresses"),
        ("external-secrets.io", "externalsecrets"),
        ("metrics.k8s.io", "pods"),
    ]:
        assert {"get", "list"} <= verbs.get(needed, set()), f"missing read on {needed}"
    assert verbs[("", "services/proxy")] == {"get"}


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
    # hatchling needs README.md (project.readme) and the two packages.
    assert "COPY pyproject.toml README.md" in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("pyproject.toml", "README.md", "bot", "handlers"):
        assert needed not in ignored
    assert ".venv" in ignored and ".git" in ignored


# --- kustomize build (when a kustomize binary is available) -------------------------


def _kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def test_exec_is_a_separate_role_granting_only_pods_exec_create(base: list[Obj]) -> None:
    """`/aia db check` (issue #10): the one exec grant lives apart, so it can be left out."""
    role = _only(base, "Role", "aia-bot-db-check")
    assert role["metadata"]["namespace"] == APP_NAMESPACE
    assert _rules(role) == [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]
    binding = _only(base, "RoleBinding", "aia-bot-db-check")
    assert binding["roleRef"]["name"] == "aia-bot-db-check"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aia-bot", "namespace": BOT_NAMESPACE}]
