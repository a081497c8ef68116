#!/usr/bin/env bash
# Install what kernelbox's Linux sandbox needs, idempotently, on Debian/Ubuntu.
#
#   Debian packages: bubblewrap (bwrap), socat, ripgrep (rg)   -- required by srt on Linux
#   Node.js + npm:   Debian packages nodejs npm, only when `node` is missing
#   srt:             @anthropic-ai/sandbox-runtime, pinned, into <repo>/.tools/srt
#   as root only:    the system user kernelbox-sandbox (a root supervisor runs the sandbox as
#                    it, never as root), and traverse permission for it on the directories
#                    leading to the Python interpreter, the checkout and srt, when one is closed
#                    (e.g. /root, mode 0700, when Python lives under /root/.pyenv): one ACL entry
#                    `setfacl -m u:kernelbox-sandbox:x DIR` per such directory (Debian package acl).
#
# Runs as root or through sudo, with no TTY (DEBIAN_FRONTEND=noninteractive).
# Override the pinned version with SRT_VERSION=x.y.z, the prefix with SRT_PREFIX=/path.
# On macOS only the npm step runs (Seatbelt's sandbox-exec ships with the OS).
set -euo pipefail

SRT_VERSION="${SRT_VERSION:-0.0.83}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRT_PREFIX="${SRT_PREFIX:-$REPO_ROOT/.tools/srt}"
SRT_PACKAGE="@anthropic-ai/sandbox-runtime"
SANDBOX_USER="${KERNELBOX_SANDBOX_USER:-kernelbox-sandbox}"
PYTHON_FOR_SANDBOX="${PYTHON_FOR_SANDBOX:-$REPO_ROOT/.venv/bin/python}"

log() { printf 'install-sandbox-prereqs: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root (or passwordless sudo) to run: $*"
        return 1
    fi
}

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install these packages with your package manager: $*"
        return 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

install_linux_packages() {
    local missing=()
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    command -v socat >/dev/null 2>&1 || missing+=(socat)
    command -v rg >/dev/null 2>&1 || missing+=(ripgrep)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "bwrap, socat, rg, node and npm already present"
    else
        apt_install "${missing[@]}"
    fi
}

installed_srt_version() {
    local manifest="$SRT_PREFIX/node_modules/$SRT_PACKAGE/package.json"
    [ -f "$manifest" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$manifest" 2>/dev/null || true
}

install_srt() {
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found; install Node.js (>= 20) and npm first"
        return 1
    fi
    local current
    current="$(installed_srt_version)"
    if [ "$current" = "$SRT_VERSION" ]; then
        log "$SRT_PACKAGE@$SRT_VERSION already in $SRT_PREFIX"
        return 0
    fi
    log "npm install --prefix $SRT_PREFIX $SRT_PACKAGE@$SRT_VERSION${current:+ (was $current)}"
    mkdir -p "$SRT_PREFIX"
    # srt 0.0.83 declares node >= 22 but runs on Node 20 (Debian 12 ships 18; see README);
    # engine-strict stays off so npm only warns. No audit/fund calls: fewer network round trips.
    npm install --prefix "$SRT_PREFIX" --no-audit --no-fund --loglevel=error \
        --engine-strict=false "$SRT_PACKAGE@$SRT_VERSION" </dev/null
    log "srt installed: $SRT_PREFIX/node_modules/.bin/srt"
}

# Run "$@" as the sandbox user (util-linux setpriv, as kernelbox itself does).
as_sandbox_user() {
    setpriv --reuid="$SANDBOX_USER" --regid="$(id -g "$SANDBOX_USER")" --clear-groups -- "$@"
}

create_sandbox_user() {
    if id -u "$SANDBOX_USER" >/dev/null 2>&1; then
        log "sandbox user $SANDBOX_USER already exists (uid $(id -u "$SANDBOX_USER"))"
        return 0
    fi
    log "useradd --system --no-create-home --shell /usr/sbin/nologin $SANDBOX_USER"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$SANDBOX_USER"
}

# Let the sandbox user traverse (x only, no listing) each closed directory on the way to $1.
grant_traverse() {
    local target="$1" dir="" component
    [ -e "$target" ] || return 0
    target="$(readlink -f "$target")"
    IFS=/ read -r -a components <<<"${target#/}"
    for component in "${components[@]}"; do
        dir="$dir/$component"
        [ -d "$dir" ] || break
        if ! as_sandbox_user test -x "$dir"; then
            command -v setfacl >/dev/null 2>&1 || apt_install acl
            log "setfacl -m u:$SANDBOX_USER:x $dir (so $SANDBOX_USER can reach $target)"
            setfacl -m "u:$SANDBOX_USER:x" "$dir"
        fi
    done
}

prepare_sandbox_user() {
    if [ "$(id -u)" -ne 0 ]; then
        log "not root: the sandbox runs as $(id -un); no sandbox user needed"
        return 0
    fi
    create_sandbox_user
    local python_real="" targets=("$REPO_ROOT" "$SRT_PREFIX")
    if [ -x "$PYTHON_FOR_SANDBOX" ]; then
        python_real="$(readlink -f "$PYTHON_FOR_SANDBOX")"
        targets+=("$PYTHON_FOR_SANDBOX" "$python_real")
        # The installation's prefixes (a venv's base interpreter may live elsewhere).
        while IFS= read -r prefix; do targets+=("$prefix"); done < <(
            "$PYTHON_FOR_SANDBOX" -I -c 'import sys; print(sys.prefix); print(sys.base_prefix)')
    fi
    command -v node >/dev/null 2>&1 && targets+=("$(command -v node)")
    for target in "${targets[@]}"; do
        grant_traverse "$target"
    done
    if [ -n "$python_real" ] && ! as_sandbox_user "$PYTHON_FOR_SANDBOX" -I -c 'import kernelbox' 2>/dev/null; then
        log "warning: $SANDBOX_USER still cannot run $PYTHON_FOR_SANDBOX with kernelbox; check the permissions of its files"
    fi
}

main() {
    case "$(uname -s)" in
        Linux) install_linux_packages ;;
        Darwin)
            command -v sandbox-exec >/dev/null 2>&1 || log "warning: sandbox-exec not found"
            ;;
        *) log "unsupported OS $(uname -s): srt runs on Linux and macOS only"; return 1 ;;
    esac
    install_srt
    [ "$(uname -s)" = Linux ] && prepare_sandbox_user
    return 0
}

main "$@"
