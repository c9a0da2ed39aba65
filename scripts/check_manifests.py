"""Build both kustomize overlays and check what they produce.

Needs `kustomize` or `kubectl` on PATH, which CI machines do not have, so this is
run by hand (and by the deploy pipeline) rather than by pytest:

    .venv/bin/python -m pytest scripts/check_manifests.py -q
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.test_manifests import CLUSTER_SCOPED, OVERLAYS, _kustomize_cmd, _of_kind, _only


@pytest.mark.parametrize(
    ("overlay", "bot_ns", "app_ns", "replicas"),
    [
        ("production", "aia-bot", "aia-production", 3),
        ("staging", "aia-bot-staging", "aia-staging", 2),
    ],
)
def test_overlay_builds(overlay: str, bot_ns: str, app_ns: str, replicas: int) -> None:
    cmd = _kustomize_cmd()
    assert cmd is not None, "needs kustomize or kubectl on PATH"
    result = subprocess.run(
        [*cmd, str(OVERLAYS / overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    objs = [o for o in yaml.safe_load_all(result.stdout) if o]

    for obj in objs:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"{obj['kind']} is cluster-scoped"
        elif obj["kind"] in {"Role", "RoleBinding"}:
            assert ns == app_ns, f"{obj['kind']} must be in {app_ns}, not {ns}"
        else:
            assert ns == bot_ns, f"{obj['kind']} {obj['metadata']['name']} in {ns}"

    assert _only(objs, "Namespace")["metadata"]["name"] == bot_ns
    sa = _only(objs, "ServiceAccount")
    for binding in _of_kind(objs, "RoleBinding") + _of_kind(objs, "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            assert subject == {
                "kind": "ServiceAccount",
                "name": sa["metadata"]["name"],
                "namespace": bot_ns,
            }
    cluster_roles = {r["metadata"]["name"] for r in _of_kind(objs, "ClusterRole")}
    for binding in _of_kind(objs, "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] in cluster_roles

    assert _only(objs, "ConfigMap", "aia-bot-env")["data"]["AIA_NAMESPACE"] == app_ns
    deployment = _only(objs, "Deployment")
    assert deployment["spec"]["replicas"] == replicas
    assert _only(objs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] <= replicas
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("gcr.io/a-467519/aia-bot:")
    assert not image.endswith(":latest")


def test_overlays_do_not_collide_on_cluster_scoped_names() -> None:
    cmd = _kustomize_cmd()
    assert cmd is not None, "needs kustomize or kubectl on PATH"
    seen: dict[tuple[str, str, str | None], str] = {}
    for overlay in ("production", "staging"):
        out = subprocess.run(
            [*cmd, str(OVERLAYS / overlay)], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        for obj in yaml.safe_load_all(out):
            if not obj:
                continue
            key = (obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))
            assert key not in seen, f"{key} is in both {seen.get(key)} and {overlay}"
            seen[key] = overlay
