"""The sandbox API server's RBAC: what a Role grants passes, the rest gets the real 403 Status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sandbox.aia_seed import seed_aia_system
from sandbox.kube_rbac import RBACAuthorizer, service_account_user
from sandbox.kube_server import FakeKubeAPIServer

USER = service_account_user("aia-bot", "aia-bot")
RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "bot", "namespace": "aia-production"},
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
               {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["aia-config"],
                "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "bot", "namespace": "aia-production"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bot"},
     "subjects": [{"kind": "ServiceAccount", "name": "aia-bot", "namespace": "aia-bot"}]},
    # Bound to someone else: grants the bot nothing.
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "all"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "all"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "all"},
     "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "aia-bot"}]},
]


@pytest.fixture()
def core(tmp_path: Path) -> Iterator[client.CoreV1Api]:
    server = FakeKubeAPIServer().start()
    seed_aia_system(server)
    server.authorizer = RBACAuthorizer.from_objects(RBAC, USER)
    api = config.new_client_from_config(config_file=server.write_kubeconfig(tmp_path / "kubeconfig"))
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()
        server.stop()


def _refusal(call) -> dict:  # type: ignore[no-untyped-def, type-arg]
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403
    return json.loads(caught.value.body)


def test_granted_requests_pass(core: client.CoreV1Api) -> None:
    assert core.list_namespaced_pod("aia-production").items
    assert core.read_namespaced_config_map("aia-config", "aia-production").data


def test_a_verb_not_granted_gets_the_api_servers_403(core: client.CoreV1Api) -> None:
    body = _refusal(lambda: core.read_namespaced_pod("x", "aia-production"))
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "x" is forbidden: User "system:serviceaccount:aia-bot:aia-bot" cannot get '
                   'resource "pods" in API group "" in the namespace "aia-production"',
        "reason": "Forbidden", "details": {"name": "x", "kind": "pods"}, "code": 403,
    }


def test_other_namespaces_cluster_scope_and_subresources_are_refused(core: client.CoreV1Api) -> None:
    assert _refusal(lambda: core.list_namespaced_pod("kube-system"))["message"].endswith(
        'cannot list resource "pods" in API group "" in the namespace "kube-system"')
    assert _refusal(lambda: core.list_node())["message"] == (
        'nodes is forbidden: User "system:serviceaccount:aia-bot:aia-bot" cannot list resource '
        '"nodes" in API group "" at the cluster scope')
    log = _refusal(lambda: core.read_namespaced_pod_log("x", "aia-production"))
    assert 'cannot get resource "pods/log"' in log["message"] and log["details"]["kind"] == "pods"


def test_resource_names_allow_only_the_named_object(core: client.CoreV1Api) -> None:
    assert "aia-config" not in _refusal(lambda: core.read_namespaced_config_map("other", "aia-production"))["message"]
    # A list is never allowed by a rule with resourceNames.
    assert _refusal(lambda: core.list_namespaced_config_map("aia-production"))["details"] == {"kind": "configmaps"}
