#!/usr/bin/env bash
# Re-lock the image's dependencies with hashes (requirements/image.lock, used by the
# Dockerfile with --require-hashes). Run after changing dependencies in pyproject.toml:
#   scripts/lock.sh            # needs uv (pip install uv==0.13.8)
# Resolved for the image's platform (CPython 3.11, Linux x86_64, glibc); every file of each
# pinned release is hashed, so the lock also installs on arm64 nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile pyproject.toml requirements/build.in requirements/incoming.in \
  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command scripts/lock.sh --output-file requirements/image.lock "$@"
