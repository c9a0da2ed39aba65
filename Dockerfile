# syntax=docker/dockerfile:1
# AIA runbook bot: container image for GKE. Build, push and pin: docs/deploy.md
# ("Release"), which passes the base image BY DIGEST:
#
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> \
#     -t gcr.io/a-467519/aia-bot:$(git rev-parse --short HEAD) .
#
# Reproducible: every Python dependency, the build backend included, comes from
# requirements/image.lock (scripts/lock.sh: uv pip compile --generate-hashes) and pip
# refuses anything whose hash differs (--require-hashes). The bot's own wheel is built
# from the same locked hatchling, without build isolation, so nothing unpinned is fetched.
# Both stages use the same base image: the virtualenv points at its /usr/local/bin/python3.11.
# The default below is for a local try only; hadolint's DL3006/DL3007 are satisfied by the
# explicit tag, the digest comes from the release step.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# Builder: the locked dependencies, then the bot (bot/ and handlers/ only: the sandbox/
# stand-ins and tests stay out of the image).
# Every dependency ships manylinux wheels, so no compiler is needed; pip fails loudly if
# one ever is.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY requirements/image.lock ./requirements/image.lock
RUN pip install --require-hashes --no-deps --only-binary=:all: -r requirements/image.lock

# hatchling reads README.md (project.readme) and packages bot/ and handlers/ (with the
# Alembic migrations under bot/store/migrations); sandbox/ is listed in pyproject.toml for
# checkouts but absent here, which hatchling skips.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
# --no-deps: every dependency is already installed from the lock; the bot's own wheel is
# not on an index, so it has no hash to require.
RUN pip install --no-deps --no-build-isolation --no-index . \
 && pip check \
 && aia-bot --help >/dev/null

# ---------------------------------------------------------------------------
# Runtime: only the virtualenv, a non-root user, nothing to write outside /tmp.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="aia-runbook-bot" \
      org.opencontainers.image.description="ChatOps Slack bot for the AIA operations runbook"

# uid/gid 10001: matches runAsUser/runAsGroup in manifests/base/deployment.yaml.
RUN groupadd --system --gid 10001 aia \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/aia --create-home \
            --shell /usr/sbin/nologin aia

COPY --from=builder /opt/venv /opt/venv

# MPLCONFIGDIR/XDG_CACHE_HOME: matplotlib writes its font cache on first use;
# with readOnlyRootFilesystem only /tmp (an emptyDir) is writable.
# MPLBACKEND=Agg: render to PNG only, never look for a display.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    XDG_CACHE_HOME=/tmp/.cache \
    HOME=/home/aia

# The default DATABASE_URL is a SQLite file in the working directory; that only
# works for `docker run` without a read-only root. In the cluster DATABASE_URL
# is PostgreSQL (from the aia-bot-secrets Secret).
WORKDIR /home/aia
USER 10001:10001

EXPOSE 3000

# Kubernetes uses its own probes (/healthz, /readyz); this one is for plain Docker.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["aia-bot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]
