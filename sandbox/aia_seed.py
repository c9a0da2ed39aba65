"""Seed data: the AIA system of the operations runbook, as a sandbox cluster holds it.

The picture is deliberately imperfect, so every read-only procedure has something to find: one
blue API pod crash-loops after OOM kills on a node under memory pressure, one ExternalSecret
cannot sync, a pod was evicted (and another one in ``kube-system``, which the bot must leave
alone), and the logs carry errors, warnings, an ``unauthorized`` and a ``failed`` line.

Every value that looks like a credential is obviously fake.
"""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.kube_server import FakeKubeAPIServer

Obj = dict[str, Any]

__all__ = ["seed_aia_system", "IMAGE_REPOSITORY"]

IMAGE_REPOSITORY = "gcr.io/a-467519/aia-system"
FRONTEND_IMAGE = "gcr.io/a-467519/aia-frontend:v2.3.1"
REDIS_IMAGE = "redis:7.2.5-alpine"
NODES = (
    ("gke-aia-cluster-default-pool-4c1e9a2b-7xkq", "us-central1-a", "10.128.0.12"),
    ("gke-aia-cluster-default-pool-4c1e9a2b-m3vd", "us-central1-b", "10.128.0.13"),
    ("gke-aia-cluster-default-pool-4c1e9a2b-zq8n", "us-central1-c", "10.128.0.14"),
)
# The third node is the one under memory pressure; the crash-looping pod lives there.
PRESSURED_NODE = NODES[2][0]


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def seed_aia_system(server: FakeKubeAPIServer, namespace: str = "aia-production") -> None:
    """Fill ``server`` with the AIA system's objects in ``namespace`` (see the module docstring)."""
    now = datetime.now(UTC)
    created = now - timedelta(days=12, hours=3)
    rng = random.Random(13)  # a fixed seed: the same story every time
    # Pod names too: the README's and the docs' examples name pods, and piped scripts must
    # be able to. The server draws name suffixes from its own generator; seed it before
    # the deployments create their pods.
    server._rng.seed(13)  # noqa: SLF001 - the sandbox's own server, seeded by its own seed data

    _seed_namespaces(server, namespace, created)
    _seed_nodes(server, created)
    _seed_config(server, namespace, created, now)
    _seed_rbac(server, namespace, created)
    _seed_deployments(server, namespace, created)
    _seed_services(server, namespace, created)
    _seed_ingress(server, namespace, created)
    _mark_node_pressure(server, now)
    bad_pod = _break_one_blue_pod(server, namespace, now)
    _backdate_pods(server, namespace, now, bad_pod)
    _seed_evicted_pods(server, namespace, now)
    _seed_logs(server, namespace, now, bad_pod, rng)
    _seed_metrics(server, namespace, bad_pod, rng)
    _seed_quota(server, namespace, created)
    _seed_events(server, namespace, now, bad_pod)


# ---------------------------------------------------------------------------------------------


def _seed_namespaces(server: FakeKubeAPIServer, namespace: str, created: datetime) -> None:
    for name in (namespace, "aia-monitoring"):
        server.put({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "creationTimestamp": _ts(created),
                         "labels": {"app.kubernetes.io/part-of": "aia-system"}},
        })


def _seed_nodes(server: FakeKubeAPIServer, created: datetime) -> None:
    for name, zone, ip in NODES:
        server.put({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "creationTimestamp": _ts(created - timedelta(days=30)),
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "e2-standard-4",
                    "topology.kubernetes.io/region": "us-central1",
                    "topology.kubernetes.io/zone": zone,
                    "cloud.google.com/gke-nodepool": "default-pool",
                },
            },
            "spec": {"podCIDR": f"10.8.{NODES.index((name, zone, ip))}.0/24",
                     "providerID": f"gce://a-467519/{zone}/{name}"},
            "status": {
                "capacity": {"cpu": "4", "memory": "16393220Ki", "pods": "110",
                             "ephemeral-storage": "98831908Ki"},
                "allocatable": {"cpu": "3920m", "memory": "13292548Ki", "pods": "110",
                                "ephemeral-storage": "47060071478"},
                "conditions": _node_conditions(created, memory_pressure=False),
                "addresses": [{"type": "InternalIP", "address": ip},
                              {"type": "Hostname", "address": name}],
                "nodeInfo": {
                    "kubeletVersion": "v1.30.5-gke.1014001",
                    "kubeProxyVersion": "v1.30.5-gke.1014001",
                    "containerRuntimeVersion": "containerd://1.7.22",
                    "osImage": "Container-Optimized OS from Google",
                    "kernelVersion": "6.1.100+",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "machineID": hashlib.md5(name.encode(), usedforsecurity=False).hexdigest(),
                    "systemUUID": hashlib.md5(ip.encode(), usedforsecurity=False).hexdigest(),
                    "bootID": hashlib.md5(zone.encode(), usedforsecurity=False).hexdigest(),
                },
            },
        })


