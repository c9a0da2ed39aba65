"""Container images through the OCI distribution API (what `gcloud container images list-tags` reads).

Tags come from ``/v2/<name>/tags/list`` (paginated by its ``Link`` header), digests
from ``HEAD /v2/<name>/manifests/<tag>`` (``Docker-Content-Digest``), creation times
from the image's config blob. Against Google's registries the bot sends a Google
access token from application default credentials (Workload Identity in GKE); with
``AIA_REGISTRY_URL`` every allowed registry is reached at that one base URL instead,
which is how the tests and the console sandbox use a local ``docker-registry``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import requests

from bot.errors import BackendUnavailable, UserError
from bot.timeutil import assume_utc

log = logging.getLogger(__name__)

# What a registry may answer for a tag; the digest of the first acceptable kind is the one
# a node would pull, so all four are asked for (a multi-arch index has its own digest).
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
# More tags than this are not each opened for their creation time (one request per tag).
DETAIL_CAP = 100


@dataclass(frozen=True)
class ImageName:
    """``host/path[:tag][@digest]`` taken apart (the reference grammar of the distribution spec)."""

    host: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.path}"

    def pinned(self, digest: str) -> str:
        """The reference a node pulls exactly: the tag kept for people, the digest for the runtime."""
        return f"{self.repository}{':' + self.tag if self.tag else ''}@{digest}"

    @classmethod
    def parse(cls, reference: str) -> ImageName:
        rest, _, digest = reference.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        tag = None
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
        first, _, remainder = rest.partition("/")
        # Docker's rule: the first component is a registry host only if it looks like one.
        if remainder and ("." in first or ":" in first or first == "localhost"):
            host, path = first, remainder
        else:
            host, path = "docker.io", rest if "/" in rest else f"library/{rest}"
        return cls(host, path, tag, digest or None)


def allowed_prefix(image: ImageName, prefixes: list[str]) -> str | None:
    """The configured prefix the image's repository lies under (whole path components only)."""
    repository = image.repository
    for prefix in prefixes:
        prefix = prefix.rstrip("/")
        if repository == prefix or repository.startswith(prefix + "/"):
            return prefix
    return None


@dataclass(frozen=True)
class TagInfo:
    tag: str
    digest: str | None
    created: datetime | None
    media_type: str | None = None


