"""Real Prometheus (Debian's package) scraping a small exporter of the AIA metrics."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tests.harness.bot_process import free_port

RULES = """\
groups:
  - name: test
    interval: 1s
    rules:
      - alert: TestHighErrorRate
        expr: sum(rate(http_requests_total{status=~"5.."}[1m])) > 0
        labels:
          severity: warning
        annotations:
          summary: 5xx responses seen
"""


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    """Until `GET /-/ready` answers 200 (Prometheus and Alertmanager both have it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log.read_text(errors="replace"))
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{log.stem} at {url} did not become ready")


class AiaExporter:
    """Serves http_requests_total (with some 5xx), latency buckets and pod memory."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "requests", ["status"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "latency", registry=self.registry)
        self.memory = Gauge("container_memory_usage_bytes", "memory", ["pod", "container"], registry=self.registry)
        # The runbook's "Database Performance" metrics as the app's pool exports them (`/aia db status`).
        self.pool_in_use = Gauge("db_pool_connections_in_use", "pool", registry=self.registry)
        self.pool_total = Gauge("db_pool_connections_total", "pool", registry=self.registry)
        self.pool_in_use.set(7)
        self.pool_total.set(20)
        self.error_share = 0.2
        self.port = free_port()
        self._stop = threading.Event()

    def start(self) -> AiaExporter:
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        threading.Thread(target=self._traffic, daemon=True).start()
        return self

    def _traffic(self) -> None:
        rng = random.Random(7)
        while not self._stop.is_set():
            for _ in range(20):
                status = "500" if rng.random() < self.error_share else "200"
                self.requests.labels(status).inc()
                self.latency.observe(rng.uniform(0.01, 0.4))
            for i, pod in enumerate(("aia-api-blue-a", "aia-api-blue-b", "aia-api-green-a")):
                self.memory.labels(pod, "api").set(200e6 + i * 150e6 + rng.uniform(0, 10e6))
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()


class PrometheusProcess:
    def __init__(self, targets: list[str], rule_files: list[Path] | None = None,
                 alertmanager: str | None = None) -> None:
        """``rule_files`` are loaded besides the test rule; ``alertmanager`` (host:port) gets the alerts."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: apt-get install prometheus (see .ci/run)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="aia-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "rules.yml").write_text(RULES)
        static = "\n".join(f"          - {t}" for t in targets)
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: [{', '.join(str(p) for p in [self.dir / 'rules.yml', *(rule_files or [])])}]\n"
            + (f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n"
               if alertmanager else "")
            + "scrape_configs:\n  - job_name: aia\n    static_configs:\n      - targets:\n"
            f"{static}\n        labels:\n          namespace: aia-production\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> PrometheusProcess:
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "prometheus.log", "wb"),  # noqa: SIM115
        )
        wait_ready(self.process, self.url, self.dir / "prometheus.log", timeout)
        return self

    def wait_for(self, query: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5).json()
            if result.get("data", {}).get("result"):
                return list(result["data"]["result"])
            time.sleep(0.5)
        raise AssertionError(f"no data for {query} after {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
