"""Real Alertmanager (Debian's prometheus-alertmanager) posting to the bot's webhook."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from tests.harness.bot_process import free_port
from tests.harness.prometheus import wait_ready

RULES = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "aia-rules.yaml"


def shipped_rules_for_tests(path: Path) -> Path:
    """The shipped rules with `for:` and range windows shortened, so a test sees an alert fire
    and resolve in seconds instead of minutes; expressions and labels are otherwise unchanged."""
    spec = yaml.safe_load(RULES.read_text())["spec"]
    for group in spec["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
            rule["expr"] = rule["expr"].replace("[5m]", "[5s]").replace("[15m]", "[15s]")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class AlertmanagerProcess:
    def __init__(self, webhook_url: str, token: str | None, group_wait: str = "1s",
                 group_interval: str = "2s", repeat_interval: str = "1h") -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise RuntimeError("alertmanager is not installed: apt-get install prometheus-alertmanager")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="aia-am-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        webhook: dict = {"url": webhook_url, "send_resolved": True, "max_alerts": 0}
        if token is not None:
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
        config = {
            "route": {"receiver": "aia-bot", "group_by": ["alertname", "namespace"], "group_wait": group_wait,
                      "group_interval": group_interval, "repeat_interval": repeat_interval,
                      # The Prometheus harness's own smoke rule is not part of these tests.
                      "routes": [{"receiver": "drop", "matchers": ['alertname="TestHighErrorRate"']}]},
            "receivers": [{"name": "aia-bot", "webhook_configs": [webhook]}, {"name": "drop"}],
        }
        (self.dir / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> AlertmanagerProcess:
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip: no port clashes between test runs
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "alertmanager.log", "wb"),  # noqa: SIM115
        )
        wait_ready(self.process, self.url, self.dir / "alertmanager.log", timeout)
        return self

    def log(self) -> str:
        return (self.dir / "alertmanager.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
