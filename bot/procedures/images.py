"""Image tags of the app (`gcloud container images list-tags`) and the image checks of changes.

`set-image` and `bluegreen deploy` call :func:`pin_image` before anything runs: the
image must come from an allowed registry (an operator must not be able to run any
image with production's secrets and service account), its tag must exist, and the
change is bound to the digest the tag resolves to now. The digest is part of the
approval snapshot, so a tag pushed again between approval and execution makes the
request stale; what is deployed is ``repo:tag@digest``, so the nodes pull exactly
what was approved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.adapters.registry import ImageName, allowed_prefix
from bot.errors import BackendUnavailable, UserError
from bot.procedures import kube_format as kf
from bot.registry import Param, Procedure, ProcedureContext, RiskClass, can
from bot.results import Result, Status, Table, Text
from bot.validators import bounded_int

SECTION_IMAGES = "Troubleshooting › Image Pull Issues"


@dataclass(frozen=True)
class PinnedImage:
    requested: str
    digest: str
    pinned: str

    @property
    def short(self) -> str:
        return self.digest[:19]


def allowed_registries(ctx: ProcedureContext) -> list[str]:
    return [p for p in ctx.settings.aia_allowed_registries.split(",") if p]


def check_allowed(ctx: ProcedureContext, reference: str) -> ImageName:
    image = ImageName.parse(reference)
    if allowed_prefix(image, allowed_registries(ctx)) is None:
        raise UserError(
            f"Image `{reference[:120]}` is not from an allowed registry; production only runs images from "
            + ", ".join(f"`{p}`" for p in allowed_registries(ctx))
            + " (setting AIA_ALLOWED_REGISTRIES). Nothing was changed.",
            f"Usage: an image like `{ctx.settings.aia_image_repository}:v1.5.1`",
        )
    return image


def _recent_tags(ctx: ProcedureContext, image: ImageName, count: int = 5) -> str:
    try:
        infos, _ = ctx.backends.registry.list_images(image, count)
    except Exception:  # noqa: BLE001 - only a hint in an error message; the refusal stands without it
        return ""
    return " Recent tags: " + ", ".join(f"`{i.tag}`" for i in infos) + "." if infos else ""


def pin_image(ctx: ProcedureContext, reference: str) -> PinnedImage:
    """Allowed registry, tag (or digest) exists: the reference pinned to its digest now."""
    image = check_allowed(ctx, reference)
    registry = ctx.backends.registry
    if image.tag:
        digest = registry.digest(image, image.tag)
        if digest is None:
            raise UserError(f"Tag `{image.tag}` does not exist in `{image.repository}`; nothing was changed."
                            + _recent_tags(ctx, image) + " See `/aia images`.")
        if image.digest and image.digest != digest:
            raise UserError(f"`{image.repository}:{image.tag}` now points to `{digest[:19]}…`, not the "
                            f"`{image.digest[:19]}…` you gave: the tag moved. Check `/aia images`; nothing was changed.")
    else:
        assert image.digest is not None  # the validator insists on a tag or a digest
        if registry.digest(image, image.digest) is None:
            raise UserError(f"`{image.repository}` has no image `{image.digest[:19]}…`; nothing was changed.")
        digest = image.digest
    return PinnedImage(reference, digest, image.pinned(digest))


def images(ctx: ProcedureContext, args: dict[str, Any]) -> Result:
    repository = ctx.settings.aia_image_repository
    image = ImageName.parse(repository)
    infos, total = ctx.backends.registry.list_images(image, args.get("limit") or 15)
    rows = [[info.tag, (info.digest or "?")[:19], kf.age(info.created.isoformat()) if info.created else "?",
             info.created.strftime("%Y-%m-%d %H:%M UTC") if info.created else "?"] for info in infos]
    running = _running_images(ctx)
    parts: list[Any] = [Table(["TAG", "DIGEST", "AGE", "CREATED"], rows, empty_text="no tags")]
    if running:
        parts.append(Text("*Running now:* " + ", ".join(f"`{d}` {img}" for d, img in running)))
    return Result(
        title=f"Image tags of {repository} (newest first)",
        status=Status.OK if infos else Status.WARNING,
        parts=parts,
        summary=f"{len(rows)} of {total} tags of {repository}" + (f", newest {infos[0].tag}" if infos else ""),
    )


def _running_images(ctx: ProcedureContext) -> list[tuple[str, str]]:
    """Which blue/green deployment runs which image, so the tag list can be read against it."""
    found = []
    for name in (ctx.settings.aia_deployment_blue, ctx.settings.aia_deployment_green):
        try:
            dep = ctx.kube.deployment(name)
        except (UserError, BackendUnavailable):
            dep = {}  # a cleaned-up colour or no cluster only shortens the hint
        for container in ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
            found.append((name, str(container.get("image"))))
    return found


PROCEDURES = [
    Procedure(
        name="images",
        summary="Tags of the app image with digest and creation time, newest first",
        risk=RiskClass.READ,
        runbook=(SECTION_IMAGES,),
        run=images,
        kube=(can("get", "deployments", "apps", names=("{aia_deployment_blue}", "{aia_deployment_green}")),),
        params=(Param("limit", "option", "how many tags", metavar="N", convert=bounded_int(1, 100)),),
        examples=("/aia images --limit 5",),
        notes="Reads the registry's OCI distribution API (AIA_IMAGE_REPOSITORY).",
    ),
]
