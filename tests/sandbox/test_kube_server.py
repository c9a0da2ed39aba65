"""The sandbox Kubernetes API server, driven by the official client through a kubeconfig."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sandbox.aia_seed import IMAGE_REPOSITORY, PRESSURED_NODE, seed_aia_system
from sandbox.kube_server import FakeKubeAPIServer

NS = "aia-production"


@pytest.fixture()
def server() -> Iterator[FakeKubeAPIServer]:
    with FakeKubeAPIServer() as srv:
        seed_aia_system(srv)
        yield srv


@pytest.fixture()
def api(server: FakeKubeAPIServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(
        config_file=server.write_kubeconfig(tmp_path / "kubeconfig")
    )
    yield api_client
    api_client.close()


@pytest.fixture()
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture()
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture()
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _status_reason(error: ApiException) -> str:
    return json.loads(error.body)["reason"]


def _status_message(error: ApiException) -> str:
    return json.loads(error.body)["message"]


def _deployment(name: str, image: str = "example/app:v1", replicas: int = 2) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image,
                                         "env": [{"name": "A", "value": "1"}]}]},
            },
        },
    }


# ---------------------------------------------------------------------------- reads


def test_list_pods_with_label_and_field_selectors(core: client.CoreV1Api) -> None:
    blue = core.list_namespaced_pod(NS, label_selector="app=aia-api,version=blue")
    assert blue.kind == "PodList" and int(blue.metadata.resource_version) > 0
    running = [p for p in blue.items if p.status.phase == "Running"]
    assert len(running) == 3
    assert all(p.metadata.labels["version"] == "blue" for p in blue.items)

    both = core.list_namespaced_pod(NS, label_selector="app=aia-api,version in (blue, green)")
    not_blue = core.list_namespaced_pod(NS, label_selector="app,version notin (blue)")
    assert len(both.items) == len(blue.items) + 2
    assert {p.metadata.labels.get("version") for p in not_blue.items} == {"green", None}

    failed = core.list_pod_for_all_namespaces(field_selector="status.phase=Failed")
    assert {(p.metadata.namespace, p.status.reason) for p in failed.items} == {
        (NS, "Evicted"), ("kube-system", "Evicted"),
    }
    mine = core.list_namespaced_pod(NS, field_selector="status.phase!=Running")
    assert [p.metadata.namespace for p in mine.items] == [NS]

    name = running[0].metadata.name
    single = core.list_namespaced_pod(NS, field_selector=f"metadata.name={name}")
    assert [p.metadata.name for p in single.items] == [name]
    on_node = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={PRESSURED_NODE}")
    assert on_node.items

    with pytest.raises(ApiException) as bad:
        core.list_namespaced_pod(NS, field_selector="spec.bogus=1")
    assert bad.value.status == 400


def test_events_by_involved_object(core: client.CoreV1Api) -> None:
    bad = [p for p in core.list_namespaced_pod(NS, label_selector="version=blue").items
           if p.status.container_statuses[0].restart_count == 7][0]
    events = core.list_namespaced_event(
        NS, field_selector=f"involvedObject.name={bad.metadata.name},type=Warning"
    )
    reasons = {e.reason for e in events.items}
    assert {"BackOff", "OOMKilling"} <= reasons
    assert all(e.last_timestamp > datetime.now(UTC) - timedelta(hours=4) for e in events.items)
    scheduling = core.list_namespaced_event(NS, field_selector="reason=FailedScheduling")
    assert len(scheduling.items) == 1


def test_not_found_is_a_status_404(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod("nope", NS)
    assert error.value.status == 404
    assert _status_reason(error.value) == "NotFound"
    assert _status_message(error.value) == 'pods "nope" not found'
    with pytest.raises(ApiException) as error:
        apps.read_namespaced_deployment("nope", NS)
    assert _status_message(error.value) == 'deployments.apps "nope" not found'


def test_wrong_token_is_401(server: FakeKubeAPIServer, tmp_path: Path) -> None:
    server.token = "another-token"
    api_client = config.new_client_from_config(
        config_file=server.write_kubeconfig(tmp_path / "kubeconfig")
    )
    server.token = "sandbox-token"
    with pytest.raises(ApiException) as error:
        client.CoreV1Api(api_client).list_namespaced_pod(NS)
    assert error.value.status == 401
    assert _status_reason(error.value) == "Unauthorized"
    api_client.close()


def test_unknown_path_is_a_404_status(server: FakeKubeAPIServer) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    connection.request("GET", "/apis/apps/v1/namespaces/x/widgets",
                       headers={"Authorization": f"Bearer {server.token}"})
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 404
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotFound", 404)


# ---------------------------------------------------------------------------- logs


def test_pod_log_container_previous_and_tail(
    server: FakeKubeAPIServer, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "two-containers"},
        "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]},
    })
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod_log("two-containers", NS)
    assert error.value.status == 400
    assert _status_message(error.value) == (
        "a container name must be specified for pod two-containers, choose one of: [a b]"
    )
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod_log("two-containers", NS, container="c")
    assert error.value.status == 400
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod_log("two-containers", NS, container="a", previous=True)
    assert _status_message(error.value) == (
        'previous terminated container "a" in pod "two-containers" not found'
    )

    server.set_pod_log(NS, "two-containers", "b", "one\ntwo\nthree\n")
    assert core.read_namespaced_pod_log("two-containers", NS, container="b") == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log("two-containers", NS, container="b", tail_lines=2) == (
        "two\nthree\n"
    )
    assert core.read_namespaced_pod_log("two-containers", NS, container="b", limit_bytes=5) == (
        "one\nt"
    )

    bad = [p for p in core.list_namespaced_pod(NS, label_selector="version=blue").items
           if p.status.container_statuses[0].restart_count == 7][0]
    previous = core.read_namespaced_pod_log(bad.metadata.name, NS, previous=True)
    assert "MemoryError" in previous and "memory usage" in previous
    assert "Starting aia-api" in core.read_namespaced_pod_log(bad.metadata.name, NS)


def test_pod_log_since_seconds_filters_by_timestamp(
    server: FakeKubeAPIServer, core: client.CoreV1Api
) -> None:
    now = datetime.now(UTC)
    old = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    new = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pod = core.list_namespaced_pod(NS, label_selector="app=aia-redis").items[0].metadata.name
    server.set_pod_log(NS, pod, "redis", f"{old} INFO old\n{new} ERROR new\n  continued\n")
    assert core.read_namespaced_pod_log(pod, NS, since_seconds=600) == (
        f"{new} ERROR new\n  continued\n"
    )
    stamped = core.read_namespaced_pod_log(pod, NS, timestamps=True, tail_lines=1)
    assert stamped.endswith("  continued\n") and stamped[:4].isdigit()


def test_seeded_logs_have_the_runbook_keywords(core: client.CoreV1Api) -> None:
    text = ""
    for pod in core.list_namespaced_pod(NS, field_selector="status.phase=Running").items:
        text += core.read_namespaced_pod_log(pod.metadata.name, NS, since_seconds=3600)
    for word in ("ERROR", "WARN", "unauthorized", "failed", "INFO"):
        assert word in text


# ---------------------------------------------------------------------------- writes


def test_strategic_merge_patch_rolls_out_a_new_replicaset(
    server: FakeKubeAPIServer, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    apps.create_namespaced_deployment(NS, _deployment("web"))
    before = apps.read_namespaced_deployment("web", NS)
    assert before.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert before.status.ready_replicas == 2 and before.status.observed_generation == 1

    patched = apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "example/app:v2"}]}}}})
    assert server.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert server.count("PATCH", "/deployments/web") == 1
    container = patched.spec.template.spec.containers[0]
    assert container.image == "example/app:v2"
    assert [e.name for e in container.env] == ["A"]  # merged by name, not replaced
    assert patched.metadata.generation == 2

    after = apps.read_namespaced_deployment("web", NS)
    assert after.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert after.status.observed_generation == 2
    assert after.status.updated_replicas == after.status.ready_replicas == 2
    progressing = {c.type: c for c in after.status.conditions}["Progressing"]
    assert progressing.reason == "NewReplicaSetAvailable"

    sets = apps.list_namespaced_replica_set(NS, label_selector="app=web").items
    revisions = {rs.metadata.annotations["deployment.kubernetes.io/revision"]:
                 rs for rs in sets}
    assert set(revisions) == {"1", "2"}
    assert revisions["1"].spec.replicas == 0 and revisions["2"].spec.replicas == 2
    new_rs = revisions["2"]
    assert new_rs.metadata.owner_references[0].name == "web"
    assert new_rs.metadata.name.startswith("web-") and len(new_rs.metadata.name) == len("web-") + 10
    pods = core.list_namespaced_pod(NS, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.containers[0].image == "example/app:v2"
        assert pod.metadata.labels["pod-template-hash"] in new_rs.metadata.name
        assert pod.metadata.name.startswith(new_rs.metadata.name + "-")
        assert pod.status.container_statuses[0].ready
        assert pod.status.container_statuses[0].restart_count == 0

    # A rolling restart is a template change too (kubectl rollout restart).
    apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}})
    restarted = apps.read_namespaced_deployment("web", NS)
    assert restarted.metadata.annotations["deployment.kubernetes.io/revision"] == "3"


def test_rollback_reuses_the_old_replicaset(api: client.ApiClient,
                                           apps: client.AppsV1Api) -> None:
    sets = apps.list_namespaced_replica_set(NS, label_selector="app=aia-api,version=blue").items
    by_revision = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs for rs in sets}
    assert set(by_revision) == {"1", "2"}
    # kubectl rollout undo: the old ReplicaSet's template goes back into the deployment.
    template = api.sanitize_for_serialization(by_revision["1"].spec.template)
    apps.patch_namespaced_deployment("aia-api-blue", NS, {"spec": {"template": template}})
    blue = apps.read_namespaced_deployment("aia-api-blue", NS)
    assert blue.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert blue.spec.template.spec.containers[0].image == f"{IMAGE_REPOSITORY}:v1.4.1"
    after = apps.list_namespaced_replica_set(NS, label_selector="app=aia-api,version=blue").items
    replicas = {rs.metadata.name: rs.spec.replicas for rs in after}
    assert replicas == {by_revision["1"].metadata.name: 3, by_revision["2"].metadata.name: 0}


def test_seeded_blue_rollout_and_unready_new_pods(
    server: FakeKubeAPIServer, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    server.new_pods_ready = False
    apps.patch_namespaced_deployment("aia-api-blue", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "api", "image": f"{IMAGE_REPOSITORY}:v1.4.3"}]}}}})
    blue = apps.read_namespaced_deployment("aia-api-blue", NS)
    assert blue.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert blue.status.updated_replicas == 3
    assert (blue.status.available_replicas or 0) < 3
    progressing = {c.type: c for c in blue.status.conditions}["Progressing"]
    assert progressing.reason == "ReplicaSetUpdated"
    # The old pods keep serving while the new ones never become ready.
    serving = core.list_namespaced_pod(NS, label_selector="version=blue").items
    assert any(p.spec.containers[0].image.endswith(":v1.4.2") for p in serving)


def test_scale_subresource(server: FakeKubeAPIServer, core: client.CoreV1Api,
                           apps: client.AppsV1Api) -> None:
    scale = apps.read_namespaced_deployment_scale("aia-frontend", NS)
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas == 2 and scale.status.selector == "app=aia-frontend"

    apps.patch_namespaced_deployment_scale("aia-frontend", NS, {"spec": {"replicas": 4}})
    assert len(core.list_namespaced_pod(NS, label_selector="app=aia-frontend").items) == 4
    assert apps.read_namespaced_deployment("aia-frontend", NS).spec.replicas == 4

    scale = apps.read_namespaced_deployment_scale("aia-frontend", NS)
    scale.spec.replicas = 1
    replaced = apps.replace_namespaced_deployment_scale("aia-frontend", NS, scale)
    assert replaced.spec.replicas == 1
    assert len(core.list_namespaced_pod(NS, label_selector="app=aia-frontend").items) == 1

    with pytest.raises(ApiException) as error:
        apps.patch_namespaced_deployment_scale("aia-frontend", NS, {"spec": {"replicas": -1}})
    assert error.value.status == 422


def test_dry_run_changes_nothing(server: FakeKubeAPIServer, core: client.CoreV1Api,
                                 apps: client.AppsV1Api) -> None:
    rv = apps.read_namespaced_deployment("aia-api-blue", NS).metadata.resource_version
    pods_before = sorted(p.metadata.name for p in core.list_namespaced_pod(NS).items)

    answer = apps.patch_namespaced_deployment(
        "aia-api-blue", NS, {"spec": {"replicas": 9}}, dry_run="All"
    )
    assert answer.spec.replicas == 9
    apps.patch_namespaced_deployment_scale("aia-api-blue", NS, {"spec": {"replicas": 0}},
                                           dry_run="All")
    core.patch_namespaced_config_map("aia-config", NS, {"data": {"LOG_LEVEL": "DEBUG"}},
                                     dry_run="All")
    created = core.create_namespaced_config_map(
        NS, {"metadata": {"name": "dry"}, "data": {"a": "b"}}, dry_run="All"
    )
    assert created.metadata.name == "dry"
    core.delete_namespaced_pod(pods_before[0], NS, dry_run="All")
    apps.delete_namespaced_deployment("aia-redis", NS, dry_run="All")

    assert apps.read_namespaced_deployment("aia-api-blue", NS).metadata.resource_version == rv
    assert core.read_namespaced_config_map("aia-config", NS).data["LOG_LEVEL"] == "INFO"
    assert server.get("ConfigMap", "dry", NS) is None
    assert sorted(p.metadata.name for p in core.list_namespaced_pod(NS).items) == pods_before


def test_replace_with_stale_resource_version_conflicts(core: client.CoreV1Api) -> None:
    stale = core.read_namespaced_config_map("aia-config", NS)
    fresh = core.read_namespaced_config_map("aia-config", NS)
    fresh.data["LOG_LEVEL"] = "DEBUG"
    updated = core.replace_namespaced_config_map("aia-config", NS, fresh)
    assert int(updated.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.data["MAINTENANCE_MODE"] = "true"
    with pytest.raises(ApiException) as error:
        core.replace_namespaced_config_map("aia-config", NS, stale)
    assert error.value.status == 409
    assert _status_reason(error.value) == "Conflict"
    assert core.read_namespaced_config_map("aia-config", NS).data["MAINTENANCE_MODE"] == "false"


def test_merge_and_json_patches(server: FakeKubeAPIServer, core: client.CoreV1Api,
                                custom: client.CustomObjectsApi) -> None:
    core.patch_namespaced_config_map("aia-config", NS, {"data": {"MAINTENANCE_MODE": "true"}})
    data = core.read_namespaced_config_map("aia-config", NS).data
    assert data["MAINTENANCE_MODE"] == "true" and data["LOG_LEVEL"] == "INFO"

    core.patch_namespaced_config_map("aia-config", NS, [
        {"op": "test", "path": "/data/LOG_LEVEL", "value": "INFO"},
        {"op": "replace", "path": "/data/LOG_LEVEL", "value": "DEBUG"},
        {"op": "remove", "path": "/data/FEATURE_FLAGS"},
    ])
    assert server.requests[-1].content_type == "application/json-patch+json"
    data = core.read_namespaced_config_map("aia-config", NS).data
    assert data["LOG_LEVEL"] == "DEBUG" and "FEATURE_FLAGS" not in data
    with pytest.raises(ApiException) as error:
        core.patch_namespaced_config_map(
            "aia-config", NS, [{"op": "test", "path": "/data/LOG_LEVEL", "value": "INFO"}]
        )
    assert error.value.status == 422

    # The runbook's traffic switch: a patch of the service selector.
    core.patch_namespaced_service("aia-api", NS, {"spec": {"selector": {"version": "green"}}})
    selector = core.read_namespaced_service("aia-api", NS).spec.selector
    assert selector == {"app": "aia-api", "version": "green"}

    with pytest.raises(ApiException) as error:
        core.patch_namespaced_config_map("aia-config", NS, {"data": {"MAINTENANCE_MODE": True}})
    assert error.value.status == 400


def test_create_conflicts_and_namespace_deletion(server: FakeKubeAPIServer,
                                                 core: client.CoreV1Api) -> None:
    body = {"metadata": {"name": "extra"}, "data": {"k": "v"}}
    core.create_namespaced_config_map(NS, body)
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map(NS, body)
    assert error.value.status == 409 and _status_reason(error.value) == "AlreadyExists"
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map("no-such-namespace", body)
    assert error.value.status == 404

    core.create_namespace({"metadata": {"name": "scratch"}})
    core.create_namespaced_config_map("scratch", body)
    deleted = core.delete_namespace("scratch")
    # The server answers with the Namespace (Terminating); the client types it as V1Status and
    # falls back to the plain dict.
    assert deleted["status"]["phase"] == "Terminating"
    assert server.list("ConfigMap", "scratch") == []
    assert server.get("Namespace", "scratch") is None


def test_deleting_a_controlled_pod_replaces_it(core: client.CoreV1Api) -> None:
    pods = core.list_namespaced_pod(NS, label_selector="app=aia-redis").items
    core.delete_namespaced_pod(pods[0].metadata.name, NS)
    again = core.list_namespaced_pod(NS, label_selector="app=aia-redis").items
    assert len(again) == 1 and again[0].metadata.name != pods[0].metadata.name


def test_injected_failures_and_request_log(server: FakeKubeAPIServer,
                                           core: client.CoreV1Api) -> None:
    server.fail_next(503, times=2, path_contains="/configmaps")
    for _ in range(2):
        with pytest.raises(ApiException) as error:
            core.read_namespaced_config_map("aia-config", NS)
        assert error.value.status == 503
        assert _status_reason(error.value) == "ServiceUnavailable"
    assert core.read_namespaced_config_map("aia-config", NS).data
    assert server.count("GET", "/configmaps/aia-config") == 3
    method, path, query, body, content_type = server.requests[-1]
    assert (method, path, query, body) == (
        "GET", f"/api/v1/namespaces/{NS}/configmaps/aia-config", {}, None
    )
    _ = content_type


def test_watch_streams_changes(server: FakeKubeAPIServer, apps: client.AppsV1Api) -> None:
    def scale_soon() -> None:
        time.sleep(0.2)
        redis = server.get("Deployment", "aia-redis", NS)
        assert redis is not None
        redis["spec"]["replicas"] = 2
        server.put(redis)

    threading.Thread(target=scale_soon).start()
    seen = []
    for event in watch.Watch().stream(apps.list_namespaced_deployment, NS,
                                      field_selector="metadata.name=aia-redis",
                                      timeout_seconds=1):
        seen.append((event["type"], event["object"].spec.replicas))
    assert seen[0] == ("ADDED", 1)
    assert ("MODIFIED", 2) in seen


def test_throttling_with_retry_after_is_retried_by_the_client(
    server: FakeKubeAPIServer, core: client.CoreV1Api
) -> None:
    server.fail_next(429, path_contains="/pods")
    with pytest.raises(ApiException) as error:
        core.list_namespaced_pod(NS)
    assert error.value.status == 429
    # With Retry-After (as the real server sends), urllib3 retries the GET on its own.
    server.fail_next(429, path_contains="/pods", retry_after=0)
    before = server.count("GET", "/pods")
    assert core.list_namespaced_pod(NS).items
    assert server.count("GET", "/pods") == before + 2


# ---------------------------------------------------------------------------- other APIs


def test_metrics_through_custom_objects(custom: client.CustomObjectsApi) -> None:
    pods = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", NS, "pods")
    assert pods["kind"] == "PodMetricsList"
    usage = {}
    for item in pods["items"]:
        memory = item["containers"][0]["usage"]["memory"]
        assert memory.endswith("Ki")
        usage[item["metadata"]["name"]] = int(memory[:-2]) // 1024
    api = [v for k, v in usage.items() if k.startswith("aia-api-")]
    assert len(api) == 5 and min(api) >= 200 and max(api) >= 900

    nodes = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert nodes["kind"] == "NodeMetricsList" and len(nodes["items"]) == 3
    one = custom.get_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", NS, "pods", pods["items"][0]["metadata"]["name"]
    )
    assert one["kind"] == "PodMetrics"


def test_external_secrets_through_custom_objects(custom: client.CustomObjectsApi) -> None:
    listed = custom.list_namespaced_custom_object(
        "external-secrets.io", "v1", NS, "externalsecrets"
    )
    status = {i["metadata"]["name"]: i["status"]["conditions"][0] for i in listed["items"]}
    assert status["aia-secrets"]["reason"] == "SecretSynced"
    assert status["aia-oauth-credentials"]["status"] == "False"
    assert "PermissionDenied" in status["aia-oauth-credentials"]["message"]

    # Forcing a refresh, as `kubectl annotate es force-sync=...` does (a merge patch).
    patched = custom.patch_namespaced_custom_object(
        "external-secrets.io", "v1", NS, "externalsecrets", "aia-secrets",
        {"metadata": {"annotations": {"force-sync": "1700000000"}}},
    )
    assert patched["metadata"]["annotations"]["force-sync"] == "1700000000"
    assert patched["status"]["conditions"][0]["reason"] == "SecretSynced"


def test_service_proxy_health(server: FakeKubeAPIServer, core: client.CoreV1Api) -> None:
    answer = core.connect_get_namespaced_service_proxy_with_path("aia-api:8000", NS, "health")
    assert "healthy" in str(answer)
    for pod in server.list("Pod", NS, label_selector="app=aia-redis"):
        for condition in pod["status"]["conditions"]:
            condition["status"] = "False"
        server.put(pod)
    with pytest.raises(ApiException) as error:
        core.connect_get_namespaced_service_proxy_with_path("aia-redis", NS, "health")
    assert error.value.status == 503


def test_discovery_and_version(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().major == "1"
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "metrics.k8s.io", "external-secrets.io"} <= groups
    core_resources = {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "pods/log", "services/proxy"} <= core_resources


# ---------------------------------------------------------------------------- slowness


def test_delay_makes_calls_slow(server: FakeKubeAPIServer, core: client.CoreV1Api) -> None:
    server.delay_seconds = 0.5
    started = time.monotonic()
    core.read_namespace(NS)
    assert time.monotonic() - started >= 0.5


def test_concurrent_requests_are_served_in_parallel(
    server: FakeKubeAPIServer, core: client.CoreV1Api
) -> None:
    server.delay_seconds = 1.0
    errors: list[BaseException] = []

    def call() -> None:
        try:
            core.list_namespaced_pod(NS)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert time.monotonic() - started < 4


# ---------------------------------------------------------------------------- seed


def test_seed_builds_the_aia_system(server: FakeKubeAPIServer, core: client.CoreV1Api,
                                    apps: client.AppsV1Api) -> None:
    deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(NS).items}
    assert set(deployments) == {"aia-api-blue", "aia-api-green", "aia-frontend", "aia-redis"}
    blue = deployments["aia-api-blue"]
    assert blue.spec.replicas == 3
    assert blue.spec.template.spec.containers[0].image == f"{IMAGE_REPOSITORY}:v1.4.2"
    assert blue.spec.template.spec.containers[0].ports[0].container_port == 8000
    assert deployments["aia-api-green"].spec.template.spec.containers[0].image.endswith(":v1.5.0")
    assert blue.status.ready_replicas == 2

    bad = [p for p in core.list_namespaced_pod(NS, label_selector="version=blue").items
           if p.status.phase == "Running" and not p.status.container_statuses[0].ready]
    assert len(bad) == 1
    status = bad[0].status.container_statuses[0]
    assert status.restart_count == 7
    assert status.last_state.terminated.reason == "OOMKilled"
    assert status.state.waiting.reason == "CrashLoopBackOff"

    assert core.read_namespaced_service("aia-api", NS).spec.selector == {
        "app": "aia-api", "version": "blue"}
    config_map = core.read_namespaced_config_map("aia-config", NS).data
    assert config_map["LOG_LEVEL"] == "INFO" and config_map["MAINTENANCE_MODE"] == "false"
    secret = core.read_namespaced_secret("aia-secrets", NS)
    assert set(secret.data) == {"DATABASE_URL", "REDIS_URL", "API_KEY"}
    assert "fake" in base64.b64decode(secret.data["API_KEY"]).decode()
    types = {s.type for s in core.list_namespaced_secret(NS).items}
    assert "kubernetes.io/service-account-token" in types
    quota = core.read_namespaced_resource_quota("aia-quota", NS)
    assert quota.spec.hard["pods"] == "30" and quota.status.used["pods"]

    nodes = core.list_node().items
    assert len(nodes) == 3
    pressure = [n for n in nodes if any(c.type == "MemoryPressure" and c.status == "True"
                                        for c in n.status.conditions)]
    assert [n.metadata.name for n in pressure] == [PRESSURED_NODE]
    assert nodes[0].status.allocatable["memory"]

    assert client.NetworkingV1Api(core.api_client).read_namespaced_ingress("aia-ingress", NS)
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    assert rbac.list_namespaced_role(NS).items and rbac.list_namespaced_role_binding(NS).items
    assert {s.metadata.name for s in core.list_namespaced_service_account(NS).items} >= {
        "aia-api", "aia-runbook-bot"}
    evicted = core.list_namespaced_pod("kube-system", field_selector="status.phase=Failed")
    assert evicted.items[0].status.reason == "Evicted"
