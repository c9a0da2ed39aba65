"""`/aia images`, and the image checks of set-image and bluegreen deploy, against a real registry."""

from __future__ import annotations

import pytest

from bot.core import build_core
from bot.results import Table
from bot.service import OutcomeKind
from bot.settings import load_settings
from tests.bot.procedures.test_changes import deployment
from tests.harness.bot_process import free_port
from tests.harness.calls import run_as
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID

REPO = "gcr.io/a-467519/aia-system"


def writes(kube) -> list:  # type: ignore[no-untyped-def,type-arg]
    return [r for r in kube.requests if r.method in ("PATCH", "PUT", "POST", "DELETE") and r.query.get("dryRun") != "All"]


def test_images_lists_tags_newest_first_with_digest_and_time(core, image_registry) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "images --limit 3")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    table = next(p for p in outcome.result.parts if isinstance(p, Table))
    assert [row[0] for row in table.rows] == ["v1.6.0", "v1.5.1", "v1.5.0"]
    assert table.rows[0][1] == image_registry.digest("v1.6.0")[:19]
    assert table.rows[0][3] == "2026-11-25 09:30 UTC"
    assert "aia-api-blue" in str(outcome.result.parts[-1])  # what runs now, to read the tags against


@pytest.mark.parametrize("image", ["nginx:latest", "evil.example/x:1", "gcr.io/a-467519-evil/aia-system:v1.5.1",
                                   "docker.io/a-467519/aia-system:v1.5.1"])
def test_images_from_other_registries_are_refused(core, kube, image: str) -> None:  # type: ignore[no-untyped-def]
    kube.requests.clear()
    before = deployment(kube, "aia-api-green")["spec"]["template"]
    for command in (f"bluegreen deploy {image}", f"set-image aia-api-blue api={image}"):
        outcome = run_as(core, "operator", command)
        assert outcome.kind is OutcomeKind.USER_ERROR, outcome.message
        assert "not from an allowed registry" in outcome.message and "gcr.io/a-467519" in outcome.message
    assert not writes(kube)
    assert deployment(kube, "aia-api-green")["spec"]["template"] == before


def test_missing_tag_is_refused_before_anything_runs(core, kube) -> None:  # type: ignore[no-untyped-def]
    kube.requests.clear()
    outcome = run_as(core, "operator", f"bluegreen deploy {REPO}:v9.9.9")
    assert outcome.kind is OutcomeKind.USER_ERROR
    assert "`v9.9.9` does not exist" in outcome.message and "`v1.6.0`" in outcome.message
    assert not kube.requests  # not even a dry run
    outcome = run_as(core, "operator", f"set-image aia-api-blue api={REPO}:v9.9.9")
    assert outcome.kind is OutcomeKind.USER_ERROR and "does not exist" in outcome.message
    assert not writes(kube)


def test_a_digest_reference_is_checked_and_deployed_as_given(core, kube, image_registry) -> None:  # type: ignore[no-untyped-def]
    digest = image_registry.digest("v1.5.0")
    outcome = run_as(core, "operator", f"bluegreen deploy {REPO}@{digest}")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    assert deployment(kube, "aia-api-green")["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPO}@{digest}"
    unknown = run_as(core, "operator", f"bluegreen deploy {REPO}@sha256:{'0' * 64}")
    assert unknown.kind is OutcomeKind.USER_ERROR and "has no image" in unknown.message


def test_tag_and_digest_that_disagree_are_refused(core, image_registry) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "operator", f"bluegreen deploy {REPO}:v1.5.1@{image_registry.digest('v1.5.0')}")
    assert outcome.kind is OutcomeKind.USER_ERROR and "the tag moved" in outcome.message


def test_tag_moved_between_request_and_approval_makes_the_request_stale(core, kube, image_registry) -> None:  # type: ignore[no-untyped-def]
    from bot.context import Caller

    image_registry.process.push_image("a-467519/aia-system", "v1.7.0-rc1", marker="first")
    outcome = run_as(core, "operator", f"set-image aia-api-blue api={REPO}:v1.7.0-rc1")
    assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED, outcome.message
    image_registry.process.push_image("a-467519/aia-system", "v1.7.0-rc1", marker="second build")
    core.approvals.attach_card(outcome.approval.id, CHANNEL_ID, "1700000000.000200")
    approver = Caller(SLACK_USERS["approver"].user_id, TEAM_ID, CHANNEL_ID)
    decision = core.approvals.decide(outcome.approval.id, "approve", approver, "1700000000.000200")
    assert decision.view.status == "stale", decision.view.result
    assert "image" in (decision.view.result or "")
    assert "v1.7.0-rc1" not in deployment(kube, "aia-api-blue")["spec"]["template"]["spec"]["containers"][0]["image"]


def test_switch_card_names_the_images_it_puts_live(core, kube, image_registry) -> None:  # type: ignore[no-untyped-def]
    run_as(core, "operator", f"bluegreen deploy {REPO}:v1.6.0")
    outcome = run_as(core, "operator", "bluegreen switch")
    assert outcome.kind is OutcomeKind.APPROVAL_REQUESTED
    pinned = f"{REPO}:v1.6.0@{image_registry.digest('v1.6.0')}"
    assert pinned in outcome.approval.summary
    assert f"# goes live (green): api={pinned}" in outcome.approval.preview
    assert "# leaves traffic (blue): api=gcr.io/a-467519/aia-system:v1.4.2" in outcome.approval.preview


def test_unreachable_registry_refuses_and_changes_nothing(bot_env, roles, kube) -> None:  # type: ignore[no-untyped-def]
    built = build_core(load_settings({**bot_env, "AIA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
                                      "AIA_REGISTRY_TIMEOUT_SECONDS": "2"}), roles)
    try:
        kube.requests.clear()
        outcome = run_as(built, "operator", f"bluegreen deploy {REPO}:v1.6.0")
        assert outcome.kind is OutcomeKind.FAILED and "did not answer" in outcome.message
        assert "nothing was changed" in outcome.message and not writes(kube)
        assert run_as(built, "viewer", "images").kind is OutcomeKind.FAILED
    finally:
        built.engine.dispose()


def test_viewer_may_list_images_but_not_deploy(core, kube) -> None:  # type: ignore[no-untyped-def]
    assert run_as(core, "viewer", "images").kind is OutcomeKind.OK
    outcome = run_as(core, "viewer", f"bluegreen deploy {REPO}:v1.6.0")
    assert outcome.kind is OutcomeKind.REFUSED and not writes(kube)


def test_bad_limit_is_a_usage_error(core) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "images --limit 0")
    assert outcome.kind is OutcomeKind.USER_ERROR and "between 1 and 100" in outcome.message