def _node_conditions(since: datetime, *, memory_pressure: bool) -> list[Obj]:
    def condition(kind: str, bad: bool, reason: str, message: str) -> Obj:
        return {"type": kind, "status": "True" if bad else "False", "reason": reason,
                "message": message, "lastHeartbeatTime": _ts(datetime.now(UTC)),
                "lastTransitionTime": _ts(since)}

    pressure = (
        condition("MemoryPressure", True, "KubeletHasInsufficientMemory",
                  "kubelet has insufficient memory available")
        if memory_pressure
        else condition("MemoryPressure", False, "KubeletHasSufficientMemory",
                       "kubelet has sufficient memory available")
    )
    return [
        pressure,
        condition("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        condition("PIDPressure", False, "KubeletHasSufficientPID",
                  "kubelet has sufficient PID available"),
        {**condition("Ready", True, "KubeletReady", "kubelet is posting ready status"),
         "status": "True"},
    ]


def _mark_node_pressure(server: FakeKubeAPIServer, now: datetime) -> None:
    node = server.get("Node", PRESSURED_NODE)
    assert node is not None
    node["status"]["conditions"] = _node_conditions(
        now - timedelta(minutes=47), memory_pressure=True
    )
    node["spec"]["taints"] = [{"key": "node.kubernetes.io/memory-pressure",
                               "effect": "NoSchedule", "timeAdded": _ts(now - timedelta(minutes=47))}]
    server.put(node)
    server.set_node_metrics(NODES[0][0], "1184m", "8911236Ki")
    server.set_node_metrics(NODES[1][0], "967m", "7402112Ki")
    server.set_node_metrics(PRESSURED_NODE, "3412m", "12937380Ki")


