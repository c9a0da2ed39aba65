"""The procedure registry: every runbook step is declared here once.

Help, the docs' coverage table, the parser and (later) buttons are all derived
from these declarations, so a procedure cannot exist in one and not the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from bot.context import Backends, Caller
from bot.roles import Role
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.adapters.cloudsql import CloudSqlGateway
    from bot.adapters.kubernetes import KubeGateway
    from bot.adapters.prometheus import PrometheusGateway
    from bot.results import Result
    from bot.store.audit import AuditLog


class RiskClass(StrEnum):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"

    @property
    def rank(self) -> int:
        return list(RiskClass).index(self)


# Destructive procedures are *requested* by operators; approval (a different
# person with the approver role) is the two-person rule's job, not the role's.
REQUIRED_ROLE = {
    RiskClass.READ: Role.VIEWER,
    RiskClass.WRITE: Role.OPERATOR,
    RiskClass.DESTRUCTIVE: Role.OPERATOR,
}


@dataclass(frozen=True)
class Param:
    """One parameter.

    kind:
      ``positional`` a word in order; ``rest`` the rest of the line verbatim
      (PromQL); ``option`` ``--name VALUE``; ``flag`` ``--name``.
    ``convert`` turns the text into a value or raises ValueError with a short
    reason that is shown to the user.
    """

    name: str
    kind: str
    help: str
    metavar: str = ""
    required: bool = False
    default: Any = None
    convert: Callable[[str], Any] = str

    def __post_init__(self) -> None:
        if self.kind not in {"positional", "rest", "option", "flag"}:
            raise ValueError(f"unknown parameter kind {self.kind!r}")

    @property
    def display(self) -> str:
        if self.kind == "flag":
            text = f"--{self.name}"
        elif self.kind == "option":
            text = f"--{self.name} {self.metavar or self.name.upper()}"
        else:
            text = self.metavar or self.name.upper()
        return text if self.required else f"[{text}]"


Runner = Callable[["ProcedureContext", dict[str, Any]], "Result"]


@dataclass(frozen=True)
class Plan:
    """What a change will do, read right before doing it.

    ``snapshot`` holds what must not change between request and execution
    (resourceVersion, live colour, replicas, image...): the two-person rule binds
    an approval to it and refuses to execute when a fresh plan's snapshot differs.
    """

    target_key: str
    snapshot: dict[str, Any]
    preview: str
    summary: str
    warning: str | None = None


Planner = Callable[["ProcedureContext", dict[str, Any]], Plan]


@dataclass(frozen=True)
class KubeAccess:
    """One Kubernetes permission a procedure uses, in the terms of an RBAC rule.

    The manifests' Role is checked against these declarations (tests/test_least_privilege.py):
    every request a procedure makes must be declared, and every rule in the Role must be
    declared by some procedure. ``names`` are the object names it touches (RBAC
    ``resourceNames``) as templates over the settings, e.g. ``"{aia_api_service}"``, or
    ``"{aia_api_service}:{aia_api_port}"`` for the service proxy, whose name carries the port;
    empty means objects named by the user, so any name.
    ``cluster`` marks the cluster-scoped reads (nodes), the only rights outside the
    application's namespace.
    """

    verbs: tuple[str, ...]
    resource: str  # plural, with "/subresource": "pods/log", "deployments/scale"
    group: str = ""
    names: tuple[str, ...] = ()
    cluster: bool = False

    def __str__(self) -> str:
        qualified = f"{self.resource}.{self.group}" if self.group else self.resource
        named = f" named by {', '.join(self.names)}" if self.names else ""
        scope = " (cluster-wide)" if self.cluster else ""
        return f"{','.join(self.verbs)} {qualified}{named}{scope}"


def can(verbs: str, resource: str, group: str = "", *, names: tuple[str, ...] = (),
        cluster: bool = False) -> KubeAccess:
    """``can("get,list", "pods")``: a KubeAccess in the words of ``kubectl auth can-i``."""
    return KubeAccess(tuple(v.strip() for v in verbs.split(",")), resource, group, names, cluster)
Executor = Callable[["ProcedureContext", dict[str, Any], Plan], "Result"]


@dataclass(frozen=True)
class Procedure:
    name: str
    summary: str
    risk: RiskClass
    runbook: tuple[str, ...]
    run: Runner
    params: tuple[Param, ...] = ()
    examples: tuple[str, ...] = ()
    # Anyone may run it, even a user with no role (only /aia help).
    public: bool = False
    # Shown in help text after the syntax line: alternatives, caveats.
    notes: str = ""
    # Changes: plan (dry run, snapshot, preview) then execute. Destructive ones run
    # the two steps apart, with an approval in between.
    plan: Planner | None = None
    execute: Executor | None = None
    # Some arguments make a procedure more dangerous (scale to 0, unsafe config keys).
    risk_for: Callable[[dict[str, Any]], RiskClass] | None = None
    # How many approvers a destructive request needs by default.
    approvals: int = 1
    # The Kubernetes rights it uses (RBAC rules). None: not declared, which the
    # least-privilege test refuses for a procedure that calls Kubernetes. () : none.
    kube: tuple[KubeAccess, ...] | None = None

    def __post_init__(self) -> None:
        if self.kube is not None and not (
            isinstance(self.kube, tuple) and all(isinstance(a, KubeAccess) for a in self.kube)
        ):
            raise TypeError(f"{self.name}: kube= takes a tuple of can(...), e.g. kube=(can(\"list\", \"pods\"),)")

    def effective_risk(self, args: dict[str, Any]) -> RiskClass:
        if self.risk_for is None:
            return self.risk
        dynamic = self.risk_for(args)
        return dynamic if dynamic.rank > self.risk.rank else self.risk

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.name.split())

    @property
    def syntax(self) -> str:
        return " ".join(["/aia", self.name, *(p.display for p in self.params)])

    @property
    def required_role(self) -> Role:
        return REQUIRED_ROLE[self.risk]

    def role_for(self, args: dict[str, Any]) -> Role:
        return REQUIRED_ROLE[self.effective_risk(args)]


@dataclass
class Registry:
    procedures: dict[str, Procedure] = field(default_factory=dict)

    def register(self, procedure: Procedure) -> Procedure:
        if procedure.name in self.procedures:
            raise ValueError(f"procedure {procedure.name!r} is declared twice")
        self.procedures[procedure.name] = procedure
        return procedure

    def get(self, name: str) -> Procedure | None:
        return self.procedures.get(name)

    def all(self) -> list[Procedure]:
        return sorted(self.procedures.values(), key=lambda p: p.name)

    def match(self, words: list[str]) -> Procedure | None:
        """The procedure whose name is the longest prefix of ``words``."""
        lowered = [w.lower() for w in words]
        best: Procedure | None = None
        for proc in self.procedures.values():
            n = len(proc.words)
            if tuple(lowered[:n]) == proc.words and (best is None or n > len(best.words)):
                best = proc
        return best

    def with_overrides(self, overrides: dict[str, str]) -> Registry:
        """Apply configured risk classes. Raising is allowed; lowering is refused."""
        from dataclasses import replace

        result = Registry(dict(self.procedures))
        for name, risk_text in overrides.items():
            proc = result.procedures.get(name)
            if proc is None:
                raise ValueError(f"risk_overrides names unknown procedure {name!r}")
            try:
                risk = RiskClass(risk_text)
            except ValueError:
                raise ValueError(
                    f"risk_overrides.{name}: {risk_text!r} is not one of read, write, destructive"
                ) from None
            if risk.rank < proc.risk.rank:
                raise ValueError(
                    f"risk_overrides.{name}: cannot lower {proc.risk.value} to {risk.value}"
                )
            result.procedures[name] = replace(proc, risk=risk)
        return result


@dataclass(frozen=True)
class ProcedureContext:
    """What a procedure gets to work with. Declared with the registry it carries: each
    names the other, and one module keeps that from being an import cycle."""

    settings: Settings
    backends: Backends
    registry: Registry
    audit: AuditLog
    caller: Caller
    role: Role | None

    @property
    def kube(self) -> KubeGateway:
        return self.backends.kube

    @property
    def prometheus(self) -> PrometheusGateway:
        return self.backends.prometheus

    @property
    def cloudsql(self) -> CloudSqlGateway:
        return self.backends.cloudsql
