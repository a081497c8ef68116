"""Installing the pinned sandbox-runtime (`srt`) for the current user, on request only.

``kernelbox sandbox install`` (and ``kernelbox doctor --fix``) runs `install_srt`: ``npm ci``
of the lock file shipped in ``kernelbox/sandbox/srt_lock/`` (srt and each of its dependencies
pinned to an exact version and a SHA-512 integrity hash) into the per-user data directory,
``<user data dir>/kernelbox/srt/<version>`` (platformdirs: ``~/.local/share`` on Linux,
``~/Library/Application Support`` on macOS). It installs into a temporary directory beside
the target, checks that ``srt --version`` answers the pinned version, then renames it into
place, so a half-finished install is never found. Nothing is downloaded when the pinned
version is already there, so it works offline after the first time.

System packages (bubblewrap, socat, ripgrep, Node.js) need root: kernelbox never runs
``sudo``; it prints the exact command for this platform's package manager instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._errors import SandboxUnavailableError
from ._locate import SRT_PACKAGE, SRT_VERSION, user_srt_prefix

__all__ = ["InstallResult", "install_srt", "missing_system_tools", "system_package_command"]

_LOCK_DIR = Path(__file__).resolve().parent / "srt_lock"
_NPM_TIMEOUT_SECONDS = 600.0
_VERSION_TIMEOUT_SECONDS = 30.0
# npm --loglevel=http prints one line per request; tarball downloads end in ".tgz".
_TARBALL = re.compile(r"npm http fetch GET (\d+) \S+/-/(\S+?)\.tgz")

# What srt needs from the system on Linux, as (command, package) per package manager.
_LINUX_TOOLS = ("bwrap", "socat", "rg", "node", "npm")
_PACKAGES = {
    "apt-get": {"bwrap": "bubblewrap", "socat": "socat", "rg": "ripgrep", "node": "nodejs", "npm": "npm"},
    "dnf": {"bwrap": "bubblewrap", "socat": "socat", "rg": "ripgrep", "node": "nodejs", "npm": "npm"},
    "pacman": {"bwrap": "bubblewrap", "socat": "socat", "rg": "ripgrep", "node": "nodejs", "npm": "npm"},
    "brew": {"rg": "ripgrep", "node": "node", "npm": "node"},
}
_INSTALL_VERB = {
    "apt-get": "sudo apt-get install -y",
    "dnf": "sudo dnf install -y",
    "pacman": "sudo pacman -S --needed",
    "brew": "brew install",
}
_NODE_NOTE = (
    "srt needs Node.js >= 20; where the distribution's is older (Debian 12 ships 18), "
    "install a current one from https://nodejs.org/en/download/package-manager"
)


@dataclass(frozen=True)
class InstallResult:
    """Where srt is and whether this call downloaded it."""

    srt: Path
    installed: bool


def _package_manager() -> str | None:
    if sys.platform == "darwin":
        return "brew"
    for manager in ("apt-get", "dnf", "pacman"):
        if shutil.which(manager):
            return manager
    return None


def system_package_command(missing: list[str], manager: str | None = None) -> str | None:
    """The command that installs the system tools in `missing` (``bwrap``, ``rg``, ``node``…).

    Returns None when nothing is missing. For an unknown package manager, the Debian command
    is given as the example.
    """
    manager = manager or _package_manager() or "apt-get"
    names = _PACKAGES[manager]
    packages = sorted({names[tool] for tool in missing if tool in names})
    if not packages:
        return None
    return f"{_INSTALL_VERB[manager]} {' '.join(packages)}"


def missing_system_tools() -> list[str]:
    """The commands srt needs that are not on ``PATH`` (on macOS only rg, node and npm)."""
    tools = ("rg", "node", "npm") if sys.platform == "darwin" else _LINUX_TOOLS
    return [tool for tool in tools if shutil.which(tool) is None]


def install_srt(
    *,
    force: bool = False,
    progress: Callable[[str], None] = print,
    prefix: Path | None = None,
) -> InstallResult:
    """Install the pinned srt for this user (``npm ci``), or find it already installed.

    Args:
        force: reinstall even when the pinned version is present.
        progress: called with one line of text per step and per downloaded package.
        prefix: the npm prefix to install into; `user_srt_prefix()` when None.

    Returns:
        The srt executable, and whether it was downloaded now.

    Raises:
        SandboxUnavailableError: npm is missing (the message has the command that installs
            it), npm failed, or the installed srt does not answer the pinned version.
    """
    prefix = prefix or user_srt_prefix()
    srt = prefix / "node_modules" / ".bin" / "srt"
    if not force and _srt_version(srt) == SRT_VERSION:
        progress(f"{SRT_PACKAGE}@{SRT_VERSION} is already installed: {srt}")
        return InstallResult(srt, installed=False)
    npm = shutil.which("npm")
    if npm is None:
        command = system_package_command(["node", "npm"])
        raise SandboxUnavailableError(
            f"installing srt needs npm (Node.js), which is not on PATH; as root: {command} ({_NODE_NOTE})"
        )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    staging = prefix.with_name(f".{prefix.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(_LOCK_DIR / name, staging / name)
        progress(f"Downloading {SRT_PACKAGE}@{SRT_VERSION} and its dependencies (npm ci) into {prefix}")
        _run_npm_ci(npm, staging, progress)
        version = _srt_version(staging / "node_modules" / ".bin" / "srt")
        if version != SRT_VERSION:
            raise SandboxUnavailableError(
                f"the installed srt reports version {version or 'nothing'}, not {SRT_VERSION}"
            )
        old = prefix.with_name(f".{prefix.name}.old-{os.getpid()}")
        if prefix.exists():
            prefix.rename(old)
        staging.rename(prefix)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"Installed srt {SRT_VERSION}: {srt}")
    return InstallResult(srt, installed=True)


def _run_npm_ci(npm: str, directory: Path, progress: Callable[[str], None]) -> None:
    """``npm ci`` in `directory`, reporting each downloaded package as ``[k/n] name``."""
    total = _locked_package_count()
    argv = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--engine-strict=false",
            "--loglevel=http", "--prefix", str(directory)]
    process = subprocess.Popen(
        argv, cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    done = 0
    errors: list[str] = []
    for line in process.stdout:
        match = _TARBALL.search(line)
        if match is not None and match[1] == "200":
            done += 1
            progress(f"  [{done}/{total}] {match[2]}")
        elif line.startswith("npm error"):
            errors.append(line.rstrip())
    try:
        returncode = process.wait(timeout=_NPM_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SandboxUnavailableError(f"npm ci did not finish within {_NPM_TIMEOUT_SECONDS:g} seconds") from None
    if returncode != 0:
        detail = "\n".join(errors[-10:]) or f"exit status {returncode}"
        raise SandboxUnavailableError(f"npm ci failed while installing srt:\n{detail}")


def _locked_package_count() -> int:
    import json

    lock = json.loads((_LOCK_DIR / "package-lock.json").read_text(encoding="utf-8"))
    return sum(1 for name in lock.get("packages", {}) if name)


def _srt_version(srt: Path) -> str | None:
    """What ``srt --version`` prints, or None when it is missing or fails."""
    if not srt.is_file():
        return None
    node = shutil.which("node")
    argv = [node, str(srt.resolve()), "--version"] if node else [str(srt), "--version"]
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=_VERSION_TIMEOUT_SECONDS, check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() or None if completed.returncode == 0 else None