def _seed_config(server: FakeKubeAPIServer, namespace: str, created: datetime,
                 now: datetime) -> None:
    meta: Obj = {"namespace": namespace, "creationTimestamp": _ts(created),
            "labels": {"app.kubernetes.io/part-of": "aia-system"}}
    server.put({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "aia-config", **meta},
        "data": {
            "LOG_LEVEL": "INFO",
            "MAINTENANCE_MODE": "false",
            "API_WORKERS": "4",
            "DATABASE_POOL_SIZE": "20",
            "DATABASE_HOST": "mas-system-postgres",
            "REDIS_HOST": "aia-redis",
            "CACHE_TTL_SECONDS": "300",
            "FEATURE_FLAGS": "reports-v2,async-export",
        },
    })
    server.put({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "gcp-secret-manager", **meta},
        "spec": {"provider": {"gcpsm": {
            "projectID": "a-467519",
            "auth": {"workloadIdentity": {"clusterLocation": "us-central1",
                                          "clusterName": "aia-cluster",
                                          "serviceAccountRef": {"name": "aia-api"}}},
        }}},
        "status": {"capabilities": "ReadWrite", "conditions": [{
            "type": "Ready", "status": "True", "reason": "Valid", "message": "store validated",
            "lastTransitionTime": _ts(created)}]},
    })
    synced = server.put({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "aia-secrets", **meta},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "gcp-secret-manager", "kind": "SecretStore"},
            "target": {"name": "aia-secrets", "creationPolicy": "Owner"},
            "data": [
                {"secretKey": "DATABASE_URL", "remoteRef": {"key": "aia-database-url"}},
                {"secretKey": "REDIS_URL", "remoteRef": {"key": "aia-redis-url"}},
                {"secretKey": "API_KEY", "remoteRef": {"key": "aia-api-key"}},
            ],
        },
        "status": {
            "binding": {"name": "aia-secrets"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                            "message": "Secret was synced",
                            "lastTransitionTime": _ts(created)}],
            "refreshTime": _ts(now - timedelta(minutes=23)),
            "syncedResourceVersion": "1-5f0e8f1c3b8e4d5a9c2b7d6e1f0a3b4c",
        },
    })
    server.put({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "aia-oauth-credentials", **meta},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "gcp-secret-manager", "kind": "SecretStore"},
            "target": {"name": "aia-oauth-credentials", "creationPolicy": "Owner"},
            "data": [{"secretKey": "OAUTH_CLIENT_SECRET",
                      "remoteRef": {"key": "aia-oauth-client-secret"}}],
        },
        "status": {
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "SecretSyncedError",
                "message": "could not get secret data from provider: rpc error: code = "
                           "PermissionDenied desc = Permission 'secretmanager.versions.access' "
                           "denied for resource 'projects/a-467519/secrets/"
                           "aia-oauth-client-secret/versions/latest' (or it may not exist).",
                "lastTransitionTime": _ts(now - timedelta(hours=5, minutes=12)),
            }],
            "refreshTime": None,
        },
    })
    server.put({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "aia-secrets", **meta,
            "annotations": {"reconcile.external-secrets.io/data-hash":
                            "0c8d4f3a9b2e7d1c5f6a8b9e0d2c4f1a"},
            "labels": {**meta["labels"], "reconcile.external-secrets.io/created-by":
                       "6f1e2d3c4b5a69788796a5b4c3d2e1f0"},
            # ExternalSecrets with creationPolicy Owner own their Secret (GC deletes it too).
            "ownerReferences": [{
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "name": "aia-secrets", "uid": synced["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "type": "Opaque",
        "data": {
            "DATABASE_URL": _b64("postgresql://aia_app:sandbox-fake-password@mas-system-postgres"
                                 ":5432/aia"),
            "REDIS_URL": _b64("redis://aia-redis:6379/0"),
            "API_KEY": _b64("sandbox-fake-api-key-00000000"),
        },
    })
    server.put({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "aia-api-token", **meta,
            "annotations": {"kubernetes.io/service-account.name": "aia-api",
                            "kubernetes.io/service-account.uid":
                            "8b2f6c1e-3d4a-4f5b-9c8d-7e6f5a4b3c2d"},
        },
        "type": "kubernetes.io/service-account-token",
        "data": {
            "token": _b64("sandbox.fake-service-account-token.not-a-jwt"),
            "ca.crt": _b64("-----BEGIN CERTIFICATE-----\nSANDBOX-FAKE-CA\n"
                           "-----END CERTIFICATE-----\n"),
            "namespace": _b64(namespace),
        },
    })


def _seed_rbac(server: FakeKubeAPIServer, namespace: str, created: datetime) -> None:
    meta = {"namespace": namespace, "creationTimestamp": _ts(created)}
    for name, sa_annotations in (
        ("aia-api", {"iam.gke.io/gcp-service-account": "aia-api@a-467519.iam.gserviceaccount.com"}),
        ("aia-runbook-bot", {}),
    ):
        server.put({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, **meta, "annotations": sa_annotations}})
    server.put({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "aia-runbook-bot", **meta},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "pods/log", "events", "services",
                                              "configmaps", "secrets", "resourcequotas",
                                              "serviceaccounts"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
            {"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": ["patch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"],
             "verbs": ["patch", "update"]},
            {"apiGroups": ["external-secrets.io"], "resources": ["externalsecrets"],
             "verbs": ["get", "list", "patch"]},
            {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
             "verbs": ["get", "list"]},
        ],
    })
    server.put({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "aia-runbook-bot", **meta},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "aia-runbook-bot"},
        "subjects": [{"kind": "ServiceAccount", "name": "aia-runbook-bot",
                      "namespace": namespace}],
    })


