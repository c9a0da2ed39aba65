"""Image tags end to end: signed HTTP into `aia-bot serve`, a real OCI registry (Debian's
docker-registry) the test pushes to, the sandbox cluster and Slack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.approvals import APPROVER, OPS
from tests.harness.bot_process import free_port
from tests.harness.google_cloud import CloudStack
from tests.harness.registry import REPOSITORY, REPOSITORY_PATH

VIEWER = "U0VIEW1"
NS = "aia-production"


@pytest.fixture
def cloud(cloud_shared: CloudStack) -> CloudStack:
    cloud_shared.reset()
    return cloud_shared


def _image(cloud: CloudStack, name: str) -> str:
    return str(cloud.stack.kube.get("Deployment", name, NS)["spec"]["template"]["spec"]["containers"][0]["image"])


def _no_card(cloud: CloudStack) -> bool:
    return not [c for c in cloud.stack.slack.calls_to("chat.postMessage") if "Approval needed" in json.dumps(c.args)]


def test_images_lists_the_newest_tags_with_digests(cloud: CloudStack) -> None:
    cloud.stack.bot.slash("images --limit 2", VIEWER, cloud.stack.slack.new_response_url())
    posted = cloud.stack.slack.wait_for(lambda: [m for m in cloud.stack.slack.messages()
                                                 if f"Image tags of {REPOSITORY}" in m.text], timeout=15)
    blocks = json.dumps(posted[0].blocks)
    assert blocks.index("v1.6.0") < blocks.index("v1.5.1") < blocks.index("Running now")
    assert cloud.registry.digest("v1.6.0")[:19] in blocks


@pytest.mark.parametrize("command", ["bluegreen deploy nginx:latest", "bluegreen deploy evil.example/x:1",
                                     "set-image aia-api-blue api=evil.example/aia-system:v1.5.1"])
def test_images_from_elsewhere_are_refused_with_the_allowed_registries(cloud: CloudStack, command: str) -> None:
    answer = cloud.stack.slash_answer(OPS, command)
    assert "not from an allowed registry" in answer and "`gcr.io/a-467519`" in answer, answer
    assert not cloud.stack.writes() and _no_card(cloud)
    assert any(o == "user_error" and "not from an allowed registry" in d for _, _, o, d in cloud.stack.audit_rows())


def test_missing_tag_is_refused_before_anything_runs(cloud: CloudStack) -> None:
    answer = cloud.stack.slash_answer(OPS, f"bluegreen deploy {REPOSITORY}:v9.9.9")
    assert "`v9.9.9` does not exist" in answer and "`v1.6.0`" in answer
    answer = cloud.stack.slash_answer(OPS, f"set-image aia-api-blue api={REPOSITORY}:v9.9.9")
    assert "does not exist" in answer
    assert not cloud.stack.writes() and _no_card(cloud)


def test_set_image_runs_the_approved_digest(cloud: CloudStack) -> None:
    card = cloud.stack.request_change(OPS, f"set-image aia-api-blue api={REPOSITORY}:v1.5.1")
    cloud.stack.click(APPROVER, "approve", card)
    cloud.stack.wait_status(card.request_id, "executed")
    assert _image(cloud, "aia-api-blue") == f"{REPOSITORY}:v1.5.1@{cloud.registry.digest('v1.5.1')}"


def test_tag_moved_after_the_request_makes_it_stale(cloud: CloudStack) -> None:
    cloud.registry.process.push_image(REPOSITORY_PATH, "v1.8.0", marker="reviewed build")
    card = cloud.stack.request_change(OPS, f"set-image aia-api-blue api={REPOSITORY}:v1.8.0")
    cloud.registry.process.push_image(REPOSITORY_PATH, "v1.8.0", marker=f"pushed again {card.request_id}")
    cloud.stack.click(APPROVER, "approve", card)
    cloud.stack.wait_status(card.request_id, "stale")
    assert "v1.8.0" not in _image(cloud, "aia-api-blue")
    assert not cloud.stack.writes("/deployments/aia-api-blue")


def test_switch_card_shows_the_image_going_live(cloud: CloudStack) -> None:
    cloud.stack.bot.slash(f"bluegreen deploy {REPOSITORY}:v1.6.0", OPS, cloud.stack.slack.new_response_url())
    cloud.stack.slack.wait_for(lambda: [m for m in cloud.stack.slack.messages() if "Deploying to green" in m.text])
    card = cloud.stack.request_change(OPS, "bluegreen switch")
    blocks = json.dumps(cloud.stack.slack.calls_to("chat.postMessage")[-1].args.get("blocks"))
    assert f"{REPOSITORY}:v1.6.0@{cloud.registry.digest('v1.6.0')}" in blocks
    assert "goes live (green)" in blocks and "leaves traffic (blue)" in blocks
    assert cloud.stack.status(card.request_id) == "pending"


def test_registry_unreachable_refuses_and_runs_nothing(cloud: CloudStack, tmp_path: Path) -> None:
    with cloud.stack.extra_bot(tmp_path, AIA_REGISTRY_URL=f"http://127.0.0.1:{free_port()}",
                               AIA_REGISTRY_TIMEOUT_SECONDS="2") as bot:
        url = cloud.stack.slack.new_response_url()
        bot.slash(f"bluegreen deploy {REPOSITORY}:v1.6.0", OPS, url)
        answer = cloud.stack.response_text(url)
        assert "did not answer" in answer and "nothing was changed" in answer, answer
        assert not cloud.stack.writes()