class RegistryGateway:
    def __init__(self, base_url: str | None, timeout: float, page_size: int = 1000) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self.page_size = page_size
        self._timeout = timeout
        self._http = requests.Session()
        self._http.headers["User-Agent"] = "aia-runbook-bot"
        self._lock = threading.Lock()
        self._bearer: dict[str, str] = {}  # registry host -> registry token (docker token flow)
        self._google: Any = None

    # -- plumbing -------------------------------------------------------------
    def _root(self, host: str) -> str:
        return self._base_url or f"https://{host}"

    def _google_token(self) -> str:
        """An access token from application default credentials (refreshed when near expiry)."""
        import google.auth
        import google.auth.transport.requests
        from google.auth.exceptions import DefaultCredentialsError, RefreshError

        with self._lock:
            try:
                if self._google is None:
                    self._google, _ = google.auth.default(
                        scopes=["https://www.googleapis.com/auth/cloud-platform"])
                if not self._google.valid:
                    self._google.refresh(google.auth.transport.requests.Request())
            except DefaultCredentialsError:
                raise BackendUnavailable(
                    "No Google credentials for the image registry (Workload Identity or "
                    "GOOGLE_APPLICATION_CREDENTIALS), or set AIA_REGISTRY_URL.") from None
            except RefreshError as exc:
                raise BackendUnavailable(
                    f"Google refused a token for the image registry ({type(exc).__name__}).") from None
            return str(self._google.token)

    def _authorize(self, host: str, challenge: str) -> bool:
        """Answer a ``WWW-Authenticate: Bearer realm=...`` challenge as docker does for gcr.io."""
        if self._base_url or not challenge.lower().startswith("bearer"):
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in fields:
            return False
        params = {k: v for k, v in fields.items() if k in ("service", "scope")}
        try:
            answer = self._http.get(fields["realm"], params=params, timeout=self._timeout,
                                    auth=("oauth2accesstoken", self._google_token()))
        except requests.RequestException as exc:
            raise BackendUnavailable(f"Image registry {host}: token service did not answer "
                                     f"({type(exc).__name__}).") from None
        if answer.status_code != 200:
            raise BackendUnavailable(f"Image registry {host} refused a token ({answer.status_code}): the "
                                     "bot's service account needs roles/artifactregistry.reader on the repository.")
        body = answer.json()
        self._bearer[host] = str(body.get("token") or body.get("access_token") or "")
        return True

    def _request(self, method: str, host: str, url: str, what: str,
                 headers: dict[str, str] | None = None) -> requests.Response:
        for attempt in (1, 2):
            sent = dict(headers or {})
            if host in self._bearer:
                sent["Authorization"] = f"Bearer {self._bearer[host]}"
            try:
                response = self._http.request(method, url, headers=sent, timeout=self._timeout,
                                              allow_redirects=True)
            except requests.RequestException as exc:
                raise BackendUnavailable(
                    f"Image registry {host} did not answer while {what} ({type(exc).__name__}); "
                    "nothing was changed.") from None
            if response.status_code == 401 and attempt == 1 and self._authorize(
                    host, response.headers.get("WWW-Authenticate", "")):
                continue
            return response
        return response

    @staticmethod
    def _refused(host: str, response: requests.Response, what: str) -> BackendUnavailable:
        if response.status_code in (401, 403):
            return BackendUnavailable(
                f"Image registry {host} refused the bot ({response.status_code}) while {what}: it needs "
                "roles/artifactregistry.reader (or storage.objectViewer for gcr.io) on the repository.")
        return BackendUnavailable(f"Image registry {host} answered {response.status_code} while {what}.")

    # -- reads ------------------------------------------------------------------
    def tags(self, image: ImageName) -> tuple[list[str], dict[str, TagInfo]]:
        """Every tag, following pagination; plus what a GCR-style listing already says per tag."""
        url: str | None = f"{self._root(image.host)}/v2/{image.path}/tags/list?n={self.page_size}"
        tags: list[str] = []
        known: dict[str, TagInfo] = {}
        pages = 0
        while url and pages < 100:
            pages += 1
            response = self._request("GET", image.host, url, f"listing tags of {image.repository}")
            if response.status_code == 404:
                raise UserError(f"Repository `{image.repository}` does not exist in its registry "
                                "(or is empty). Check AIA_IMAGE_REPOSITORY.")
            if response.status_code != 200:
                raise self._refused(image.host, response, f"listing tags of {image.repository}")
            body = response.json()
            tags.extend(str(t) for t in body.get("tags") or [])
            # gcr.io adds {"manifest": {digest: {"tag": [...], "timeCreatedMs": "..."}}}: times for free.
            for digest, meta in (body.get("manifest") or {}).items():
                created = _from_millis(meta.get("timeCreatedMs"))
                for tag in meta.get("tag") or []:
                    known[str(tag)] = TagInfo(str(tag), str(digest), created, meta.get("mediaType"))
            match = _LINK_NEXT.search(response.headers.get("Link", ""))
            url = urljoin(url, match.group(1)) if match else None
        return tags, known

    def digest(self, image: ImageName, reference: str) -> str | None:
        """The digest a tag (or digest) resolves to now; None when there is no such manifest."""
        url = f"{self._root(image.host)}/v2/{image.path}/manifests/{reference}"
        what = f"resolving {image.repository}:{reference}"
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = self._request("HEAD", image.host, url, what, accept)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused(image.host, response, what)
        digest = response.headers.get("Docker-Content-Digest", "")
        if not _DIGEST.fullmatch(digest):
            # Some registries leave the header off HEAD; the body's hash is the digest.
            response = self._request("GET", image.host, url, what, accept)
            if response.status_code != 200:
                raise self._refused(image.host, response, what)
            import hashlib

            digest = response.headers.get("Docker-Content-Digest") or \
                "sha256:" + hashlib.sha256(response.content).hexdigest()
        return digest

    def details(self, image: ImageName, tag: str) -> TagInfo:
        """Digest and creation time of one tag (manifest, then its config blob)."""
        root = f"{self._root(image.host)}/v2/{image.path}"
        what = f"reading {image.repository}:{tag}"
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = self._request("GET", image.host, f"{root}/manifests/{tag}", what, accept)
        if response.status_code == 404:
            return TagInfo(tag, None, None)
        if response.status_code != 200:
            raise self._refused(image.host, response, what)
        digest = response.headers.get("Docker-Content-Digest")
        manifest = _json(response)
        media_type = str(manifest.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0])
        if media_type in INDEX_TYPES:
            # A multi-platform index: the creation time of its linux/amd64 image (else the first).
            entries = manifest.get("manifests") or []
            entry = next((m for m in entries if (m.get("platform") or {}).get("architecture") == "amd64"),
                         entries[0] if entries else None)
            if entry is None:
                return TagInfo(tag, digest, None, media_type)
            response = self._request("GET", image.host, f"{root}/manifests/{entry['digest']}", what, accept)
            manifest = _json(response) if response.status_code == 200 else {}
        config = (manifest.get("config") or {}).get("digest")
        created = None
        if config and int((manifest.get("config") or {}).get("size") or 0) <= 1_000_000:
            blob = self._request("GET", image.host, f"{root}/blobs/{config}", what)
            if blob.status_code == 200:
                created = _parse_time(_json(blob).get("created"))
        return TagInfo(tag, digest, created, media_type)

    def list_images(self, image: ImageName, limit: int) -> tuple[list[TagInfo], int]:
        """The newest ``limit`` tags with digest and time; and how many tags there are."""
        tags, known = self.tags(image)
        if all(t in known for t in tags) and known:
            infos = [known[t] for t in tags]
        else:
            # Creation times cost a manifest and a blob per tag: only the likely newest are opened.
            candidates = tags if len(tags) <= DETAIL_CAP else sorted(tags, key=_version_key, reverse=True)[:limit]
            with ThreadPoolExecutor(max_workers=8) as pool:
                infos = list(pool.map(lambda t: known.get(t) or self.details(image, t), candidates))
        infos.sort(key=lambda i: (i.created or datetime.min.replace(tzinfo=UTC), _version_key(i.tag)), reverse=True)
        return infos[:limit], len(tags)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        value = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _from_millis(value: Any) -> datetime | None:
    try:
        millis = int(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(millis / 1000, UTC) if millis > 0 else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return assume_utc(moment)


def _version_key(tag: str) -> tuple[tuple[int, int | str], ...]:
    """v1.10.0 after v1.9.2: numbers compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\-_+]", tag.lstrip("v")))