def _api_container(image: str) -> Obj:
    return {
        "name": "api",
        "image": image,
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": "aia-config"}}],
        "env": [
            {"name": "DATABASE_URL",
             "valueFrom": {"secretKeyRef": {"name": "aia-secrets", "key": "DATABASE_URL"}}},
            {"name": "REDIS_URL",
             "valueFrom": {"secretKeyRef": {"name": "aia-secrets", "key": "REDIS_URL"}}},
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                      "limits": {"cpu": "1", "memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000},
                           "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8000},
                          "initialDelaySeconds": 30, "periodSeconds": 20},
    }


def _deployment(namespace: str, name: str, labels: dict[str, str], replicas: int,
                containers: list[Obj], created: datetime, service_account: str = "") -> Obj:
    pod_spec: Obj = {"containers": containers}
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                     "creationTimestamp": _ts(created)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def _seed_deployments(server: FakeKubeAPIServer, namespace: str, created: datetime) -> None:
    blue = {"app": "aia-api", "version": "blue"}
    # Blue went through one rollout (v1.4.1 -> v1.4.2), so there is a revision to roll back to.
    server.put(_deployment(namespace, "aia-api-blue", blue, 3,
                           [_api_container(f"{IMAGE_REPOSITORY}:v1.4.1")], created, "aia-api"))
    deployment = server.get("Deployment", "aia-api-blue", namespace)
    assert deployment is not None
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = f"{IMAGE_REPOSITORY}:v1.4.2"
    server.put(deployment)
    server.put(_deployment(namespace, "aia-api-green", {"app": "aia-api", "version": "green"}, 2,
                           [_api_container(f"{IMAGE_REPOSITORY}:v1.5.0")],
                           created + timedelta(days=11), "aia-api"))
    server.put(_deployment(namespace, "aia-frontend", {"app": "aia-frontend"}, 2, [{
        "name": "frontend", "image": FRONTEND_IMAGE,
        "ports": [{"name": "http", "containerPort": 3000, "protocol": "TCP"}],
        "env": [{"name": "API_URL", "value": "http://aia-api:8000"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
    }], created))
    server.put(_deployment(namespace, "aia-redis", {"app": "aia-redis"}, 1, [{
        "name": "redis", "image": REDIS_IMAGE,
        "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi"}},
    }], created))


def _seed_services(server: FakeKubeAPIServer, namespace: str, created: datetime) -> None:
    def service(name: str, selector: dict[str, str], port: int, kind: str = "ClusterIP",
                external_ip: str = "") -> Obj:
        obj: Obj = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app": selector["app"]}, "creationTimestamp": _ts(created)},
            "spec": {"type": kind, "selector": selector,
                     "ports": [{"name": "http" if port != 6379 else "redis", "port": port,
                                "targetPort": port, "protocol": "TCP"}]},
            "status": {"loadBalancer": {}},
        }
        if external_ip:
            obj["status"]["loadBalancer"] = {"ingress": [{"ip": external_ip, "ipMode": "VIP"}]}
        return obj

    server.put(service("aia-api", {"app": "aia-api", "version": "blue"}, 8000, "LoadBalancer",
                       "35.225.214.87"))
    server.put(service("aia-api-green", {"app": "aia-api", "version": "green"}, 8000))
    server.put(service("aia-frontend", {"app": "aia-frontend"}, 3000, "LoadBalancer",
                       "34.41.147.160"))
    server.put(service("aia-redis", {"app": "aia-redis"}, 6379))


def _seed_ingress(server: FakeKubeAPIServer, namespace: str, created: datetime) -> None:
    def rule(host: str, service: str, port: int) -> Obj:
        return {"host": host, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": port}}},
        }]}}

    server.put({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "aia-ingress", "namespace": namespace,
                     "creationTimestamp": _ts(created),
                     "annotations": {"kubernetes.io/ingress.global-static-ip-name": "aia-ip",
                                     "networking.gke.io/managed-certificates": "aia-cert"}},
        "spec": {
            "ingressClassName": "gce",
            "tls": [{"hosts": ["api.aia.013a.tech", "aia.013a.tech"], "secretName": "aia-tls"}],
            "rules": [rule("api.aia.013a.tech", "aia-api", 8000),
                      rule("aia.013a.tech", "aia-frontend", 3000)],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "34.117.62.201"}]}},
    })
    # The runbook's HPA (2 to 5 replicas), a PDB and a NetworkPolicy: what rebuilds the namespace.
    server.put({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "aia-api-blue", "namespace": namespace, "creationTimestamp": _ts(created)},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "aia-api-blue"},
                 "minReplicas": 2, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}}]},
    })
    server.put({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "aia-api", "namespace": namespace, "creationTimestamp": _ts(created)},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "aia-api"}}},
    })
    server.put({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "aia-api-ingress", "namespace": namespace, "creationTimestamp": _ts(created)},
        "spec": {"podSelector": {"matchLabels": {"app": "aia-api"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"ports": [{"port": 8000, "protocol": "TCP"}]}]},
    })


