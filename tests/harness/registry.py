"""A real OCI registry (Debian's docker-registry) holding the app's image tags, for tests.

The process and the pushes over the distribution API live in `sandbox.registry` (the
console sandbox uses them too); this adds what tests need: the digest of every pushed
tag, and a tag moved to a new build, as a CI pipeline re-pushing `:v1.6.0` would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sandbox.registry import RegistryProcess, seed_aia_images

REPOSITORY_PATH = "a-467519/aia-system"
REPOSITORY = f"gcr.io/{REPOSITORY_PATH}"


@dataclass
class TestRegistry:
    process: RegistryProcess
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.process.url

    def move_tag(self, tag: str) -> str:
        """Push a different build under ``tag``; its new digest."""
        digest = self.process.push_image(REPOSITORY_PATH, tag, marker=f"rebuild-of-{tag}-{len(self.digests)}")
        self.digests[f"{tag}#moved{len(self.digests)}"] = digest
        return digest

    def digest(self, tag: str) -> str:
        return self.digests[tag]


@contextmanager
def aia_registry() -> Iterator[TestRegistry]:
    with RegistryProcess() as process:
        yield TestRegistry(process, seed_aia_images(process, REPOSITORY_PATH))
