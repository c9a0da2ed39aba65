"""The registry adapter against a real OCI registry (Debian's docker-registry)."""

from __future__ import annotations

import pytest

from bot.adapters.registry import ImageName, RegistryGateway, allowed_prefix
from bot.errors import BackendUnavailable, UserError
from tests.harness.bot_process import free_port
from tests.harness.registry import REPOSITORY

IMAGE = ImageName.parse(REPOSITORY + ":v1.5.1")


@pytest.mark.parametrize(("reference", "host", "path", "tag", "digest"), [
    ("gcr.io/a-467519/aia-system:v1.5.1", "gcr.io", "a-467519/aia-system", "v1.5.1", None),
    ("localhost:5000/aia:1@sha256:" + "a" * 64, "localhost:5000", "aia", "1", "sha256:" + "a" * 64),
    ("nginx:latest", "docker.io", "library/nginx", "latest", None),
    ("evil/x:1", "docker.io", "evil/x", "1", None),
    ("gcr.io/a-467519/aia-system@sha256:" + "b" * 64, "gcr.io", "a-467519/aia-system", None, "sha256:" + "b" * 64),
])
def test_reference_parsing(reference: str, host: str, path: str, tag: str | None, digest: str | None) -> None:
    assert ImageName.parse(reference) == ImageName(host, path, tag, digest)


@pytest.mark.parametrize(("reference", "allowed"), [
    ("gcr.io/a-467519/aia-system:v1", True),
    ("gcr.io/a-4675190/aia-system:v1", False),  # a longer project id is another project
    ("gcr.io/a-467519-evil/x:1", False),
    ("evil.example/gcr.io/a-467519/x:1", False),
    ("nginx:latest", False),
])
def test_allowed_prefix_matches_whole_path_components(reference: str, allowed: bool) -> None:
    image = ImageName.parse(reference)
    assert (allowed_prefix(image, ["gcr.io/a-467519"]) is not None) is allowed
    # A prefix may also be one whole repository.
    assert (allowed_prefix(image, ["gcr.io/a-467519/aia-system"]) is not None) is (image.path == "a-467519/aia-system")


def test_digest_of_a_tag_and_of_a_missing_tag(image_registry) -> None:  # type: ignore[no-untyped-def]
    gateway = RegistryGateway(image_registry.url, 5)
    assert gateway.digest(IMAGE, "v1.5.1") == image_registry.digest("v1.5.1")
    assert gateway.digest(IMAGE, "v9.9.9") is None
    assert gateway.digest(IMAGE, image_registry.digest("v1.4.1")) == image_registry.digest("v1.4.1")


def test_tags_are_paginated_and_listed_newest_first_with_times(image_registry) -> None:  # type: ignore[no-untyped-def]
    gateway = RegistryGateway(image_registry.url, 5, page_size=2)
    tags, _ = gateway.tags(IMAGE)
    assert {"v1.4.1", "v1.4.2", "v1.5.0", "v1.5.1", "v1.6.0"} <= set(tags)
    infos, total = gateway.list_images(IMAGE, 3)
    assert total == len(tags) and len(infos) == 3
    created = [i.created for i in infos]
    assert all(created) and created == sorted(created, reverse=True)  # type: ignore[type-var]
    assert infos[0].digest == gateway.digest(IMAGE, infos[0].tag)


def test_unknown_repository_is_a_user_error(image_registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="does not exist"):
        RegistryGateway(image_registry.url, 5).tags(ImageName.parse("gcr.io/a-467519/nothing-here:v1"))


def test_unreachable_registry_says_so_quickly() -> None:
    gateway = RegistryGateway(f"http://127.0.0.1:{free_port()}", 2)
    with pytest.raises(BackendUnavailable, match="did not answer"):
        gateway.digest(IMAGE, "v1.5.1")
