"""The `aia-bot` command."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigurationError

if TYPE_CHECKING:
    from bot.settings import Settings
    from handlers.slack_app import SlackFrontend

SERVE_REQUIRES = ("slack_bot_token", "slack_signing_secret")
SOCKET_REQUIRES = ("slack_bot_token", "slack_app_token")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # urllib3 and slack_sdk at DEBUG print request headers, which carry tokens.
    for noisy in ("urllib3", "slack_sdk", "slack_bolt", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    # Alembic announces each of its plugins at INFO on every start: noise, not news.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def settings_for(required: tuple[str, ...], command: str) -> Settings:
    """The settings, checked as far as they can be without calling anything.

    Done before the heavy imports (Slack, Kubernetes, SQLAlchemy), so a mistake is one line
    in a moment, not after seconds of loading.
    """
    from bot.settings import load_settings
    from handlers.startup import preflight

    settings = load_settings()
    _configure_logging(settings.aia_log_level)
    for name in required:
        if getattr(settings, name) is None:
            raise ConfigurationError(f"{name.upper()} is not set; `{command}` needs it")
    preflight(settings)
    return settings


def start_frontend(required: tuple[str, ...], command: str) -> SlackFrontend:
    """Settings, database, and Slack's word that the token is good: what every Slack mode needs first."""
    from handlers.startup import quiet_slack_client

    settings = settings_for(required, command)

    from slack_sdk.errors import SlackApiError

    from bot.core import build_core
    from handlers.render_alerts import BlockKitAlertRenderer
    from handlers.render_escalation import BlockKitEscalationRenderer
    from handlers.slack_app import SlackFrontend

    # Filled from auth.test below, before any listener or background service starts; the
    # approvals ask for the team id at each decision.
    identity: dict[str, Any] = {}
    core = build_core(settings, alert_renderer=BlockKitAlertRenderer(settings),
                      escalation_renderer=BlockKitEscalationRenderer(),
                      team_id=lambda: identity.get("team_id"))
    assert core.web is not None
    try:
        with quiet_slack_client():
            auth = core.web.auth_test()
    except SlackApiError as exc:
        raise ConfigurationError(
            f"SLACK_BOT_TOKEN was refused by Slack ({exc.response.get('error')})"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"SLACK_API_URL {settings.slack_api_url} does not answer ({exc})") from None
    identity.update(auth.data if isinstance(auth.data, dict) else {})
    return SlackFrontend(core, identity)


def _serve(args: argparse.Namespace) -> int:
    settings_for(SERVE_REQUIRES, "aia-bot serve")  # fail fast, before uvicorn's and Bolt's imports
    import uvicorn

    from bot.adapters.kubernetes import load_api_modules
    from handlers.http_app import build_http_app

    frontend = start_frontend(SERVE_REQUIRES, "aia-bot serve")
    core = frontend.core
    app = build_http_app(core, frontend)
    logging.getLogger("aia_bot").info("serving on %s:%s for team %s", args.host, args.port, frontend.team_id)
    # Worker threads parse large API answers while holding the GIL; a shorter
    # switch interval lets the event loop (which sends the acks) in sooner.
    sys.setswitchinterval(0.001)
    # Everything imported and built so far lives for the whole process: keep it out
    # of the collector's full passes, which otherwise stall the event loop for 100+ ms.
    # The Kubernetes client's API modules would otherwise arrive with the first alert.
    load_api_modules()
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _check(args: argparse.Namespace) -> int:
    from handlers.check import run_check

    return run_check(config_only=args.config_only)


def _console(args: argparse.Namespace) -> int:
    from handlers.console import run_console

    return run_console(sandbox=args.sandbox)


def _audit_verify(args: argparse.Namespace) -> int:
    from bot.core import build_core
    from bot.settings import load_settings

    core = build_core(load_settings())
    if not core.audit.keyed:
        print("audit log: AIA_AUDIT_KEY is not set: keyed entries cannot be checked, only their order")
    report = core.audit.verify_report()
    for note in report.notes:
        print(f"note: {note}")
    if report.problems:
        print("audit log: BROKEN")
        for problem in report.problems:
            print(f"  {problem}")
        return 1
    if not core.audit.keyed and report.keyed:
        print("audit log: NOT VERIFIED (no key)")
        return 2
    print(f"audit log: intact ({report.keyed} keyed, {report.unkeyed} unkeyed entries)")
    return 0


