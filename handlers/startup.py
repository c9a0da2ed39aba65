"""Configuration mistakes found before anything is built or called.

Each of them would otherwise surface deep inside a library (the Kubernetes client's YAML
parser, slack_sdk's retry handler) as a traceback or a page of retries. Found here, it is
one line that names the setting and says what to put there; the CLI exits 2.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from bot.errors import ConfigurationError
from bot.settings import Settings, load_config_file


def check_kubeconfig(settings: Settings) -> None:
    """KUBECONFIG, when set, must name a readable YAML kubeconfig with a cluster in it."""
    if not settings.kubeconfig:
        return
    path = Path(settings.kubeconfig).expanduser()
    fix = "point it at a kubeconfig file (`gcloud container clusters get-credentials` writes one), or unset it in the cluster"
    if not path.is_file():
        raise ConfigurationError(f"KUBECONFIG: {path} does not exist; {fix}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"KUBECONFIG: cannot read {path} ({exc.strerror}); {fix}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(f"KUBECONFIG: {path} is not valid YAML{where}; {fix}") from None
    if not isinstance(data, dict) or not data.get("clusters"):
        raise ConfigurationError(f"KUBECONFIG: {path} lists no clusters; {fix}")


def preflight(settings: Settings) -> None:
    """Everything about the settings that can be known without calling a backend."""
    load_config_file(settings.aia_bot_config)
    check_kubeconfig(settings)


@contextmanager
def quiet_slack_client() -> Iterator[None]:
    """slack_sdk logs every retry and the final failure itself; we report it once, in one line."""
    logger = logging.getLogger("slack_sdk")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
