"""A real OCI registry for the console sandbox and the tests: Debian's `docker-registry`.

The registry is the reference implementation of the distribution API (the same code
behind Docker Hub's), started on a free local port with filesystem storage. Images
are pushed over its HTTP API the way `docker push` does it: each blob by a monolithic
upload, then the manifest by tag. Blobs are small fake ones; the config blob carries
a real `created` time, which is what `/aia images` shows.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import requests

BINARY = "docker-registry"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

CONFIG_YAML = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def available() -> bool:
    """Is Debian's docker-registry installed?"""
    return shutil.which(BINARY) is not None


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook: Linux sends the child SIGTERM when the process that started it dies.

    A console or test killed with SIGKILL cannot stop its registry; without this it would be
    left running, holding its port and temporary directory. libc is loaded here, in the parent:
    the hook itself runs between fork and exec, where importing (taking locks) is not safe.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None  # not Linux: stop() is the only clean-up

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryProcess:
    """`docker-registry serve CONFIG` on a free port, its storage in a temporary directory."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="aia-registry-")
        self._process: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()

    def start(self, timeout: float = 20) -> RegistryProcess:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError("docker-registry is not installed (Debian package docker-registry)")
        root = Path(self._dir.name)
        config = root / "config.yml"
        config.write_text(CONFIG_YAML.format(root=root / "storage", port=self.port))
        log = open(root / "registry.log", "ab")  # noqa: SIM115 - the child process owns it
        self._process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent_hook())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("docker-registry exited: " + (root / "registry.log").read_text(errors="replace"))
            try:
                if self.http.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None
        self._dir.cleanup()

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- pushing, as `docker push` does over the HTTP API ---------------------------
    def push_blob(self, name: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = self.http.post(f"{self.url}/v2/{name}/blobs/uploads/", timeout=10)
        if started.status_code != 202:
            raise RuntimeError(f"blob upload not started: {started.status_code} {started.text}")
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        done = self.http.put(location, params={"digest": digest}, data=data,
                             headers={"Content-Type": "application/octet-stream"}, timeout=10)
        if done.status_code != 201:
            raise RuntimeError(f"blob upload failed: {done.status_code} {done.text}")
        return digest

    def push_image(self, name: str, tag: str, created: datetime | None = None, marker: str = "") -> str:
        """A small image under ``name:tag``; returns its manifest digest. ``marker`` makes a new build."""
        created = created or datetime.now(UTC)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "config": {"Labels": {"build": marker or tag}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }).encode()
        layer = f"layer of {name}:{tag} {marker}".encode()
        config_digest = self.push_blob(name, config)
        layer_digest = self.push_blob(name, layer)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": DOCKER_LAYER, "size": len(layer), "digest": layer_digest}],
        }).encode()
        answer = self.http.put(f"{self.url}/v2/{name}/manifests/{tag}", data=manifest,
                               headers={"Content-Type": DOCKER_MANIFEST}, timeout=10)
        if answer.status_code != 201:
            raise RuntimeError(f"manifest push failed: {answer.status_code} {answer.text}")
        return str(answer.headers["Docker-Content-Digest"])


def seed_aia_images(registry: RegistryProcess, path: str = "a-467519/aia-system") -> dict[str, str]:
    """The tags the seeded cluster runs and a few newer ones; tag -> digest."""
    digests = {}
    for day, tag in enumerate(("v1.4.1", "v1.4.2", "v1.5.0", "v1.5.1", "v1.6.0"), start=1):
        digests[tag] = registry.push_image(path, tag, datetime(2026, 11, day * 5, 9, 30, tzinfo=UTC))
    return digests
