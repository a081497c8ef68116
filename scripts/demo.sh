#!/usr/bin/env bash
# The main job: run the real-data example cell by cell in one kernel, inside the OS sandbox.
# Where this machine cannot sandbox (kernelbox doctor fails), say so clearly and run without it,
# except in CI, where a missing sandbox is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
KERNELBOX=.venv/bin/kernelbox
EXAMPLE=examples/seattle_weather.py
# The kernels' working directory: never the checkout itself, which holds code the host runs
# (kernelbox refuses it). The hyphen keeps it from ever being importable as a package.
WORKSPACE="${KERNELBOX_DEMO_WORKSPACE:-$PWD/demo-workspace}"
mkdir -p "$WORKSPACE"
# As root the sandbox runs as the unprivileged user kernelbox-sandbox, which must write it.
SANDBOX_USER="${KERNELBOX_SANDBOX_USER:-kernelbox-sandbox}"
if [ "$(id -u)" -eq 0 ] && id -u "$SANDBOX_USER" >/dev/null 2>&1; then
    chown "$SANDBOX_USER:" "$WORKSPACE"
fi

if "$KERNELBOX" doctor >/tmp/kernelbox-doctor.$$ 2>&1; then
    rm -f /tmp/kernelbox-doctor.$$
    exec "$KERNELBOX" run "$EXAMPLE" --images-dir images --sandbox --working-dir "$WORKSPACE"
fi
cat /tmp/kernelbox-doctor.$$ >&2
rm -f /tmp/kernelbox-doctor.$$
if [ "${CI:-}" = "true" ]; then
    echo "demo: the sandbox cannot run on this machine (see above); failing in CI" >&2
    exit 1
fi
echo "" >&2
echo "NOTICE: this machine cannot run the OS sandbox (see the checks above)." >&2
echo "NOTICE: running the example WITHOUT a sandbox. Fix the failed checks to sandbox it." >&2
echo "" >&2
exec "$KERNELBOX" run "$EXAMPLE" --images-dir images --working-dir "$WORKSPACE"
