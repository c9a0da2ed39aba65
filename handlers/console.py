"""`aia-bot console --sandbox`: the bot in a terminal, on a sandbox cluster and Slack.

It runs the same dispatcher, registry, roles and audit log as Slack does; only
the rendering differs. Lines are read from standard input, so it can be piped:
``printf '/aia pods\\n' | aia-bot console --sandbox``.

The sandbox has an escalation policy over its users, with its timers running, so
``/aia page``, ``/aia oncall``, ``/aia ack`` work; what the bot posts to the sandbox
Slack on its own (pages, DMs, thread notes) is printed after each command.

A change that starts a rollout is followed in the background with one progress line kept
right above the prompt; Ctrl-C stops following it, or abandons the command that is running,
never the session. Piped, the outcome of a rollout prints when it is known, and where each
rollout stood when the input ended.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bot.approvals.service import ApprovalStatus, ApprovalStoreUnavailable
from bot.context import Caller
from bot.core import Core, build_core
from bot.escalation.scheduler import EscalationScheduler
from bot.escalation_policy import EscalationPolicy
from bot.results import Action, Fields, Result, Status, Text
from bot.service import OutcomeKind
from bot.settings import BotConfigFile, RolesConfig, load_settings
from handlers.render_text import STATUS_MARK, render_text, terminal_markup

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
# How long the end of a piped script waits for changes still being followed.
FOLLOW_WAIT_AT_EXIT_SECONDS = 90.0
SANDBOX_CHANNEL = "C0ALERTS"
SANDBOX_NAMESPACE = "aia-production"

CONSOLE_HELP = """\
Type /aia commands (the "/aia" is optional), or:
  :slack       show what the bot posted to the sandbox Slack since the last look
  :user NAME   act as another sandbox user (alice operator, bob approver, carol viewer, dave admin, eve no role)
  :users       list sandbox users
  :click N     click button N of the last answer
  :stuck on    new sandbox pods never become Ready, so a rollout hangs (:stuck off undoes it)
  :quit        leave"""


class Sandbox:
    """Local stand-ins for the cluster, Slack and Prometheus, and a SQLite file, in a temporary directory.

    Each stand-in starts in its own ``_start_…`` method and adds the settings that point the
    bot at it to ``self.settings``; a new stand-in is one more method and one more call.
    """

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="aia-sandbox-")
        self.settings: dict[str, str] = {
            "SLACK_SIGNING_SECRET": "sandbox-signing-secret",
            "DATABASE_URL": f"sqlite:///{self.dir.name}/aia-bot.db",
            "AIA_ALERT_CHANNEL": SANDBOX_CHANNEL,
            # A throwaway database gets a throwaway key: the audit chain is keyed here as in production.
            "AIA_AUDIT_KEY": secrets.token_hex(32),
        }
        self._stops: list[Callable[[], None]] = []
        try:
            self._start_kube()
            self._start_slack()
            # The registry is a child process: fork it before any gRPC server starts its threads
            # (a fork inside a running gRPC process can take the child down).
            self._start_registry()
            self._start_prometheus()
            self._start_secret_manager()
            self._start_cloudsql()
        except BaseException:
            self.close()
            raise

    def _start_kube(self) -> None:
        from sandbox.aia_seed import seed_aia_system
        from sandbox.kube_server import FakeKubeAPIServer

        self.kube = FakeKubeAPIServer().start()
        self._stops.append(self.kube.stop)
        seed_aia_system(self.kube)
        self.settings["KUBECONFIG"] = self.kube.write_kubeconfig(os.path.join(self.dir.name, "kubeconfig"))

    def _start_slack(self) -> None:
        from sandbox.slack_server import FakeSlackServer

        self.slack = FakeSlackServer().start()
        self._stops.append(self.slack.stop)
        self.slack.add_channel(SANDBOX_CHANNEL, "aia-production-alerts", [u.user_id for u in SANDBOX_USERS])
        for user in SANDBOX_USERS:
            self.slack.add_user(user.user_id, user.name, user.email)
        self.settings["SLACK_BOT_TOKEN"] = self.slack.bot_token
        self.settings["SLACK_API_URL"] = self.slack.api_url

    def _start_prometheus(self) -> None:
        if os.environ.get("PROMETHEUS_URL"):  # a real one, to try the bot's queries against it
            self.settings["PROMETHEUS_URL"] = os.environ["PROMETHEUS_URL"]
            return
        from sandbox.prometheus_server import FakePrometheusServer, SandboxPrometheus

        pods = [p for p in self.kube.list("Pod", SANDBOX_NAMESPACE)
                if p["metadata"]["name"].startswith("aia-api-") and p["status"].get("phase") == "Running"]
        crashing = [p["metadata"]["name"] for p in pods
                    if any(c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or [])]
        prometheus = FakePrometheusServer(
            SandboxPrometheus(SANDBOX_NAMESPACE, [p["metadata"]["name"] for p in pods], crashing)
        ).start()
        self._stops.append(prometheus.stop)
        self.settings["PROMETHEUS_URL"] = prometheus.url

    def _start_secret_manager(self) -> None:
        """Secret Manager and its ExternalSecrets operator, for `/aia secrets versions|sync|rotate`."""
        from sandbox.external_secrets import ExternalSecretsController
        from sandbox.secretmanager_server import FakeSecretManager, seed_aia_secrets

        self.secret_manager = FakeSecretManager().start()
        self._stops.append(self.secret_manager.stop)
        seed_aia_secrets(self.secret_manager)
        self.external_secrets = ExternalSecretsController(self.kube, self.secret_manager).start()
        self._stops.append(self.external_secrets.stop)
        self.settings["SECRETMANAGER_EMULATOR_HOST"] = self.secret_manager.address
        self.settings["AIA_ROTATABLE_SECRETS"] = "aia-api-key"
        # The sandbox Cloud SQL's app user: `secrets rotate aia-database-url` changes both.
        self.settings["AIA_DATABASE_URL_TEMPLATES"] = "aia-database-url=postgresql://aia_app:{password}@10.20.0.3:5432/aia"
        self.settings["AIA_SECRET_SYNC_TIMEOUT_SECONDS"] = "30"  # noqa: S105 - a timeout

    def _start_registry(self) -> None:
        """An OCI registry (Debian's docker-registry) with the app's tags, when it is installed."""
        from sandbox import registry

        self.registry: registry.RegistryProcess | None = None
        self.notice = ""
        if registry.available():
            self.registry = registry.RegistryProcess().start()
            self._stops.append(self.registry.stop)
            registry.seed_aia_images(self.registry)
            self.settings["AIA_REGISTRY_URL"] = self.registry.url
        else:
            # A closed local port: the sandbox never reaches the real gcr.io.
            self.settings["AIA_REGISTRY_URL"] = "http://127.0.0.1:9"
            self.notice = ("Images are unavailable in this sandbox: Debian's docker-registry is not installed "
                           "(apt-get install docker-registry), so /aia images, set-image and bluegreen deploy "
                           "cannot check tags.")

    def _start_cloudsql(self) -> None:
        from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql

        # Cloud SQL operations take a few seconds here, so their progress can be watched.
        self.cloudsql = FakeCloudSqlServer(operation_seconds=4).start()
        self._stops.append(self.cloudsql.stop)
        seed_cloudsql(self.cloudsql)
        self.settings["CLOUDSQL_EMULATOR_HOST"] = self.cloudsql.host
        self.settings["CLOUDSQL_POLL_SECONDS"] = "1"

    def env(self) -> dict[str, str]:
        return dict(self.settings)

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
        for stop in reversed(self._stops):
            stop()
        self.dir.cleanup()


def start_sandbox_core(box: Sandbox) -> tuple[Core, EscalationScheduler]:
    """The bot's core on the sandbox's stand-ins, with the escalation timers running."""
    settings = load_settings(box.env())
    core = build_core(settings, BotConfigFile(roles=box.roles(), escalation=box.escalation()))
    assert core.escalation is not None
    timers = EscalationScheduler(core.escalation, settings.aia_escalation_poll_seconds, 2)
    timers.start()
    return core, timers


class Follow:
    """A rollout followed in the background: one progress line, like `kubectl rollout status`."""

    def __init__(self, console: Console, steps: Callable[[], Iterator[Result]]) -> None:
        self.console = console
        self.steps = steps
        self.started = time.monotonic()
        self.cancelled = threading.Event()
        self.what = "change"
        self.progress = "starting…"
        self.thread = threading.Thread(target=self._run, name="console-follow", daemon=True)

    def start(self) -> Follow:
        self.thread.start()
        return self

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f}s"

    def _run(self) -> None:
        last: Result | None = None
        try:
            for step in self.steps():
                if self.cancelled.is_set():
                    return
                last = step
                self.what = step.title[0].lower() + step.title[1:] if step.title else self.what
                self.progress = _progress(step)
                self.console.progress_changed()
        except Exception as exc:  # noqa: BLE001 - a failed look ends the follow with one line, not a traceback
            if not self.cancelled.is_set():
                self.console.follow_done(self, f"[!] {self.what}: could not read progress ({type(exc).__name__})")
            return
        if self.cancelled.is_set() or last is None:
            return
        mark = STATUS_MARK.get(last.status.value, "")
        # The last look in full (what the Slack thread ends with: ids, what was done, what to check).
        final, _ = render_text(last, markup=self.console.markup)
        self.console.follow_done(self, f"{mark} {self.what}: {self.progress} · {self.elapsed()}", final)


def _progress(step: Result) -> str:
    """``3/3 ready, 3/3 updated`` from a rollout look; the look's own words otherwise."""
    fields = dict(next((p.pairs for p in step.parts if isinstance(p, Fields)), []))
    text = next((p.text for p in step.parts if isinstance(p, Text)), step.summary)
    words = text.replace("*", "").replace("`", "").rstrip("…").strip()
    if {"Desired", "Updated", "Available"} <= fields.keys():
        desired = fields["Desired"]
        counts = f"{fields['Available']}/{desired} ready, {fields['Updated']}/{desired} updated"
        if step.status is Status.OK:
            return f"{counts}, rolled out"
        return f"{counts} ({words})" if step.status is Status.CRITICAL else counts
    return words


class Console:
    def __init__(self, core: Core, files_dir: Path, out: Callable[[str], None] = print,
                 slack: FakeSlackServer | None = None, interactive: bool = False,
                 terminal: IO[str] | None = None) -> None:
        self.core = core
        self.files_dir = files_dir
        self._print = out
        self.slack = slack
        self.interactive = interactive
        self.terminal = terminal or sys.stdout
        self._slack_seen: dict[tuple[str, str], str] = {}
        self.user = SANDBOX_USERS[0]
        self.buttons: list[Action] = []
        self._cards = 0
        self.markup = terminal_markup({**{u.user_id: u.name for u in SANDBOX_USERS},
                                       SANDBOX_CHANNEL: "aia-production-alerts"},
                                      ansi=interactive and self.terminal.isatty())
        self.follows: list[Follow] = []
        self._lock = threading.RLock()
        # The progress line sits right above the prompt while nothing else has printed since.
        self._at_prompt = False
        self._progress_shown = False
        # Per command thread: set when Ctrl-C abandons the command running on it.
        self._command = threading.local()
        self._pending: list[str] = []

    @property
    def prompt(self) -> str:
        return f"{self.user.name} ({self.user.role})> "

    # -- output ------------------------------------------------------------------------------
    def out(self, text: str) -> None:
        abandoned = getattr(self._command, "abandoned", None)
        if abandoned is not None and abandoned.is_set():
            return  # a command the user cancelled with Ctrl-C: its answer is not wanted
        with self._lock:
            self._progress_shown = False
            self._print(text)

    def _progress_text(self) -> str:
        return "  ".join(f"⏳ {f.what}: {f.progress} · {f.elapsed()}" for f in self.follows)

    def _write(self, text: str) -> None:
        self.terminal.write(text)
        self.terminal.flush()

    def _line_buffer(self) -> str:
        try:
            import readline

            return readline.get_line_buffer()
        except ImportError:  # pragma: no cover - readline is missing on some platforms
            return ""

    def progress_changed(self) -> None:
        """Redraw the progress line in place, above the prompt, keeping what the user typed."""
        if not self.interactive:
            return
        with self._lock:
            if not self._at_prompt or not self.follows:
                return
            if self._progress_shown:  # save cursor, up one line, rewrite it, restore
                self._write(f"\0337\033[1A\r\033[K{self._progress_text()}\0338")
            else:
                self._write(f"\r\033[K{self._progress_text()}\n{self.prompt}{self._line_buffer()}")
                self._progress_shown = True

    def follow_done(self, follow: Follow, line: str, final: str = "") -> None:
        with self._lock:
            if follow in self.follows:
                self.follows.remove(follow)
            if not self.interactive or not self._at_prompt:
                self._pending.extend([line, final] if final else [line])
                return
            if self._progress_shown:
                self._write(f"\0337\033[1A\r\033[K{line}\0338")
                self._progress_shown = False
                if final:
                    self._pending.append(final)  # below the prompt would tear it: at the next prompt
                if self.follows:
                    self.progress_changed()
            else:
                body = f"{line}\n{final}" if final else line
                self._write(f"\r\033[K{body}\n{self.prompt}{self._line_buffer()}")

    def before_prompt(self) -> None:
        """Called when the prompt is about to show: finished follows, then the progress line."""
        with self._lock:
            for line in self._pending:
                self._print(line)
            self._pending.clear()
            self._progress_shown = False
            if self.follows:
                self._print(self._progress_text())
                self._progress_shown = True
            self._at_prompt = True

    def after_prompt(self) -> None:
        with self._lock:
            self._at_prompt = False
            self._progress_shown = False

    def cancel_follows(self) -> bool:
        with self._lock:
            follows, self.follows = self.follows, []
        for follow in follows:
            follow.cancelled.set()
            self.out(f"stopped following {follow.what} after {follow.elapsed()}; the change goes on in the "
                     f"cluster (/aia {follow.what.replace('of ', 'status ', 1)} looks again)")
        return bool(follows)

    def flush_follows(self) -> None:
        """Piped: print the follows that finished; at the end, say where the others stand."""
        with self._lock:
            for line in self._pending:
                self._print(line)
            self._pending.clear()

    def stop_follows_at_exit(self) -> None:
        # A piped script that ends right after a change still sees how it ended (bounded: a
        # rollout that never finishes must not hold the exit for its whole timeout).
        deadline = time.monotonic() + FOLLOW_WAIT_AT_EXIT_SECONDS
        for follow in list(self.follows):
            follow.thread.join(max(0.0, deadline - time.monotonic()))
        self.flush_follows()
        with self._lock:
            follows, self.follows = self.follows, []
        for follow in follows:
            follow.cancelled.set()
            self.out(f"[i] {follow.what}: {follow.progress} · {follow.elapsed()} (still going when the "
                     "console ended)")

    # -- commands ----------------------------------------------------------------------------
    def run_line(self, line: str) -> bool:
        """Run one line in a worker thread; Ctrl-C (KeyboardInterrupt here) abandons only it."""
        result: list[bool] = [True]
        abandoned = threading.Event()

        def work() -> None:
            self._command.abandoned = abandoned
            result[0] = self.handle_line(line)

        worker = threading.Thread(target=work, name="console-command", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
        except KeyboardInterrupt:
            abandoned.set()
            with self._lock:
                self._print("cancelled; its answer will not be shown (a change it already made stays made)")
            return True
        if not self.interactive:
            self.flush_follows()
        return result[0]

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

    def show_slack(self, settle: float = 0.0, say_if_nothing: bool = False) -> None:
        """Print what the bot posted or edited in the sandbox Slack since the last look.

        ``settle``: pages go out on the bot's own threads right after a command answers;
        wait that long for them so they print under the command that caused them.
        """
        if self.slack is None:
            return
        if settle:
            time.sleep(settle)
        shown = 0
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
            first, *rest = self.markup(message.text).splitlines() or [""]
            self.out(f"  slack {where}{' (edited)' if edited else ''}: {first}")
            for extra in rest[:6]:
                self.out(f"    {extra}")
            shown += 1
        if not shown and say_if_nothing:
            self.out("nothing new in the sandbox Slack since the last look")

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
            self.show_slack(say_if_nothing=True)
        elif verb == "stuck" and len(words) == 2 and words[1] in ("on", "off") and self.slack is not None:
            self.sandbox_kube_stuck(words[1] == "on")
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

    # Set by run_console: the sandbox cluster's switch for pods that never become Ready.
    stuck_switch: Callable[[bool], None] | None = None

    def sandbox_kube_stuck(self, on: bool) -> None:
        if self.stuck_switch is None:
            self.out("no sandbox cluster here")
            return
        self.stuck_switch(on)
        self.out("new pods in the sandbox now never become Ready: rollouts hang (:stuck off undoes it)" if on
                 else "new pods in the sandbox become Ready again")

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
            self._show_result(outcome.result)
            self.buttons = list(outcome.result.actions)
        else:
            mark = {OutcomeKind.REFUSED: "refused", OutcomeKind.FAILED: "failed"}.get(outcome.kind, "error")
            self.out(f"{mark}: {self.markup(outcome.message)}")
            if outcome.usage:
                self.out(self.markup(outcome.usage))

    def _show_result(self, result: Result) -> None:
        rendered, files = render_text(result, markup=self.markup)
        self.out(rendered)
        for name, content in files:
            path = self.files_dir / name
            path.write_bytes(content)
            self.out(f"  saved {path}")
        if result.followup is not None:
            follow = Follow(self, result.followup)
            with self._lock:
                self.follows.append(follow)
            follow.start()
            if self.interactive:
                self.out("  following it in the background; the prompt is yours (Ctrl-C stops following)")


    def _show_card(self, request_id: str, ts: str) -> None:
        assert self.core.approvals is not None
        view = self.core.approvals.get(request_id)
        if view is None:
            return
        self.out(f"[approval {view.id}] {view.status.upper()}: {self.markup(view.summary)}")
        self.out(f"  requested by {view.requester_id}; approvals {len(view.approvals)}/{view.required_approvals}")
        if view.status == ApprovalStatus.PENDING:
            self.out("  preview:\n    " + view.preview.replace("\n", "\n    "))
            self.buttons = [Action(label, f":decide {label.lower()} {view.id} {ts}")
                            for label in ("Approve", "Deny", "Cancel")]
            self.out("Buttons: [1] Approve  [2] Deny  [3] Cancel   (:user bob, then :click 1)")
        elif view.result:
            self.out(f"  result: {self.markup(view.result)}")

    def _decide(self, decision: str, request_id: str, ts: str) -> None:
        assert self.core.approvals is not None
        caller = Caller(user_id=self.user.user_id, team_id=SANDBOX_TEAM, channel_id=SANDBOX_CHANNEL)
        try:
            outcome = self.core.approvals.decide(request_id, decision, caller, ts)
        except ApprovalStoreUnavailable:
            self.out("The bot's database is unreachable; nothing was decided and nothing was run.")
            return
        self.out(self.markup(outcome.message))
        if outcome.executed is not None:
            self._show_result(outcome.executed)
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
        core, timers = start_sandbox_core(box)
        interactive = stdin.isatty()
        # Graphs outlive the sandbox: they are what the newcomer wants to open.
        console = Console(core, Path(tempfile.mkdtemp(prefix="aia-sandbox-files-")), out, box.slack,
                          interactive=interactive)

        def stuck(on: bool) -> None:
            box.kube.new_pods_ready = not on

        console.stuck_switch = stuck
        if interactive:
            import readline  # noqa: F401 - line editing and history for input()

            out("AIA runbook bot — sandbox. Nothing here touches a real cluster or Slack.")
        if box.notice:
            out(box.notice)
            out(CONSOLE_HELP)
        while True:
            if interactive:
                console.before_prompt()
                try:
                    line = input(console.prompt)
                except EOFError:
                    break
                except KeyboardInterrupt:
                    console.after_prompt()
                    out("")
                    if not console.cancel_follows():
                        out("nothing is running; :quit or Ctrl-D leaves")
                    continue
                console.after_prompt()
            else:
                line = stdin.readline()
                if not line:
                    break
            if not console.run_line(line):
                break
        console.stop_follows_at_exit()
        return 0
    finally:
        if timers is not None:
            timers.stop()
        box.close()