def _pods(server: FakeKubeAPIServer, namespace: str, selector: str) -> list[Obj]:
    pods = server.list("Pod", namespace, label_selector=selector)
    return [p for p in pods if p["status"].get("phase") == "Running"]


def _break_one_blue_pod(server: FakeKubeAPIServer, namespace: str, now: datetime) -> str:
    """One blue pod is crash-looping after OOM kills; returns its name."""
    pods = _pods(server, namespace, "app=aia-api,version=blue")
    on_pressured = [p for p in pods if p["spec"].get("nodeName") == PRESSURED_NODE]
    pod = (on_pressured or pods)[0]
    name = pod["metadata"]["name"]
    pod["spec"]["nodeName"] = PRESSURED_NODE
    status = pod["status"]
    for condition in status["conditions"]:
        if condition["type"] in ("Ready", "ContainersReady"):
            condition.update(status="False", reason="ContainersNotReady",
                             message="containers with unready status: [api]",
                             lastTransitionTime=_ts(now - timedelta(minutes=41)))
    container = status["containerStatuses"][0]
    container.update(
        ready=False,
        started=False,
        restartCount=7,
        state={"waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off 5m0s restarting failed container=api pod={name}_{namespace}"
                       f"({pod['metadata']['uid']})",
        }},
        lastState={"terminated": {
            "exitCode": 137, "reason": "OOMKilled",
            "startedAt": _ts(now - timedelta(minutes=6, seconds=40)),
            "finishedAt": _ts(now - timedelta(minutes=3, seconds=12)),
            "containerID": container["containerID"],
        }},
    )
    status["hostIP"] = NODES[2][2]
    server.put(pod)
    return name


def _backdate_pods(server: FakeKubeAPIServer, namespace: str, now: datetime, bad_pod: str) -> None:
    """Pods made by the controller are brand new; the seeded system has been running a while."""
    for pod in server.list("Pod", namespace):
        if pod["status"].get("phase") != "Running":
            continue
        started = now - timedelta(days=2, hours=5) if pod["metadata"]["name"] != bad_pod \
            else now - timedelta(hours=3, minutes=18)
        pod["metadata"]["creationTimestamp"] = _ts(started)
        pod["status"]["startTime"] = _ts(started)
        for condition in pod["status"].get("conditions") or []:
            if condition.get("status") == "True":
                condition["lastTransitionTime"] = _ts(started + timedelta(seconds=14))
        for container in pod["status"].get("containerStatuses") or []:
            if "running" in container.get("state", {}):
                container["state"]["running"]["startedAt"] = _ts(started + timedelta(seconds=6))
        server.put(pod)


def _seed_evicted_pods(server: FakeKubeAPIServer, namespace: str, now: datetime) -> None:
    # The evicted API pod belongs to the old blue ReplicaSet, as evicted pods do after a rollout.
    old_rs = [rs for rs in server.list("ReplicaSet", namespace, label_selector="app=aia-api")
              if rs["spec"].get("replicas") == 0]
    for pod_namespace, name, container, image, owner in (
        (namespace, "", "api", f"{IMAGE_REPOSITORY}:v1.4.1", old_rs[0] if old_rs else None),
        ("kube-system", "fluentbit-gke-q7x2m", "fluentbit",
         "gke.gcr.io/fluent-bit:v1.8.12-gke.25", None),
    ):
        metadata: Obj = {
            "name": name or f"{owner['metadata']['name'] if owner else 'aia-api-blue'}-w9tkd",
            "namespace": pod_namespace,
            "creationTimestamp": _ts(now - timedelta(days=3)),
            "labels": dict(((owner or {}).get("spec") or {}).get("template", {})
                           .get("metadata", {}).get("labels") or {"k8s-app": "fluentbit-gke"}),
        }
        if owner:
            metadata["ownerReferences"] = [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
            }]
        server.put({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": metadata,
            "spec": {"nodeName": PRESSURED_NODE, "containers": [{"name": container,
                                                                 "image": image}]},
            "status": {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: memory. Threshold quantity: 100Mi, "
                           f"available: 87340Ki. Container {container} was using 1123456Ki, "
                           "request is 512Mi, has larger consumption of memory.",
                "startTime": _ts(now - timedelta(days=3)),
                "containerStatuses": [{
                    "name": container, "image": image, "imageID": "", "ready": False,
                    "restartCount": 0, "started": False,
                    "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                             "message": "The container could not be located "
                                                        "when the pod was terminated"}},
                }],
            },
        })


