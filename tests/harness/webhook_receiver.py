"""A local paging webhook that records PagerDuty Events API v2 bodies, and can be told to fail."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class WebhookEvent:
    body: dict[str, Any]
    at: float

    @property
    def action(self) -> str:
        return str(self.body.get("event_action"))

    @property
    def dedup_key(self) -> str:
        return str(self.body.get("dedup_key"))

    @property
    def details(self) -> dict[str, Any]:
        return dict((self.body.get("payload") or {}).get("custom_details") or {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog of 5 drops connections in a burst of pages, and the sender's
    # SYN retry then adds a second that PagerDuty would not.
    request_queue_size = 256


class WebhookReceiver:
    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []
        self.failures: list[int] = []  # HTTP statuses to answer next, in order
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver.lock:
                    status = receiver.failures.pop(0) if receiver.failures else 202
                    if status == 202:
                        receiver.events.append(WebhookEvent(json.loads(raw or b"{}"), time.time()))
                answer = json.dumps({"status": "success" if status == 202 else "error", "message": "Event processed"})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v2/enqueue"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def received(self, escalation_id: str | None = None) -> list[WebhookEvent]:
        with self.lock:
            return [e for e in self.events
                    if escalation_id is None or e.dedup_key == f"aia-escalation-{escalation_id}"]
