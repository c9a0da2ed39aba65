"""Roles, refusals and the audit trail of every invocation."""

from __future__ import annotations

from bot.service import OutcomeKind
from tests.harness.calls import run_as


def test_user_with_no_role_is_refused_and_audited(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "nobody", "pods")
    assert outcome.kind is OutcomeKind.REFUSED
    assert "needs the viewer role; you have no role" in outcome.message
    entry = core.audit.recent(1)[0]
    assert (entry.actor, entry.action, entry.outcome) == ("U0NOBODY", "pods", "refused")


def test_user_with_no_role_may_read_help(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "nobody", "help")
    assert outcome.kind is OutcomeKind.OK
    assert [row[0] for row in outcome.result.parts[0].rows] == ["/aia help"]


def test_help_shows_what_the_role_may_run(core) -> None:  # type: ignore[no-untyped-def]
    rows = run_as(core, "viewer", "help").result.parts[0].rows
    names = {row[0] for row in rows}
    assert {"/aia pods", "/aia logs", "/aia query", "/aia status"} <= names


def test_help_for_one_procedure(core) -> None:  # type: ignore[no-untyped-def]
    text = run_as(core, "viewer", "help describe pod").result.parts[0].text
    assert "`/aia describe pod NAME`" in text and "Pods Not Starting" in text


def test_user_group_membership_grants_a_role(core, slack) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "oncall", "endpoints")
    assert outcome.kind is OutcomeKind.OK
    assert slack.calls_to("usergroups.users.list")


def test_every_outcome_is_audited_with_who_what_where(core) -> None:  # type: ignore[no-untyped-def]
    run_as(core, "viewer", "endpoints")
    run_as(core, "viewer", "nonsense here")
    run_as(core, "viewer", "describe pod missing-pod")
    entries = list(reversed(core.audit.recent(3)))
    assert [(e.action, e.outcome) for e in entries] == [
        ("endpoints", "ok"), ("(unparsed)", "user_error"), ("describe pod", "user_error")]
    assert all(e.channel_id == "C0ALERTS" and e.team_id == "T0AIA" and e.at for e in entries)
    assert core.audit.verify() == []


def test_audit_procedure_lists_recent_entries(core) -> None:  # type: ignore[no-untyped-def]
    run_as(core, "viewer", "endpoints")
    table = run_as(core, "viewer", "audit 5").result.parts[0]
    assert table.rows[0][2] == "endpoints"


def test_a_bug_in_a_procedure_becomes_an_apology_not_a_traceback(core, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    def broken(ctx, args):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals xoxb-1234567890")

    proc = core.registry.get("endpoints")
    monkeypatch.setitem(core.registry.procedures, "endpoints", replace(proc, run=broken))
    outcome = run_as(core, "viewer", "endpoints")
    assert outcome.kind is OutcomeKind.FAILED
    assert "error id" in outcome.message and "xoxb" not in outcome.message and "Traceback" not in outcome.message


def test_random_text_always_gets_an_outcome(core) -> None:  # type: ignore[no-untyped-def]
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.text(max_size=120))
    @example("")  # empty is help
    @example("no such command")
    def check(text: str) -> None:
        outcome = run_as(core, "viewer", text)
        assert outcome.text or outcome.message or outcome.result is not None
        if core.registry.match(text.split() or ["help"]) is None:
            # No procedure starts with these words: a usage mistake, said as one.
            assert outcome.kind is OutcomeKind.USER_ERROR, outcome
        else:
            # A procedure's words by chance: never a crash (FAILED), and a viewer can never
            # get a change made or requested from it.
            assert outcome.kind in (OutcomeKind.OK, OutcomeKind.USER_ERROR, OutcomeKind.REFUSED), outcome

    check()