_API_PATHS = ("/api/v1/reports", "/api/v1/reports/4821", "/api/v1/users/me", "/api/v1/search",
              "/api/v1/exports", "/health")


def _api_log(rng: random.Random, start: datetime, lines: int, *, bad: bool) -> str:
    out = []
    moment = start
    for index in range(lines):
        moment += timedelta(seconds=rng.randint(20, 110), milliseconds=rng.randint(0, 999))
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        roll = rng.random()
        if bad and index > lines // 2:
            percent = 70 + (index - lines // 2) * 29 // max(lines - lines // 2, 1)
            out.append(f"{stamp} WARN  [aia.runtime] memory usage {percent}% of limit "
                       f"({percent * 1024 // 100}Mi/1024Mi), gc pressure high")
            continue
        if index == 7:
            out.append(f"{stamp} WARN  [aia.auth] unauthorized request: invalid API key "
                       f"from 10.8.0.{rng.randint(2, 250)} on /api/v1/exports (401)")
        elif index == 13:
            out.append(f"{stamp} ERROR [aia.db] connection to mas-system-postgres:5432 timed out "
                       "after 5000ms (pool 20/20 in use)")
            out.append("Traceback (most recent call last):")
            out.append('  File "/app/aia/db.py", line 88, in acquire')
            out.append("asyncpg.exceptions.ConnectionTimeoutError: timed out")
        elif index == 19:
            out.append(f"{stamp} ERROR [aia.tasks] task export_reports failed: "
                       "upstream returned 502 Bad Gateway (attempt 3/3)")
        elif roll < 0.12:
            # A log line quoting a query, not SQL being built.
            out.append(f"{stamp} WARN  [aia.db] slow query: {rng.randint(1200, 4800)}ms "  # noqa: S608
                       "SELECT * FROM reports WHERE owner_id = $1")
        else:
            path = rng.choice(_API_PATHS)
            out.append(f'{stamp} INFO  [aia.http] "GET {path} HTTP/1.1" 200 '
                       f"{rng.randint(3, 240)}ms")
    return "\n".join(out) + "\n"


def _seed_logs(server: FakeKubeAPIServer, namespace: str, now: datetime, bad_pod: str,
               rng: random.Random) -> None:
    for pod in server.list("Pod", namespace):
        name = pod["metadata"]["name"]
        if pod["status"].get("phase") != "Running":
            continue
        app = pod["metadata"].get("labels", {}).get("app", "")
        container = pod["spec"]["containers"][0]["name"]
        if app == "aia-api":
            if name == bad_pod:
                start = now - timedelta(minutes=6, seconds=40)
                server.set_pod_log(namespace, name, container,
                                   _api_log(rng, start, 8, bad=True)[:-1]
                                   + "\n" + f"{_ts(now - timedelta(minutes=3, seconds=13))} ERROR "
                                   "[aia.runtime] MemoryError: cannot allocate 64Mi for report "
                                   "export buffer\n", previous=True)
                restarted = now - timedelta(seconds=40)
                server.set_pod_log(namespace, name, container,
                                   f"{_ts(restarted)} INFO  [aia.main] Starting aia-api v1.4.2 "
                                   "(workers=4)\n"
                                   f"{_ts(restarted + timedelta(seconds=2))} WARN  [aia.runtime] "
                                   "memory usage 81% of limit (829Mi/1024Mi) at startup: cache "
                                   "warm-up\n")
            else:
                server.set_pod_log(namespace, name, container,
                                   _api_log(rng, now - timedelta(minutes=58), 36, bad=False))
        elif app == "aia-frontend":
            lines = []
            moment = now - timedelta(minutes=55)
            for index in range(24):
                moment += timedelta(seconds=rng.randint(60, 150))
                if index == 11:
                    lines.append(f"{_ts(moment)} ERROR fetch http://aia-api:8000/api/v1/reports "
                                 "failed: 503 Service Unavailable")
                else:
                    lines.append(f"{_ts(moment)} INFO  GET /dashboard 200 {rng.randint(8, 90)}ms")
            server.set_pod_log(namespace, name, container, "\n".join(lines) + "\n")
        elif app == "aia-redis":
            moment = now - timedelta(minutes=50)
            lines = [f"{_ts(moment)} INFO  Ready to accept connections tcp"]
            for _ in range(12):
                moment += timedelta(minutes=4)
                lines.append(f"{_ts(moment)} INFO  100 changes in 300 seconds. Saving...")
                lines.append(f"{_ts(moment + timedelta(seconds=1))} INFO  Background saving "
                             "terminated with success")
            lines.append(f"{_ts(moment + timedelta(seconds=30))} WARN  Client id=4117 addr="
                         "10.8.0.9:51222 closed for reaching maxclients")
            server.set_pod_log(namespace, name, container, "\n".join(lines) + "\n")


def _seed_metrics(server: FakeKubeAPIServer, namespace: str, bad_pod: str,
                  rng: random.Random) -> None:
    # metrics-server reports nanocores and KiB; the bot must read real quantities.
    ranges = {"aia-api": (180, 420, 210, 640), "aia-frontend": (8, 40, 90, 160),
              "aia-redis": (12, 30, 48, 80)}
    for pod in server.list("Pod", namespace):
        if pod["status"].get("phase") != "Running":
            continue
        name = pod["metadata"]["name"]
        app = pod["metadata"].get("labels", {}).get("app", "")
        cpu_lo, cpu_hi, mem_lo, mem_hi = ranges.get(app, (2, 10, 32, 64))
        if name == bad_pod:
            cpu_m, mem_mi = 940, 987
        else:
            cpu_m, mem_mi = rng.randint(cpu_lo, cpu_hi), rng.randint(mem_lo, mem_hi)
        container = pod["spec"]["containers"][0]["name"]
        server.set_pod_metrics(namespace, name, {
            container: (f"{cpu_m * 1_000_000 + rng.randint(0, 999_999)}n",
                        f"{mem_mi * 1024 + rng.randint(0, 1023)}Ki"),
        })


def _seed_quota(server: FakeKubeAPIServer, namespace: str, created: datetime) -> None:
    hard = {"requests.cpu": "8", "requests.memory": "16Gi", "limits.cpu": "16",
            "limits.memory": "32Gi", "pods": "30", "services": "10", "secrets": "20"}
    cpu_m = memory_mi = limit_cpu_m = limit_memory_mi = pods = 0
    for pod in server.list("Pod", namespace):
        if pod["status"].get("phase") in ("Failed", "Succeeded"):
            continue
        pods += 1
        for container in pod["spec"]["containers"]:
            resources = container.get("resources") or {}
            cpu_m += _millicores((resources.get("requests") or {}).get("cpu", "0"))
            memory_mi += _mebibytes((resources.get("requests") or {}).get("memory", "0"))
            limit_cpu_m += _millicores((resources.get("limits") or {}).get("cpu", "0"))
            limit_memory_mi += _mebibytes((resources.get("limits") or {}).get("memory", "0"))
    used = {"requests.cpu": f"{cpu_m}m", "requests.memory": f"{memory_mi}Mi",
            "limits.cpu": f"{limit_cpu_m}m", "limits.memory": f"{limit_memory_mi}Mi",
            "pods": str(pods), "services": str(len(server.list("Service", namespace))),
            "secrets": str(len(server.list("Secret", namespace)))}
    server.put({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "aia-quota", "namespace": namespace,
                     "creationTimestamp": _ts(created)},
        "spec": {"hard": dict(hard)},
        "status": {"hard": dict(hard), "used": used},
    })


