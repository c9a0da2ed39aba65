"""Turn the text after ``/aia`` into a procedure and typed arguments.

Every failure is a :class:`UserError` whose message says what was wrong and
shows the procedure's syntax, so nobody has to guess at 3 a.m.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from typing import Any

from bot.errors import UserError
from bot.registry import Param, Procedure, Registry

# Phones and macOS turn quotes into typographic ones; shlex only knows ASCII.
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
MAX_COMMAND_LENGTH = 2000


@dataclass(frozen=True)
class Invocation:
    procedure: Procedure
    args: dict[str, Any]
    text: str

    @property
    def name(self) -> str:
        return self.procedure.name


def _usage(proc: Procedure) -> str:
    return f"Usage: `{proc.syntax}`"


def parse_command(text: str, registry: Registry) -> Invocation:
    text = (text or "").translate(_SMART_QUOTES).strip()
    if len(text) > MAX_COMMAND_LENGTH:
        raise UserError(
            f"That command is {len(text)} characters long; the limit is {MAX_COMMAND_LENGTH}.",
            "Usage: `/aia help`",
        )
    if not text:
        text = "help"
    words = text.split()
    proc = registry.match(words)
    if proc is None:
        raise UserError(_unknown_message(words, registry), "Type `/aia help` for the list.")
    rest = text
    for _ in proc.words:
        rest = rest.lstrip()[len(rest.lstrip().split(maxsplit=1)[0]) :]
    rest = rest.strip()
    if any(p.kind == "rest" for p in proc.params):
        args = _parse_with_rest(proc, rest)
    else:
        try:
            tokens = shlex.split(rest)
        except ValueError:
            raise UserError("A quote is not closed.", _usage(proc)) from None
        args = _parse_tokens(proc, tokens)
    return Invocation(procedure=proc, args=args, text=text)


def _unknown_message(words: list[str], registry: Registry) -> str:
    attempt = " ".join(words[:2]).lower()
    names = [p.name for p in registry.all()]
    close = difflib.get_close_matches(attempt, names, n=2, cutoff=0.6) or difflib.get_close_matches(
        words[0].lower(), names, n=2, cutoff=0.6
    )
    shown = words[0][:40]
    hint = f" Did you mean {' or '.join(f'`/aia {c}`' for c in close)}?" if close else ""
    return f"Unknown procedure `{shown}`.{hint}"


def _convert(proc: Procedure, param: Param, raw: str) -> Any:
    try:
        return param.convert(raw)
    except ValueError as exc:
        label = param.metavar or param.name.upper()
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        raise UserError(f"{label} `{shown}` is not valid: {exc}", _usage(proc)) from None


def _options(proc: Procedure) -> dict[str, Param]:
    return {p.name: p for p in proc.params if p.kind in {"option", "flag"}}


def _parse_tokens(proc: Procedure, tokens: list[str]) -> dict[str, Any]:
    options = _options(proc)
    positionals = [p for p in proc.params if p.kind == "positional"]
    args: dict[str, Any] = {p.name: p.default for p in proc.params}
    seen: set[str] = set()
    index = 0
    pos_index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--") and len(token) > 2:
            name, eq, inline = token[2:].partition("=")
            param = options.get(name)
            if param is None:
                raise UserError(f"Unknown option `--{name[:30]}`.", _usage(proc))
            if name in seen:
                raise UserError(f"`--{name}` is given twice.", _usage(proc))
            seen.add(name)
            if param.kind == "flag":
                if eq:
                    raise UserError(f"`--{name}` takes no value.", _usage(proc))
                args[name] = True
            else:
                if eq:
                    value = inline
                elif index + 1 < len(tokens):
                    index += 1
                    value = tokens[index]
                else:
                    raise UserError(f"`--{name}` needs a value.", _usage(proc))
                args[name] = _convert(proc, param, value)
        else:
            if pos_index >= len(positionals):
                raise UserError(f"Unexpected `{token[:40]}`.", _usage(proc))
            param = positionals[pos_index]
            args[param.name] = _convert(proc, param, token)
            seen.add(param.name)
            pos_index += 1
        index += 1
    for param in proc.params:
        if param.required and param.name not in seen:
            label = param.metavar or param.name.upper()
            raise UserError(f"{label} is missing.", _usage(proc))
    return args


# ``--name value`` or ``--name=value`` or ``--flag`` anywhere in a free-text line.
_OPTION_IN_TEXT = re.compile(
    r"(?:^|\s)--([a-z][a-z-]*)(?:=(\S+)|\s+(?!--)(\"[^\"]*\"|'[^']*'|\S+))?(?=\s|$)"
)


def _parse_with_rest(proc: Procedure, rest: str) -> dict[str, Any]:
    """For free text (PromQL): pull out known options, keep the remainder verbatim."""
    options = _options(proc)
    args: dict[str, Any] = {p.name: p.default for p in proc.params}
    remainder = rest
    for match in list(_OPTION_IN_TEXT.finditer(rest)):
        name = match.group(1)
        param = options.get(name)
        if param is None:
            continue  # not ours: may be part of the expression
        if param.kind == "flag":
            args[name] = True
            # A flag swallows no value: put back what the regex took as one.
            value_text = match.group(2) or match.group(3)
            remainder = remainder.replace(match.group(0), " " + (value_text or ""), 1)
            continue
        value = match.group(2) or match.group(3)
        if value is None:
            raise UserError(f"`--{name}` needs a value.", _usage(proc))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        args[name] = _convert(proc, param, value)
        remainder = remainder.replace(match.group(0), " ", 1)
    remainder = remainder.strip()
    rest_param = next(p for p in proc.params if p.kind == "rest")
    if not remainder:
        if rest_param.required:
            raise UserError(f"{rest_param.metavar or rest_param.name.upper()} is missing.", _usage(proc))
    else:
        args[rest_param.name] = _convert(proc, rest_param, remainder)
    return args
