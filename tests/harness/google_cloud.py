"""The two-person-rule stack plus the Google Cloud stand-ins: a real OCI registry, the Secret
Manager gRPC server and the sandbox External Secrets Operator, wired into `aia-bot serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.external_secrets import ExternalSecretsController
from sandbox.secretmanager_server import FakeSecretManager, seed_aia_secrets
from tests.harness.approvals import Card, Stack, approval_stack
from tests.harness.registry import TestRegistry, aia_registry

ROTATABLE = "aia-api-key"

# The app deployment the rotations restart.
RESTART_PATH = "/deployments/aia-api-blue"


@dataclass
class CloudStack:
    stack: Stack
    registry: TestRegistry
    secret_manager: FakeSecretManager
    operator: ExternalSecretsController

    def reset(self) -> None:
        self.stack.fresh()
        self.secret_manager.reset()
        seed_aia_secrets(self.secret_manager)
        self.operator.reset()

    def restarts(self, path: str = RESTART_PATH) -> list[Any]:
        """The rollout restarts written to the deployment at ``path``."""
        return [r for r in self.stack.writes(path) if "restartedAt" in json.dumps(r.body, default=str)]

    def thread_text(self, card: Card) -> str:
        return "\n".join(m.text + json.dumps(m.blocks) for m in self.stack.slack.messages(card.channel)
                         if m.thread_ts == card.ts)

    def wait_thread(self, card: Card, fragment: str, timeout: float = 30) -> str:
        self.stack.slack.wait_for(lambda: fragment in self.thread_text(card), timeout=timeout)
        return self.thread_text(card)

    def everything_recorded(self) -> str:
        """Every Slack call, response and file, the audit log, the approval rows and the bot's log."""
        import psycopg

        slack = self.stack.slack
        parts = [json.dumps(c.args, default=str) + json.dumps(c.response, default=str) for c in slack.calls]
        parts += [json.dumps(r.body, default=str) for r in slack.responses]
        parts += [f.content.decode("utf-8", "replace") if isinstance(f.content, bytes) else str(f.content)
                  for f in slack.files]
        with psycopg.connect(self.stack.database_url) as conn:
            for table in ("audit_log", "approval_requests"):
                parts += [repr(row) for row in conn.execute(f"SELECT * FROM {table}").fetchall()]  # noqa: S608
        parts += [bot.logs() for bot in self.stack.bots]
        return "\n".join(parts)


@contextmanager
def cloud_stack(workdir: Path, **env: str) -> Iterator[CloudStack]:
    with aia_registry() as registry:
        secret_manager = FakeSecretManager().start()
        seed_aia_secrets(secret_manager)
        try:
            settings = {
                "AIA_REGISTRY_URL": registry.url,
                "SECRETMANAGER_EMULATOR_HOST": secret_manager.address,
                "AIA_ROTATABLE_SECRETS": ROTATABLE,
                # The stand-ins answer in milliseconds: short limits keep the tests of a Secret Manager
                # that does not answer, or an ExternalSecret that never syncs, from waiting long.
                "AIA_SECRET_SYNC_TIMEOUT_SECONDS": "5",
                "SECRETMANAGER_TIMEOUT_SECONDS": "3",
                "AIA_ROLLOUT_POLL_SECONDS": "0.3",
                "AIA_LOG_LEVEL": "DEBUG",
                **env,
            }
            with approval_stack(workdir, **settings) as stack:
                operator = ExternalSecretsController(stack.kube, secret_manager, interval=0.05).start()
                try:
                    yield CloudStack(stack, registry, secret_manager, operator)
                finally:
                    operator.stop()
        finally:
            secret_manager.stop()
