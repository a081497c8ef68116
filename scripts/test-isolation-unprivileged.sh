#!/usr/bin/env bash
# Run the isolation tests (the files named below) as an unprivileged user, as a normal (non-root) kernelbox user
# would: the sandbox then runs as that user's own uid, and limits that need root must be
# refused clearly. Needs root (to create the user); used by `make test-isolation-unprivileged`.
#
# Creates the system user kernelbox-tester when missing and, like install-sandbox-prereqs.sh
# does for kernelbox-sandbox, grants it traverse-only ACL entries on closed directories leading
# to the interpreter and the checkout. Prints each change.
set -euo pipefail
cd "$(dirname "$0")/.."
TESTER="${KERNELBOX_TESTER:-kernelbox-tester}"
PYTHON=.venv/bin/python
log() { printf 'test-isolation-unprivileged: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "already unprivileged: running the tests as $(id -un)"
    exec "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_isolation.py tests/test_isolation_view.py tests/test_host_writes_sandbox.py tests/test_terminal_output.py tests/test_kernel_output_pipe.py "$@"
fi
if ! id -u "$TESTER" >/dev/null 2>&1; then
    log "useradd --system --no-create-home --shell /usr/sbin/nologin $TESTER"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$TESTER"
fi
as_tester() { setpriv --reuid="$TESTER" --regid="$(id -g "$TESTER")" --clear-groups -- "$@"; }
for target in "$PWD" "$(readlink -f "$PYTHON")" "$(readlink -f .tools/srt)"; do
    dir=""
    IFS=/ read -r -a parts <<<"${target#/}"
    for part in "${parts[@]}"; do
        dir="$dir/$part"
        [ -d "$dir" ] || break
        if ! as_tester test -x "$dir"; then
            log "setfacl -m u:$TESTER:x $dir"
            setfacl -m "u:$TESTER:x" "$dir"
        fi
    done
done
exec runuser -u "$TESTER" -- env -i PATH="$PATH" HOME=/tmp CI="${CI:-}" PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_isolation.py tests/test_isolation_view.py tests/test_host_writes_sandbox.py tests/test_terminal_output.py tests/test_kernel_output_pipe.py "$@"
