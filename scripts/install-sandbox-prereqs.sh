#!/usr/bin/env bash
# Install what kernelbox's Linux sandbox needs, idempotently, on Debian/Ubuntu.
#
#   Debian packages: bubblewrap (bwrap), socat, ripgrep (rg)   -- required by srt on Linux
#   Node.js + npm:   Debian packages nodejs npm, only when `node` is missing
#   srt:             @anthropic-ai/sandbox-runtime, pinned, into <repo>/.tools/srt
#
# Runs as root or through sudo, with no TTY (DEBIAN_FRONTEND=noninteractive).
# Override the pinned version with SRT_VERSION=x.y.z, the prefix with SRT_PREFIX=/path.
# On macOS only the npm step runs (Seatbelt's sandbox-exec ships with the OS).
set -euo pipefail

SRT_VERSION="${SRT_VERSION:-0.0.83}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRT_PREFIX="${SRT_PREFIX:-$REPO_ROOT/.tools/srt}"
SRT_PACKAGE="@anthropic-ai/sandbox-runtime"

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

main() {
    case "$(uname -s)" in
        Linux) install_linux_packages ;;
        Darwin)
            command -v sandbox-exec >/dev/null 2>&1 || log "warning: sandbox-exec not found"
            ;;
        *) log "unsupported OS $(uname -s): srt runs on Linux and macOS only"; return 1 ;;
    esac
    install_srt
}

main "$@"
