from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import UserError
from bot.parsing import parse_command
from bot.procedures import build_registry

REGISTRY = build_registry()


def test_multi_word_procedure_and_positional() -> None:
    inv = parse_command("describe pod aia-api-blue-1", REGISTRY)
    assert inv.name == "describe pod"
    assert inv.args["name"] == "aia-api-blue-1"


def test_options_flags_and_quotes() -> None:
    inv = parse_command('logs --app --since 2h --grep "ERROR|WARN unauthorized"', REGISTRY)
    assert inv.args == {
        "pod": None, "app": True, "container": None, "previous": None,
        "since": 7200, "grep": "ERROR|WARN unauthorized", "tail": None,
    }


def test_smart_quotes_from_phones_work() -> None:
    inv = parse_command("logs p-1 --grep “memory|oom”", REGISTRY)
    assert inv.args["grep"] == "memory|oom"


def test_promql_is_kept_verbatim_and_range_pulled_out() -> None:
    inv = parse_command('query rate(http_requests_total{status=~"5.."}[5m]) > 0.1 --range 6h', REGISTRY)
    assert inv.args["promql"] == 'rate(http_requests_total{status=~"5.."}[5m]) > 0.1'
    assert inv.args["range"] == 6 * 3600


def test_empty_text_is_help() -> None:
    assert parse_command("", REGISTRY).name == "help"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("frobnicate", "Unknown procedure `frobnicate`"),
        ("pod", "Did you mean `/aia pods`"),
        ("describe pod", "NAME is missing"),
        ("describe pod Bad_Name", "NAME `Bad_Name` is not valid"),
        ("events --since 5 minutes", "use a number and a unit"),
        ("events --since 30d", "at most 7d"),
        ("events --bogus", "Unknown option `--bogus`"),
        ("top pods --sort disk", "choose cpu or memory"),
        ("logs p-1 --grep 'unclosed", "A quote is not closed"),
        ("audit 0", "between 1 and 100"),
        ("audit many", "whole number"),
        ("pods a=b extra", "Unexpected `extra`"),
        ("pods ===", "LABEL-SELECTOR"),
        ("query", "PROMQL is missing"),
        ("events --since", "needs a value"),
        ("events --warnings --warnings", "given twice"),
    ],
)
def test_bad_input_says_what_is_wrong_and_shows_syntax(text: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        parse_command(text, REGISTRY)
    assert fragment in info.value.message
    assert info.value.usage


def test_very_long_command_is_refused() -> None:
    with pytest.raises(UserError, match="limit is 2000"):
        parse_command("pods " + "a" * 3000, REGISTRY)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_random_text_parses_or_raises_user_error_only(text: str) -> None:
    try:
        inv = parse_command(text, REGISTRY)
    except UserError as exc:
        assert exc.message
        return
    assert inv.procedure in REGISTRY.all()


WORDS = st.sampled_from(
    ["pods", "logs", "--app", "--grep", "--since", "1h", "describe", "pod", "top", "query", "--range",
     "'", '"', "x", "--", "=", "help", "events", "--warnings", "audit", "5", "-1"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, max_size=8))
def test_command_like_text_parses_or_raises_user_error_only(words: list[str]) -> None:
    try:
        parse_command(" ".join(words), REGISTRY)
    except UserError as exc:
        assert exc.message