def _audit_rekey(args: argparse.Namespace) -> int:
    from bot.core import build_core
    from bot.settings import load_settings

    core = build_core(load_settings())
    try:
        changed = core.audit.rekey()
    except ValueError as exc:
        print(f"audit log: not re-keyed: {exc}")
        return 1
    print(f"audit log: {changed} entries re-chained with AIA_AUDIT_KEY")
    return 0


def _docs(args: argparse.Namespace) -> int:
    from bot.coverage import coverage_markdown
    from bot.reference_docs import configuration_markdown, procedures_markdown

    out = Path(args.out)
    pages = {
        "coverage.md": coverage_markdown(Path(args.runbook)),
        "procedures.md": procedures_markdown(),
        "configuration.md": configuration_markdown(),
    }
    for name, text in pages.items():
        (out / name).write_text(text, encoding="utf-8")
        print(f"wrote {out / name}")
    return 0


def _socket(args: argparse.Namespace) -> int:
    settings_for(SOCKET_REQUIRES, "aia-bot socket")  # fail fast, before Bolt's imports
    from handlers.socket_mode import run_socket_mode

    return run_socket_mode()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aia-runbook-bot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aia-bot",
        description="AIA runbook bot: the operations runbook as /aia Slack commands.",
        epilog="Settings come from environment variables (docs/configuration.md). "
        "A configuration mistake exits with code 2 and one line naming the setting.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="HTTP mode: /slack/events, /alertmanager, /healthz, /readyz, /metrics",
                           description="Serve Slack's Request URL and Alertmanager's webhook over HTTP.")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=3000, help="port to listen on (default: %(default)s)")
    serve.set_defaults(func=_serve)
    sub.add_parser("socket", help="Socket Mode: no public URL needed (SLACK_APP_TOKEN)",
                   description="Run the same app over Slack's Socket Mode; needs SLACK_BOT_TOKEN and "
                   "SLACK_APP_TOKEN (xapp-…).").set_defaults(func=_socket)
    check = sub.add_parser("check", help="validate the configuration and reach each backend",
                           description="Print what is configured and whether each backend answers. Exit 0: all "
                           "answer; 1: a backend fails; 2: a setting is wrong. Creates nothing.")
    check.add_argument("--config-only", action="store_true",
                       help="validate settings and AIA_BOT_CONFIG only; contact no backend")
    check.set_defaults(func=_check)
    console = sub.add_parser("console", help="type /aia commands in a terminal",
                             description="Type /aia commands in a terminal (or pipe them in).")
    console.add_argument("--sandbox", action="store_true",
                         help="run against a local sandbox cluster, Slack and Prometheus, nothing real")
    console.set_defaults(func=_console)
    audit = sub.add_parser("audit", help="audit log tools", description="Audit log tools.")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_sub.add_parser("verify", help="check the HMAC chain (needs AIA_AUDIT_KEY); exit 1 when an entry was "
                         "edited or deleted", description="Check the audit log's keyed hash chain."
                         ).set_defaults(func=_audit_verify)
    audit_sub.add_parser("rekey", help="key the unkeyed entries written before AIA_AUDIT_KEY existed",
                         description="Key the entries written before AIA_AUDIT_KEY existed, after checking "
                         "their chain.").set_defaults(func=_audit_rekey)
    docs = sub.add_parser("docs", help="regenerate docs/{coverage,procedures,configuration}.md from the code",
                          description="Regenerate the reference pages from the registry and the settings.")
    docs.add_argument("--runbook", default="docs/RUNBOOK.md",
                      help="the runbook the coverage page is checked against (default: %(default)s)")
    docs.add_argument("--out", default="docs", help="directory the pages are written to (default: %(default)s)")
    docs.set_defaults(func=_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"aia-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
