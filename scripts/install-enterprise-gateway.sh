#!/usr/bin/env bash
# Install Jupyter Enterprise Gateway into its own virtual environment, for tests/test_remote.py.
#
# Enterprise Gateway 3.x pins jupyter_server<2 and jupyter_client<7, which conflict with
# kernelbox's own dependencies, so it cannot share .venv/. It gets <repo>/.tools/enterprise-gateway
# instead; its kernels run kernelbox's .venv/ Python through a kernelspec the test writes.
# Idempotent: does nothing when the pinned version is already installed there.
# Override the version with EG_VERSION=x.y.z, the location with EG_PREFIX=/path.
set -euo pipefail

EG_VERSION="${EG_VERSION:-3.3.0}"
PYTHON="${PYTHON:-python3}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EG_PREFIX="${EG_PREFIX:-$REPO_ROOT/.tools/enterprise-gateway}"
STAMP="$EG_PREFIX/.installed-$EG_VERSION"

log() { printf 'install-enterprise-gateway: %s\n' "$*" >&2; }

if [ -f "$STAMP" ] && [ -x "$EG_PREFIX/bin/jupyter-enterprisegateway" ]; then
    exit 0
fi
log "creating $EG_PREFIX with jupyter_enterprise_gateway==$EG_VERSION"
"$PYTHON" -m venv "$EG_PREFIX"
"$EG_PREFIX/bin/pip" install --quiet --upgrade pip
"$EG_PREFIX/bin/pip" install --quiet "jupyter_enterprise_gateway==$EG_VERSION"
touch "$STAMP"
log "installed: $("$EG_PREFIX/bin/jupyter-enterprisegateway" --version 2>/dev/null | tail -n 1)"
