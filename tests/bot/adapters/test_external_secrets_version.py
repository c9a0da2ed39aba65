"""ExternalSecrets are read at external-secrets.io/v1; an operator serving only v1beta1 (or no
operator at all) gets a message that says so, not a bare 404.

An API server of such a cluster is small enough to stand in for here: it answers the v1 list
with the API server's 404 Status and its discovery document with what it serves.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.adapters.kubernetes import KubeGateway
from bot.errors import BackendUnavailable

NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": "the server could not find the requested resource", "reason": "NotFound",
             "details": {}, "code": 404}


def _old_cluster(groups: list[dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0].rstrip("/") == "/apis":
                self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            else:
                self._send(404, NOT_FOUND)

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def gateway_for(tmp_path: Path) -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def make(groups: list[dict[str, Any]]) -> KubeGateway:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _old_cluster(groups))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "old",
            "clusters": [{"name": "old", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "old", "user": {"token": "t"}}],
            "contexts": [{"name": "old", "context": {"cluster": "old", "user": "old"}}],
        }
        path = tmp_path / f"kubeconfig-{len(servers)}"
        path.write_text(yaml.safe_dump(config))
        return KubeGateway(str(path), "aia-production", timeout=5)

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_operator_serving_only_v1beta1_is_named_with_the_fix(gateway_for) -> None:  # type: ignore[no-untyped-def]
    version = {"groupVersion": "external-secrets.io/v1beta1", "version": "v1beta1"}
    kube = gateway_for([{"name": "external-secrets.io", "versions": [version], "preferredVersion": version}])
    with pytest.raises(BackendUnavailable) as caught:
        kube.external_secrets()
    message = str(caught.value)
    assert "serves only external-secrets.io/v1beta1" in message
    assert "reads external-secrets.io/v1" in message and "v0.17" in message


def test_no_operator_at_all_is_named(gateway_for) -> None:  # type: ignore[no-untyped-def]
    kube = gateway_for([])
    with pytest.raises(BackendUnavailable) as caught:
        kube.external_secrets()
    assert "no External Secrets Operator" in str(caught.value)
