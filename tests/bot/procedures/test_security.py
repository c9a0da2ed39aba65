"""`/aia security check` against a local HTTP server that answers like Grafana's API."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.core import build_core
from bot.results import Table
from bot.service import OutcomeKind
from bot.settings import load_settings
from tests.harness.calls import run_as


def _grafana(password: str) -> ThreadingHTTPServer:
    expected = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            ok = self.path == "/api/user" and self.headers.get("Authorization") == expected
            body = b'{"login":"admin"}' if ok else b'{"message":"invalid username or password"}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(("password", "verdict"), [("admin", "FAIL"), ("s3cure-and-changed", "ok")])
def test_grafana_default_password_is_reported(bot_env, roles, password: str, verdict: str) -> None:  # type: ignore[no-untyped-def]
    grafana = _grafana(password)
    try:
        url = f"http://127.0.0.1:{grafana.server_address[1]}"
        core = build_core(load_settings({**bot_env, "AIA_GRAFANA_URL": url}), roles)
        outcome = run_as(core, "viewer", "security check")
        assert outcome.kind is OutcomeKind.OK, outcome.message
        rows = {row[0]: row for row in next(p for p in outcome.result.parts if isinstance(p, Table)).rows}
        assert rows["Grafana default credentials"][1] == verdict
        assert rows["ExternalSecrets in sync"][1] == "FAIL"  # the seed has one failing ExternalSecret
        assert "admin/admin" not in outcome.result.summary
    finally:
        grafana.shutdown()
