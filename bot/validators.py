"""Converters for procedure parameters. Each raises ValueError with a short reason."""

from __future__ import annotations

import re
from collections.abc import Callable

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# DNS-1123 subdomain: what Kubernetes accepts as a pod or deployment name.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_KEY = r"([a-z0-9A-Z]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(
    rf"^(!?{_LABEL_KEY}|{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}"
    rf"|{_LABEL_KEY}\s+(in|notin)\s+\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\))$"
)


def duration(max_seconds: int) -> Callable[[str], int]:
    """``90s``, ``15m``, ``1h``, ``2d`` → seconds, bounded."""

    def convert(text: str) -> int:
        match = _DURATION.fullmatch(text.strip().lower())
        if not match:
            raise ValueError("use a number and a unit, like 30m, 1h or 2d")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds <= 0:
            raise ValueError("must be more than zero")
        if seconds > max_seconds:
            raise ValueError(f"at most {format_duration(max_seconds)}")
        return seconds

    return convert


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration_text(seconds: float) -> str:
    """How long something has lasted, rounded for reading: ``45s``, ``7m05s``, ``3h20m``, ``2d4h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds < 600 else f"{seconds // 60}m"
    hours, minutes = divmod(seconds // 60, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24}h"


def k8s_name(text: str) -> str:
    if not _K8S_NAME.fullmatch(text):
        raise ValueError("a Kubernetes name is lowercase letters, digits, '-' and '.'")
    return text


def label_selector(text: str) -> str:
    # Commas inside "in (a,b)" are not requirement separators.
    parts = re.split(r",(?![^()]*\))", text)
    if not text or text != text.strip() or any(not _REQUIREMENT.fullmatch(part.strip()) for part in parts):
        raise ValueError("use key=value, key!=value, key in (a,b) or key, joined by commas")
    return text


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return convert


def choice(*options: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.lower()
        if value not in options:
            raise ValueError("choose " + " or ".join(options))
        return value

    return convert


def promql(text: str) -> str:
    if len(text) > 1000:
        raise ValueError("at most 1000 characters")
    return text


def container_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise ValueError("a container name is lowercase letters, digits and '-'")
    return text


# A container image reference with an explicit tag or digest: "latest" by omission
# is how the wrong build reaches production.
_IMAGE = re.compile(
    r"^(?P<repo>(?:[a-z0-9]+(?:[.-][a-z0-9]+)*(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def image_reference(text: str) -> str:
    match = _IMAGE.fullmatch(text)
    if not match or len(text) > 255:
        raise ValueError("an image is like gcr.io/a-467519/aia-system:v1.5.0")
    if not match.group("tag") and not match.group("digest"):
        raise ValueError("give a tag or digest, e.g. :v1.5.0 (no implicit :latest)")
    return text


def replica_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a whole number, e.g. 3") from None
    if value < 0:
        raise ValueError("must be 0 or more")
    if value > 50:
        raise ValueError("at most 50")
    return value


_CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,252}$")


def config_pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not eq or not _CONFIG_KEY.fullmatch(key):
            raise ValueError(f"`{item[:40]}` is not KEY=VALUE (KEY is letters, digits, _ . -)")
        if key in pairs:
            raise ValueError(f"{key} is given twice")
        pairs[key] = value
    if not pairs:
        raise ValueError("give at least one KEY=VALUE")
    return pairs


def reason(text: str) -> str:
    text = text.strip()
    if len(text) < 10:
        raise ValueError("say why in at least 10 characters")
    return text[:500]
