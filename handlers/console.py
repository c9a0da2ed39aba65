"""`aia-bot console --sandbox`: the bot in a terminal, on a sandbox cluster and Slack.

It runs the same dispatcher, registry, roles and audit log as Slack does; only
the rendering differs. Lines are read from standard input, so it can be piped:
``printf '/aia pods\\n' | aia-bot console --sandbox``.

The sandbox has an escalation policy over its users, with its timers running, so
``/aia page``, ``/aia oncall``, ``/aia ack`` work; what the bot posts to the sandbox
Slack on its own (pages, DMs, thread notes) is printed after each command.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bot.approvals.service import ApprovalStoreUnavailable
from bot.context import Caller
from bot.core import Core, build_core
from bot.escalation.policy import EscalationPolicy
from bot.escalation.scheduler import EscalationScheduler
from bot.results import Action
from bot.service import OutcomeKind
from bot.settings import BotConfigFile, RolesConfig, load_settings
from handlers.render_text import render_text

if TYPE_CHECKING:
    from sandbox.slack_server import FakeSlackServer

# Escalation waits in the sandbox: long enough to acknowledge, short enough to watch.
SANDBOX_WAIT = "2m"
# How long after a command the console waits for the pages it started before printing.
SLACK_SETTLE_SECONDS = 0.3


@dataclass(frozen=True)
class SandboxUser:
    user_id: str
    name: str
    email: str
    role: str


SANDBOX_USERS = [
    SandboxUser("U0ALICE", "alice", "alice@sandbox.example", "operator"),
    SandboxUser("U0BOB", "bob", "bob@sandbox.example", "approver"),
    SandboxUser("U0CAROL", "carol", "carol@sandbox.example", "viewer"),
    SandboxUser("U0DAVE", "dave", "dave@sandbox.example", "admin"),
    SandboxUser("U0EVE", "eve", "eve@sandbox.example", "none"),
]
SANDBOX_TEAM = "T0AIA"
SANDBOX_CHANNEL = "C0ALERTS"

CONSOLE_HELP = """\
Type /aia commands (the "/aia" is optional), or:
  :slack       show what the bot posted to the sandbox Slack since the last look
  :user NAME   act as another sandbox user (alice operator, bob approver, carol viewer, dave admin, eve no role)
  :users       list sandbox users
  :click N     click button N of the last answer
  :quit        leave"""


class Sandbox:
    """A seeded fake cluster, a fake Slack and a SQLite file in a temporary directory."""

    def __init__(self) -> None:
        from sandbox.aia_seed import seed_aia_system
        from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql
        from sandbox.kube_server import FakeKubeAPIServer
        from sandbox.slack_server import FakeSlackServer

        self.dir = tempfile.TemporaryDirectory(prefix="aia-sandbox-")
        self.kube = FakeKubeAPIServer().start()
        seed_aia_system(self.kube)
        self.slack = FakeSlackServer().start()
        self.slack.add_channel(SANDBOX_CHANNEL, "aia-production-alerts", [u.user_id for u in SANDBOX_USERS])
        for user in SANDBOX_USERS:
            self.slack.add_user(user.user_id, user.name, user.email)
        self.kubeconfig = self.kube.write_kubeconfig(os.path.join(self.dir.name, "kubeconfig"))
        self._start_google_cloud()
        # Cloud SQL operations take a few seconds here, so their progress can be watched.
        self.cloudsql = FakeCloudSqlServer(operation_seconds=4).start()
        seed_cloudsql(self.cloudsql)

    def _start_google_cloud(self) -> None:
        """Secret Manager (and its ExternalSecrets operator) always; the registry when Debian's is installed."""
        from sandbox import registry
        from sandbox.external_secrets import ExternalSecretsController
        from sandbox.secretmanager_server import FakeSecretManager, seed_aia_secrets

        self.secret_manager = FakeSecretManager().start()
        seed_aia_secrets(self.secret_manager)
        self.external_secrets = ExternalSecretsController(self.kube, self.secret_manager).start()
        self.registry: registry.RegistryProcess | None = None
        self.notice = ""
        if registry.available():
            self.registry = registry.RegistryProcess().start()
            registry.seed_aia_images(self.registry)
        else:
            self.notice = ("Images are unavailable in this sandbox: Debian's docker-registry is not installed "
                           "(apt-get install docker-registry), so /aia images, set-image and bluegreen deploy "
                           "cannot check tags.")

    def env(self) -> dict[str, str]:
        env = {
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_SIGNING_SECRET": "sandbox-signing-secret",
            "SLACK_API_URL": self.slack.api_url,
            "DATABASE_URL": f"sqlite:///{self.dir.name}/aia-bot.db",
            "KUBECONFIG": self.kubeconfig,
            "AIA_ALERT_CHANNEL": SANDBOX_CHANNEL,
            # A throwaway database gets a throwaway key: the audit chain is keyed here as in production.
            "AIA_AUDIT_KEY": secrets.token_hex(32),
            "SECRETMANAGER_EMULATOR_HOST": self.secret_manager.address,
            "AIA_ROTATABLE_SECRETS": "aia-api-key",
            "AIA_SECRET_SYNC_TIMEOUT_SECONDS": "30",
            "CLOUDSQL_EMULATOR_HOST": self.cloudsql.host,
            "CLOUDSQL_POLL_SECONDS": "1",
        }
        # Without the local registry, a closed local port: the sandbox never reaches the real gcr.io.
        env["AIA_REGISTRY_URL"] = self.registry.url if self.registry is not None else "http://127.0.0.1:9"
        if os.environ.get("PROMETHEUS_URL"):
            env["PROMETHEUS_URL"] = os.environ["PROMETHEUS_URL"]
        return env

    def escalation(self) -> EscalationPolicy:
        """The runbook's four levels over the sandbox users; waits short enough to watch."""
        by_name = {u.name: u.user_id for u in SANDBOX_USERS}
        return EscalationPolicy.model_validate({"levels": [
            {"name": "on-call", "notify": [by_name["alice"]], "wait": SANDBOX_WAIT},
            {"name": "troubleshooting", "notify": [by_name["bob"]], "wait": SANDBOX_WAIT},
            {"name": "devops-team", "notify": [by_name["dave"]], "wait": SANDBOX_WAIT},
            {"name": "architect", "notify": [by_name["carol"]], "wait": SANDBOX_WAIT},
        ]})

    def roles(self) -> RolesConfig:
        by_role: dict[str, list[str]] = {"viewer": [], "operator": [], "approver": [], "admin": []}
        for user in SANDBOX_USERS:
            if user.role in by_role:
                by_role[user.role].append(user.user_id)
        return RolesConfig(**by_role)

    def close(self) -> None:
        self.external_secrets.stop()
        self.secret_manager.stop()
        if self.registry is not None:
            self.registry.stop()
        self.kube.stop()
        self.slack.stop()
        self.cloudsql.stop()
        self.dir.cleanup()