def _millicores(value: str) -> int:
    return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)


def _mebibytes(value: str) -> int:
    if value.endswith("Gi"):
        return int(value[:-2]) * 1024
    return int(value[:-2]) if value.endswith("Mi") else 0


def _seed_events(server: FakeKubeAPIServer, namespace: str, now: datetime, bad_pod: str) -> None:
    counter = 0

    def event(pod: Obj, kind: str, reason: str, message: str, last: datetime,
              count: int = 1, first: datetime | None = None, component: str = "kubelet",
              field_path: str = "") -> None:
        nonlocal counter
        counter += 1
        meta = pod["metadata"]
        node = pod["spec"].get("nodeName", "")
        suffix = hashlib.sha256(f"{meta['name']}{counter}".encode()).hexdigest()[:16]
        involved: Obj = {"kind": "Pod", "namespace": namespace, "name": meta["name"],
                         "uid": meta["uid"], "apiVersion": "v1",
                         "resourceVersion": meta["resourceVersion"]}
        if field_path:
            involved["fieldPath"] = field_path
        server.put({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": namespace,
                         "creationTimestamp": _ts(first or last)},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": {"component": component, **({"host": node} if component == "kubelet"
                                                   else {})},
            "firstTimestamp": _ts(first or last),
            "lastTimestamp": _ts(last),
            "count": count,
            "type": kind,
            "reportingComponent": component,
            "reportingInstance": node if component == "kubelet" else "",
        })

    pods = [p for p in server.list("Pod", namespace) if p["status"].get("phase") == "Running"]
    green = [p for p in pods if p["metadata"].get("labels", {}).get("version") == "green"]
    for pod in pods:
        container = pod["spec"]["containers"][0]
        path = f"spec.containers{{{container['name']}}}"
        if pod["metadata"]["name"] == bad_pod:
            start = now - timedelta(hours=3, minutes=18)
        elif green and pod is green[0]:
            start = now - timedelta(minutes=52)
        else:
            # Routine start-up events older than an hour have been garbage-collected.
            continue
        event(pod, "Normal", "Scheduled", f"Successfully assigned {namespace}/"
              f"{pod['metadata']['name']} to {pod['spec'].get('nodeName')}", start,
              component="default-scheduler")
        event(pod, "Normal", "Pulled", f'Container image "{container["image"]}" already present '
              "on machine", start + timedelta(seconds=3), field_path=path)
        event(pod, "Normal", "Created", f"Created container {container['name']}",
              start + timedelta(seconds=4), field_path=path)
        event(pod, "Normal", "Started", f"Started container {container['name']}",
              start + timedelta(seconds=5), field_path=path)
    for pod in green[:1]:
        event(pod, "Warning", "FailedScheduling",
              "0/3 nodes are available: 1 node(s) had untolerated taint "
              "{node.kubernetes.io/memory-pressure: }, 2 Insufficient memory. preemption: 0/3 "
              "nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption "
              "victims found for incoming pod.",
              now - timedelta(minutes=52, seconds=30), count=3,
              first=now - timedelta(minutes=54), component="default-scheduler")
    bad = next(p for p in pods if p["metadata"]["name"] == bad_pod)
    path = "spec.containers{api}"
    event(bad, "Warning", "OOMKilling", "Memory cgroup out of memory: Killed process 2841 "
          "(uvicorn) total-vm:2214532kB, anon-rss:1046212kB, file-rss:10240kB, shmem-rss:0kB, "
          "UID:1000 pgtables:2412kB oom_score_adj:968", now - timedelta(minutes=3, seconds=12),
          count=7, first=now - timedelta(hours=2, minutes=51), field_path=path)
    event(bad, "Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with "
          "statuscode: 503", now - timedelta(minutes=4), count=19,
          first=now - timedelta(hours=2, minutes=55), field_path=path)
    event(bad, "Warning", "BackOff", "Back-off restarting failed container api in pod "
          f"{bad_pod}_{namespace}({bad['metadata']['uid']})", now - timedelta(seconds=35),
          count=42, first=now - timedelta(hours=2, minutes=40), field_path=path)
    event(bad, "Normal", "Pulled", f'Container image "{bad["spec"]["containers"][0]["image"]}" '
          "already present on machine", now - timedelta(seconds=41), count=8,
          first=now - timedelta(hours=3, minutes=18), field_path=path)
    evicted = [p for p in server.list("Pod", namespace) if p["status"].get("reason") == "Evicted"]
    for pod in evicted:
        event(pod, "Warning", "Evicted", pod["status"]["message"], now - timedelta(days=3),
              count=1)
