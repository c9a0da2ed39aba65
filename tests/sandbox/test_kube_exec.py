"""`pods/exec` of the sandbox API server, over WebSocket, driven by the official client unmodified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import websocket
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from sandbox.aia_seed import seed_aia_system
from sandbox.kube_exec import MARKER, DatabaseProbe
from sandbox.kube_server import FakeKubeAPIServer

NS = "aia-production"
CHECK = ["python3", "-c", f"# {MARKER}: the bot's script\nprint('never run here')"]


@pytest.fixture()
def server() -> Iterator[FakeKubeAPIServer]:
    with FakeKubeAPIServer() as srv:
        seed_aia_system(srv)
        yield srv


@pytest.fixture()
def core(server: FakeKubeAPIServer, tmp_path: Path) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=server.write_kubeconfig(tmp_path / "kubeconfig"))
    yield client.CoreV1Api(api_client)
    api_client.close()


def _ready_pod(server: FakeKubeAPIServer, colour: str = "blue") -> str:
    pods = [p for p in server.list("Pod", NS, f"version={colour}")
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    return str(sorted(p["metadata"]["name"] for p in pods)[0])


def _exec(core: client.CoreV1Api, pod: str, command: list[str]):  # type: ignore[no-untyped-def]
    ws = stream(core.connect_get_namespaced_pod_exec, pod, NS, command=command, container="api",
                stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    ws.run_forever(timeout=5)
    return ws


def test_check_runs_over_the_channel_protocol_and_reads_the_pods_own_secret(server, core) -> None:  # type: ignore[no-untyped-def]
    pod = _ready_pod(server)
    ws = _exec(core, pod, CHECK)
    assert ws.returncode == 0  # the client's own parsing of the Status on channel 3
    out = json.loads(ws.read_stdout())
    # The host comes from DATABASE_URL in the Secret the pod's env refers to.
    assert out["host"] == "mas-system-postgres" and out["port"] == 5432
    assert out["dns"]["ok"] and out["tcp"]["ok"] and out["select1"]["status"] == "ok"
    record = server.pod_exec.sessions[-1]
    assert (record.pod, record.container, record.command) == (pod, "api", CHECK)
    assert record.subprotocol == "v5.channel.k8s.io"  # the client's first choice


def test_preloaded_stream_returns_stdout(server, core) -> None:  # type: ignore[no-untyped-def]
    text = stream(core.connect_get_namespaced_pod_exec, _ready_pod(server), NS, command=CHECK,
                  stderr=True, stdin=False, stdout=True, tty=False)
    assert json.loads(text)["check"] == MARKER


def test_v4_frames_are_channel_prefixed_with_a_final_status(server) -> None:  # type: ignore[no-untyped-def]
    pod = _ready_pod(server)
    query = urlencode([("command", c) for c in CHECK] + [("stdout", "true"), ("stderr", "true")])
    url = f"ws://127.0.0.1:{server.port}/api/v1/namespaces/{NS}/pods/{pod}/exec?{query}"
    conn = websocket.create_connection(url, header=[f"Authorization: Bearer {server.token}"],
                                       subprotocols=["v4.channel.k8s.io"], timeout=5)
    assert conn.subprotocol == "v4.channel.k8s.io"
    frames = []
    while True:
        opcode, data = conn.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        assert opcode == websocket.ABNF.OPCODE_BINARY
        frames.append((data[0], data[1:]))
    conn.close()
    assert [channel for channel, _ in frames] == [1, 3]
    assert json.loads(frames[0][1])["check"] == MARKER
    assert json.loads(frames[1][1]) == {"metadata": {}, "status": "Success"}


def test_failing_step_is_a_non_zero_exit_code(server, core) -> None:  # type: ignore[no-untyped-def]
    pod = _ready_pod(server)
    server.pod_exec.set_probe(NS, pod, DatabaseProbe(resolves=False))
    ws = _exec(core, pod, CHECK)
    assert ws.returncode == 1
    out = json.loads(ws.read_stdout())
    assert out["dns"]["ok"] is False and "tcp" not in out


def test_any_other_command_is_refused_and_nothing_runs_on_the_host(server, core, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "created-by-exec"
    ws = _exec(core, _ready_pod(server), ["touch", str(marker)])
    status = json.loads(ws.read_channel(3))
    assert status["status"] == "Failure" and "executable file not found" in status["message"]
    assert not marker.exists()
    # A script without the marker is just another command.
    ws = _exec(core, _ready_pod(server), ["python3", "-c", "import os; os.system('id')"])
    assert json.loads(ws.read_channel(3))["status"] == "Failure" and ws.read_stdout() == ""


def test_forbidden_missing_pod_and_plain_http_are_http_errors_before_any_upgrade(server, core) -> None:  # type: ignore[no-untyped-def]
    pod = _ready_pod(server)
    server.pod_exec.forbidden = True
    with pytest.raises(ApiException) as forbidden:
        _exec(core, pod, CHECK)
    assert "403" in str(forbidden.value) and 'cannot create resource \\"pods/exec\\"' in str(forbidden.value)
    server.pod_exec.forbidden = False
    with pytest.raises(ApiException) as missing:
        _exec(core, "aia-api-blue-gone", CHECK)
    assert "404" in str(missing.value)
    with pytest.raises(ApiException) as plain:
        core.connect_get_namespaced_pod_exec(pod, NS, command=CHECK, stdout=True)
    assert plain.value.status == 400 and "Upgrade request required" in str(plain.value.body)
    assert len(server.pod_exec.sessions) == 0


def test_hanging_check_keeps_the_stream_open_until_the_client_gives_up(server, core) -> None:  # type: ignore[no-untyped-def]
    pod = _ready_pod(server)
    server.pod_exec.set_probe(NS, pod, DatabaseProbe(hang=True))
    ws = stream(core.connect_get_namespaced_pod_exec, pod, NS, command=CHECK, stderr=True, stdin=False,
                stdout=True, tty=False, _preload_content=False)
    ws.run_forever(timeout=1)
    assert ws.is_open() and ws.read_stdout(timeout=0) == ""
    ws.close()


def test_discovery_lists_the_exec_subresource(core) -> None:  # type: ignore[no-untyped-def]
    resources = {r.name: r.verbs for r in core.get_api_resources().resources}
    assert resources["pods/exec"] == ["create", "get"]