class Console:
    def __init__(self, core: Core, files_dir: Path, out: Callable[[str], None] = print,
                 slack: FakeSlackServer | None = None) -> None:
        self.core = core
        self.files_dir = files_dir
        self.out = out
        self.slack = slack
        self._slack_seen: dict[tuple[str, str], str] = {}
        self.user = SANDBOX_USERS[0]
        self.buttons: list[Action] = []
        self._cards = 0

    @property
    def prompt(self) -> str:
        return f"{self.user.name} ({self.user.role})> "

    def handle_line(self, line: str) -> bool:
        """Run one line; False means quit."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        if line.startswith(":"):
            return self._console_command(line[1:].split())
        text = line[4:] if line.lower().startswith("/aia") else line
        self._run(text)
        self.show_slack(settle=SLACK_SETTLE_SECONDS)
        return True

    def show_slack(self, settle: float = 0.0) -> None:
        """Print what the bot posted or edited in the sandbox Slack since the last look.

        ``settle``: pages go out on the bot's own threads right after a command answers;
        wait that long for them so they print under the command that caused them.
        """
        if self.slack is None:
            return
        if settle:
            time.sleep(settle)
        names = {u.user_id: u.name for u in SANDBOX_USERS}
        for message in self.slack.messages():
            key = (message.channel, message.ts)
            if self._slack_seen.get(key) == message.text:
                continue
            edited = key in self._slack_seen
            self._slack_seen[key] = message.text
            if message.channel.startswith("D"):
                where = "DM"
            elif message.thread_ts and message.thread_ts != message.ts:
                where = "thread"
            else:
                where = "#aia-production-alerts"
            text = message.text
            for user_id, name in names.items():
                text = text.replace(f"<@{user_id}>", f"@{name}")
            first, *rest = text.splitlines() or [""]
            self.out(f"  slack {where}{' (edited)' if edited else ''}: {first}")
            for extra in rest[:6]:
                self.out(f"    {extra}")

    def _console_command(self, words: list[str]) -> bool:
        verb = words[0].lower() if words else ""
        if verb in ("quit", "q", "exit"):
            return False
        if verb == "users":
            for user in SANDBOX_USERS:
                mark = "*" if user is self.user else " "
                self.out(f"{mark} {user.name:<6} {user.user_id:<9} {user.role}")
        elif verb == "user" and len(words) == 2:
            match = next((u for u in SANDBOX_USERS if words[1].lower() in (u.name, u.user_id.lower())), None)
            if match is None:
                self.out(f"no sandbox user {words[1]!r}; :users lists them")
            else:
                self.user = match
                self.out(f"you are now {match.name} ({match.role})")
        elif verb == "slack":
            self.show_slack()
        elif verb == "click" and len(words) == 2 and words[1].isdigit():
            index = int(words[1]) - 1
            if not 0 <= index < len(self.buttons):
                self.out(f"no button {words[1]}; the last answer had {len(self.buttons)}")
            elif self.buttons[index].command.startswith(":decide "):
                _, decision, request_id, ts = self.buttons[index].command.split()
                self._decide(decision, request_id, ts)
            else:
                self._run(self.buttons[index].command)
        else:
            self.out(CONSOLE_HELP)
        return True

    def _run(self, text: str) -> None:
        caller = Caller(user_id=self.user.user_id, team_id=SANDBOX_TEAM, channel_id=SANDBOX_CHANNEL)
        outcome = self.core.dispatcher.handle(text, caller)
        if outcome.kind is OutcomeKind.APPROVAL_REQUESTED and outcome.approval is not None:
            assert self.core.approvals is not None
            self._cards += 1
            ts = f"1700000000.{self._cards:06d}"
            self.core.approvals.attach_card(outcome.approval.id, SANDBOX_CHANNEL, ts)
            self._show_card(outcome.approval.id, ts)
        elif outcome.kind is OutcomeKind.OK and outcome.result is not None:
            rendered, files = render_text(outcome.result)
            self.out(rendered)
            for name, content in files:
                path = self.files_dir / name
                path.write_bytes(content)
                self.out(f"  saved {path}")
            self.buttons = list(outcome.result.actions)
            if outcome.result.followup is not None:
                for step in outcome.result.followup():
                    self.out("  … " + render_text(step)[0].splitlines()[-1])
        else:
            mark = {OutcomeKind.REFUSED: "refused", OutcomeKind.FAILED: "failed"}.get(outcome.kind, "error")
            self.out(f"{mark}: {outcome.message}")
            if outcome.usage:
                self.out(outcome.usage.replace("`", ""))


    def _show_card(self, request_id: str, ts: str) -> None:
        assert self.core.approvals is not None
        view = self.core.approvals.get(request_id)
        if view is None:
            return
        self.out(f"[approval {view.id}] {view.status.upper()}: {view.summary}")
        self.out(f"  requested by {view.requester_id}; approvals {len(view.approvals)}/{view.required_approvals}")
        if view.status == "pending":
            self.out("  preview:\n    " + view.preview.replace("\n", "\n    "))
            self.buttons = [Action(label, f":decide {label.lower()} {view.id} {ts}")
                            for label in ("Approve", "Deny", "Cancel")]
            self.out("Buttons: [1] Approve  [2] Deny  [3] Cancel   (:user bob, then :click 1)")
        elif view.result:
            self.out(f"  result: {view.result}")

    def _decide(self, decision: str, request_id: str, ts: str) -> None:
        assert self.core.approvals is not None
        caller = Caller(user_id=self.user.user_id, team_id=SANDBOX_TEAM, channel_id=SANDBOX_CHANNEL)
        try:
            outcome = self.core.approvals.decide(request_id, decision, caller, ts)
        except ApprovalStoreUnavailable:
            self.out("The bot's database is unreachable; nothing was decided and nothing was run.")
            return
        self.out(outcome.message)
        if outcome.executed is not None:
            rendered, _ = render_text(outcome.executed)
            self.out(rendered)
            if outcome.executed.followup is not None:
                # What Slack shows in the card's thread (a sync, a rollout), the last state in full.
                last = None
                for step in outcome.executed.followup():
                    last = step
                    self.out("  … " + render_text(step)[0].splitlines()[0])
                if last is not None:
                    self.out(render_text(last)[0])
            for step in outcome.executed.followup() if outcome.executed.followup else ():
                self.out("  … " + render_text(step)[0].splitlines()[-1])
        self._show_card(request_id, ts)


def run_console(sandbox: bool, stdin: IO[str] | None = None, out: Callable[[str], None] = print) -> int:
    stdin = stdin or sys.stdin
    if not sandbox:
        out("aia-bot console needs --sandbox for now: it runs against a sandbox cluster and Slack.")
        return 2
    if importlib.util.find_spec("sandbox") is None:  # the container image ships the bot only
        out("The sandbox is not installed in this image: the container ships the bot only. "
            "Run `aia-bot console --sandbox` from a checkout (`pip install -e .`).")
        return 2
    # gRPC's C core logs connection shutdowns at INFO on stderr; a newcomer's terminal only needs errors.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    box = Sandbox()
    timers: EscalationScheduler | None = None
    try:
        settings = load_settings(box.env())
        core = build_core(settings, BotConfigFile(roles=box.roles(), escalation=box.escalation()))
        assert core.escalation is not None
        timers = EscalationScheduler(core.escalation, settings.aia_escalation_poll_seconds, 2)
        timers.start()
        # Graphs outlive the sandbox: they are what the newcomer wants to open.
        console = Console(core, Path(tempfile.mkdtemp(prefix="aia-sandbox-files-")), out, box.slack)
        interactive = stdin.isatty()
        if interactive:
            out("AIA runbook bot — sandbox. Nothing here touches a real cluster or Slack.")
        if box.notice:
            out(box.notice)
            out(CONSOLE_HELP)
        while True:
            if interactive:
                try:
                    line = input(console.prompt)
                except EOFError:
                    break
            else:
                line = stdin.readline()
                if not line:
                    break
            if not console.handle_line(line):
                break
        return 0
    finally:
        if timers is not None:
            timers.stop()
        box.close()
