"""Converters for procedure parameters. Each raises ValueError with a short reason."""

from __future__ import annotations

import re
from collections.abc import Callable

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# DNS-1123 subdomain: what Kubernetes accepts as a pod or deployment name.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_KEY = r"([a-z0-9A-Z]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(
    rf"^(!?{_LABEL_KEY}|{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}"
    rf"|{_LABEL_KEY}\s+(in|notin)\s+\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\))$"
)


def parse_duration(value: object) -> float:
    """``30s``, ``5m``, ``1h``, ``1h30m``, ``1h 30m``, ``1.5h`` or a number of seconds → seconds.

    The one reader of durations (procedure parameters, the escalation policy's waits); it
    reads back what :func:`format_duration` writes. A leading ``-`` gives a negative number:
    callers decide what range they accept. Raises ValueError saying what is wrong.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use 30s, 5m, 1h or 1h30m)")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if not body or _DURATION_PART.sub("", body) != "":
        raise ValueError(f"{str(value)!r} is not a duration (use 30s, 5m, 1h or 1h30m)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(body))
    return -seconds if negative else seconds


def format_duration(seconds: float) -> str:
    """Seconds → the two largest units, for people: ``45s``, ``5m``, ``1h 30m``, ``2d 3h``.

    The one writer of durations: rounded to whole seconds, and past two units the rest is
    dropped (``1h 30m 15s`` shows as ``1h 30m``). Negative amounts count as 0.
    """
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])


def duration(max_seconds: int) -> Callable[[str], int]:
    """A parameter converter: a duration (:func:`parse_duration`) → whole seconds, 1 to ``max_seconds``."""

    def convert(text: str) -> int:
        try:
            seconds = round(parse_duration(text))
        except ValueError:
            raise ValueError("use a number and a unit, like 30m, 1h, 1h30m or 2d") from None
        if seconds <= 0:
            raise ValueError("must be more than zero")
        if seconds > max_seconds:
            raise ValueError(f"at most {format_duration(max_seconds)}")
        return seconds

    return convert


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
