"""Least privilege, proved against the rendered manifests rather than asserted.

1. Every procedure runs against the sandbox Kubernetes API server enforcing RBAC from the
   Role/ClusterRole that `kubectl kustomize manifests/overlays/production` renders, as the
   bot's ServiceAccount: any 403 fails, and so does any request the procedure makes without
   declaring it (``kube=`` on its ``Procedure``).
2. Every rule the rendered Roles grant is needed by some declaration, with the narrowest
   ``resourceNames`` the declaration allows: a rule nobody declares fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.alerts.context import KUBE_ACCESS as ALERT_THREAD_ACCESS
from bot.context import Caller
from bot.procedures import build_registry
from bot.registry import KubeAccess, Procedure, RiskClass
from bot.service import OutcomeKind
from bot.settings import Settings
from sandbox.kube_rbac import RBACAuthorizer, RequestAttributes, service_account_user
from tests.harness.calls import run_as
from tests.harness.manifests import OVERLAYS, render
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID

APP_NS = "aia-production"
IMAGE = "gcr.io/a-467519/aia-system:v1.6.0"

# What to run for each procedure: (commands run first, not attributed; commands whose
# Kubernetes requests are the procedure's). A procedure missing here runs its examples, or
# its bare name: a new procedure is exercised (and must declare what it uses) without an entry.
SCENARIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "describe pod": ((), ("describe pod {pod}",)),
    "rollout status": ((), ("rollout status aia-api-blue",)),
    "logs": ((), ("logs --app --since 1h", "logs {pod} --previous")),
    "scale": ((), ("scale aia-api-green 3", "scale aia-api-green 0")),
    "restart": ((), ("restart aia-api-green",)),
    "bluegreen deploy": ((), (f"bluegreen deploy {IMAGE}",)),
    "bluegreen validate": ((f"bluegreen deploy {IMAGE}",), ("bluegreen validate",)),
    "bluegreen switch": ((f"bluegreen deploy {IMAGE}",), ("bluegreen switch",)),
    "bluegreen rollback": ((f"bluegreen deploy {IMAGE}", "bluegreen switch"), ("bluegreen rollback",)),
    "bluegreen cleanup": ((f"bluegreen deploy {IMAGE}", "bluegreen switch"), ("bluegreen cleanup",)),
    "set-image": ((), ("set-image aia-api-blue api=gcr.io/a-467519/aia-system:v1.5.1",)),
    "rollback": ((), ("rollback aia-api-blue",)),
    "isolate": ((), ("isolate aia-api-green",)),
    "maintenance": ((), ("maintenance on",)),
    "config set": ((), ("config set LOG_LEVEL=DEBUG", "config set FEATURE_X=on")),
    "config backup": ((), ("config backup",)),
    "cleanup evicted": ((), ("cleanup evicted",)),
    # {backup}: the newest configuration backup, taken by the setup; OBJECTS_LOST below are then
    # deleted, so the plan dry-runs their creation and the restore recreates them.
    "dr plan": (("config backup",), ("dr plan {backup}",)),
    "dr restore": (("config backup",), ("dr restore {backup}",)),
    "secrets versions": ((), ("secrets versions aia-api-key",)),
    "secrets sync": ((), ("secrets sync aia-secrets",)),
    "secrets rotate": ((), ("secrets rotate aia-api-key",)),
}
# Deleted after a procedure's setup (with RBAC off): the loss it is run against.
OBJECTS_LOST: dict[str, tuple[tuple[str, str], ...]] = {
    "dr plan": (("HorizontalPodAutoscaler", "aia-api-blue"), ("NetworkPolicy", "aia-api-ingress")),
    "dr restore": (("HorizontalPodAutoscaler", "aia-api-blue"), ("NetworkPolicy", "aia-api-ingress")),
}


def _registry() -> list[Procedure]:
    return build_registry().all()


def _commands(proc: Procedure) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if proc.name in SCENARIOS:
        return SCENARIOS[proc.name]
    examples = tuple(e.removeprefix("/aia ").strip() for e in proc.examples)
    return (), examples or (proc.name,)


class _SettingsView(dict[str, Any]):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def __missing__(self, key: str) -> Any:
        return getattr(self.settings, key)


def _deployed_settings(production: list[dict[str, Any]]) -> Settings:
    """The settings the production overlay runs with: defaults, then its ConfigMap."""
    (env,) = [o for o in production
              if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("aia-bot-env-")]
    values = {name: env["data"][name.upper()] for name in Settings.model_fields if name.upper() in env["data"]}
    return Settings.model_construct(**values)


@dataclass(frozen=True)
class Needed:
    """One declared right, resolved: names from the default settings."""

    verb: str
    group: str
    resource: str
    names: frozenset[str]
    cluster: bool
    by: str


def _resolve(access: Iterable[KubeAccess], by: str, settings: Settings) -> list[Needed]:
    out = []
    for a in access:
        names = frozenset(n.format_map(_SettingsView(settings)) for n in a.names)
        out += [Needed(v, a.group, a.resource, names, a.cluster, by) for v in a.verbs]
    return out


def _covers(needed: list[Needed], req: RequestAttributes) -> bool:
    for n in needed:
        if (n.verb, n.group, n.resource) != (req.verb, req.group, req.resource):
            continue
        if n.cluster != (req.namespace == ""):
            continue
        if not n.names or req.name in n.names:
            return True
    return False


def _describe(req: RequestAttributes) -> str:
    where = f"in {req.namespace}" if req.namespace else "cluster-wide"
    name = f" {req.name}" if req.name else ""
    group = f".{req.group}" if req.group else ""
    return f"{req.verb} {req.resource}{group}{name} {where}"


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(OVERLAYS / "production")


@pytest.fixture(scope="module")
def bot_user(production: list[dict[str, Any]]) -> str:
    (sa,) = [o for o in production if o["kind"] == "ServiceAccount"]
    return service_account_user(sa["metadata"]["namespace"], sa["metadata"]["name"])


# Every approver a request may need, in the order they approve (two for dr restore, db restore).
APPROVERS = ("approver", "admin")


def _run(core, command: str, risk: RiskClass, approvals: int = 1) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "admin" if risk is not RiskClass.DESTRUCTIVE else "operator", command)
    if outcome.kind is OutcomeKind.APPROVAL_REQUESTED:
        request_id = outcome.approval.id
        core.approvals.attach_card(request_id, CHANNEL_ID, "1700000000.000100")
        for who in APPROVERS[:approvals]:
            approver = Caller(SLACK_USERS[who].user_id, TEAM_ID, CHANNEL_ID)
            decision = core.approvals.decide(request_id, "approve", approver, "1700000000.000100")
            assert decision.accepted, f"{command}: {decision.message}"
        assert decision.executed is not None, f"{command}: {approvals} approvals did not execute it: {decision.message}"
        result = decision.executed
    else:
        # A 403 shows in `denied`. Every backend runs but Prometheus: only that may fail.
        assert outcome.kind is not OutcomeKind.REFUSED, f"{command}: {outcome.message}"
        assert outcome.kind is not OutcomeKind.FAILED or "Prometheus" in outcome.message, (
            f"{command}: {outcome.message}")
        result = outcome.result
    if result is not None and result.followup is not None:
        for _step in result.followup():
            pass


def _newest_backup(core) -> str:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from bot.store.models import ConfigBackup

    with core.audit.sessions() as session:
        newest = session.execute(select(ConfigBackup).order_by(ConfigBackup.created_at.desc()).limit(1)).scalar_one()
    return str(newest.id)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, roles_config, image_registry):  # type: ignore[no-untyped-def]
    """One bot core and one sandbox cluster for every procedure (a core takes seconds to
    build); the cluster is re-seeded before each procedure. Every other backend a procedure
    needs to get as far as its Kubernetes requests runs too: the image registry, Secret Manager
    with the External Secrets Operator, Cloud SQL. (Prometheus does not: the procedures that
    read it make their Kubernetes requests without it.)"""
    from bot.core import build_core
    from bot.settings import load_settings
    from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql
    from sandbox.external_secrets import ExternalSecretsController
    from sandbox.kube_server import FakeKubeAPIServer
    from sandbox.secretmanager_server import FakeSecretManager, seed_aia_secrets
    from sandbox.slack_server import FakeSlackServer
    from tests.harness.users import install_users

    tmp = tmp_path_factory.mktemp("least-privilege")
    secret_manager = FakeSecretManager().start()
    seed_aia_secrets(secret_manager)
    cloudsql = FakeCloudSqlServer(operation_seconds=0.2).start()
    seed_cloudsql(cloudsql)
    with FakeKubeAPIServer() as kube, FakeSlackServer(team_id=TEAM_ID) as slack:
        # In-process, like the real operator's own identity: not the bot's RBAC.
        operator = ExternalSecretsController(kube, secret_manager, interval=0.05).start()
        install_users(slack)
        env = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
            "SLACK_API_URL": slack.api_url,
            "DATABASE_URL": f"sqlite:///{tmp}/aia-bot.db",
            "KUBECONFIG": kube.write_kubeconfig(str(tmp / "kubeconfig")),
            "AIA_NAMESPACE": APP_NS,
            "AIA_ROLLOUT_POLL_SECONDS": "0.05",
            # emergency scale-up follows a rollout the seed never finishes (a node under
            # memory pressure): bound it, the requests are made in the first polls.
            "AIA_ROLLOUT_TIMEOUT_SECONDS": "10",
            "AIA_REGISTRY_URL": image_registry.url,
            "SECRETMANAGER_EMULATOR_HOST": secret_manager.address,
            "AIA_ROTATABLE_SECRETS": "aia-api-key",
            "AIA_SECRET_SYNC_TIMEOUT_SECONDS": "5",
            "CLOUDSQL_EMULATOR_HOST": cloudsql.host,
            "CLOUDSQL_POLL_SECONDS": "0.1",
            "CLOUDSQL_OPERATION_TIMEOUT_SECONDS": "10",
        }
        core = build_core(load_settings(env), roles_config)
        try:
            yield core, kube, operator
        finally:
            core.engine.dispose()
            operator.stop()
            cloudsql.stop()
            secret_manager.stop()


@pytest.fixture(scope="module")
def roles_config():  # type: ignore[no-untyped-def]
    from bot.settings import BotConfigFile, RolesConfig

    return BotConfigFile(roles=RolesConfig(
        viewer=[SLACK_USERS["viewer"].user_id], operator=[SLACK_USERS["operator"].user_id],
        approver=[SLACK_USERS["approver"].user_id], admin=[SLACK_USERS["admin"].user_id],
    ))


@pytest.mark.parametrize("proc", _registry(), ids=lambda p: p.name)
def test_each_procedure_runs_under_the_rendered_rbac(  # type: ignore[no-untyped-def]
    proc: Procedure, cluster, production, bot_user
) -> None:
    from sandbox.aia_seed import seed_aia_system

    core, kube, operator = cluster
    kube.authorizer = None
    kube.reset()
    operator.reset()
    seed_aia_system(kube)
    authorizer = RBACAuthorizer.from_objects(production, bot_user)
    kube.authorizer = authorizer
    pod = sorted(p["metadata"]["name"] for p in kube.list("Pod", APP_NS)
                 if p["metadata"]["name"].startswith("aia-api-blue"))[0]
    setup, commands = _commands(proc)
    for command in setup:
        _run(core, command.replace("{pod}", pod), RiskClass.DESTRUCTIVE)
    lost = OBJECTS_LOST.get(proc.name, ())
    if lost:
        kube.authorizer = None
        for kind, name in lost:
            assert kube.delete(kind, name, APP_NS), f"the seed has no {kind} {name}"
        kube.authorizer = authorizer
    backup = _newest_backup(core) if setup and "config backup" in setup else ""
    authorizer.allowed.clear()
    authorizer.denied.clear()
    for command in commands:
        _run(core, command.replace("{pod}", pod).replace("{backup}", backup), proc.risk, proc.approvals)

    denied = sorted({_describe(r) for r in authorizer.denied})
    assert not denied, (
        f"`{proc.name}` was refused by the rendered RBAC (403) for: {denied}. Either the "
        "manifests/base/rbac.yaml Role lacks a rule the procedure needs, or the procedure "
        "asks for more than it should."
    )
    made = set(authorizer.allowed)
    if made and proc.kube is None:
        pytest.fail(
            f"`{proc.name}` talks to Kubernetes ({sorted({_describe(r) for r in made})}) but "
            "declares no `kube=` rights on its Procedure(...): add kube=(kube(\"VERBS\", "
            "\"RESOURCE\", \"GROUP\"), ...) (bot/registry.py) so the Role can be checked "
            "against it."
        )
    if proc.kube and not made:
        pytest.fail(
            f"`{proc.name}` declares {[str(a) for a in proc.kube]} but its commands "
            f"{commands} made no Kubernetes request: give it a SCENARIOS entry that reaches "
            "Kubernetes, so its declaration is proved"
        )
    needed = _resolve(proc.kube or (), proc.name, core.settings)
    undeclared = sorted({_describe(r) for r in made if not _covers(needed, r)})
    assert not undeclared, (
        f"`{proc.name}` made requests its `kube=` declaration does not name: {undeclared}"
    )
    kube.authorizer = None
    if proc.name == "dr restore":  # really ran: what was lost is back
        assert all(kube.get(kind, name, APP_NS) for kind, name in lost)
    if proc.name == "dr plan":  # a dry run: still lost
        assert not any(kube.get(kind, name, APP_NS) for kind, name in lost)


def test_every_procedure_declares_its_kubernetes_rights() -> None:
    missing = [p.name for p in _registry() if p.kube is None]
    assert not missing, (
        f"procedures without a `kube=` declaration: {missing}. Declare the Kubernetes rights "
        "each uses (kube=(can(\"list\", \"pods\"), ...)), or kube=() when it uses none."
    )


def _all_needed(settings: Settings) -> list[Needed]:
    needed = _resolve(ALERT_THREAD_ACCESS, "alert threads", settings)
    for proc in _registry():
        needed += _resolve(proc.kube or (), proc.name, settings)
    return needed


def _granted(production: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """(kind/name, rule, namespace or "" for cluster-wide) of every rendered RBAC rule."""
    out = []
    for role in production:
        if role["kind"] not in ("Role", "ClusterRole"):
            continue
        where = role["metadata"].get("namespace", "")
        for rule in role.get("rules") or []:
            out.append((f"{role['kind']} {role['metadata']['name']}", rule, where))
    return out


def test_every_rendered_rule_is_needed_by_some_procedure(production) -> None:  # type: ignore[no-untyped-def]
    needed = _all_needed(_deployed_settings(production))
    unneeded = []
    for role, rule, where in _granted(production):
        names = frozenset(rule.get("resourceNames") or ())
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    users = [n for n in needed
                             if (n.verb, n.group, n.resource, n.cluster) == (verb, group, resource, not where)]
                    if not users:
                        unneeded.append(f"{role}: {verb} {resource} in API group {group!r}: no procedure declares it")
                    elif names and not all(n.names and n.names <= names for n in users):
                        unneeded.append(f"{role}: {verb} {resource}: resourceNames {sorted(names)} "
                                        f"too narrow for {[n.by for n in users if not n.names <= names]}")
                    elif not names and all(n.names for n in users):
                        wanted = sorted(set().union(*(n.names for n in users)))
                        unneeded.append(f"{role}: {verb} {resource} on any name; only {wanted} is "
                                        "used: add resourceNames")
    assert not unneeded, "rules no procedure needs (least privilege):\n" + "\n".join(unneeded)


def test_every_declared_right_is_granted(production, bot_user) -> None:  # type: ignore[no-untyped-def]
    authorizer = RBACAuthorizer.from_objects(production, bot_user)
    missing = []
    for n in _all_needed(_deployed_settings(production)):
        for name in sorted(n.names) or [""]:
            req = RequestAttributes(n.verb, n.group, n.resource, "" if n.cluster else APP_NS, name)
            if not authorizer.allows(req):
                missing.append(f"{n.by}: {_describe(req)}")
    assert not missing, "declared but not granted by the rendered Role:\n" + "\n".join(missing)


def test_rights_outside_the_app_namespace_are_node_reads_only(production) -> None:  # type: ignore[no-untyped-def]
    for role, rule, where in _granted(production):
        if where == APP_NS:
            continue
        assert where == "", f"{role} grants in {where}"
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, f"{role}: cluster-wide {rule['verbs']}"
        assert set(rule["resources"]) == {"nodes"}, f"{role}: cluster-wide {rule['resources']}"


def test_no_secret_is_readable(production, bot_user) -> None:  # type: ignore[no-untyped-def]
    authorizer = RBACAuthorizer.from_objects(production, bot_user)
    for verb in ("get", "list", "watch"):
        for ns in (APP_NS, "aia-bot", ""):
            req = RequestAttributes(verb, "", "secrets", ns, "aia-secrets" if verb == "get" else "")
            assert not authorizer.allows(req), f"the bot may {_describe(req)}"
