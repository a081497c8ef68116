"""The sandbox's prerequisites: one list of checks, used by `prepare_sandbox` and `kernelbox doctor`."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import SandboxUnavailableError
from ._locate import srt_install_hint, srt_package_root

_PROBE_TIMEOUT_SECONDS = 10.0



@dataclass(frozen=True)
class Problem:
    """A missing prerequisite and how to fix it."""

    what: str
    fix: str


_DEBIAN_PACKAGES = {"bwrap": "bubblewrap", "socat": "socat", "rg": "ripgrep"}
_SECCOMP_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
_USERNS_FIX = (
    "allow unprivileged user namespaces (sysctl -w user.max_user_namespaces=15000; "
    "Debian before 11: sysctl -w kernel.unprivileged_userns_clone=1; Ubuntu 24.04+: "
    "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0; as root, keep CAP_SETFCAP; in "
    "a container, allow unshare/clone of user namespaces)"
)
_verified: set[tuple[str, ...]] = set()
_userns_usable: set[str] = set()


def check_sandbox_prerequisites(srt: Sequence[str]) -> None:
    """Check that this machine can run srt, quickly (no network; ~20 ms on Linux).

    Linux: ``bwrap``, ``socat`` and ``rg`` on ``PATH``, Node.js for the npm package, a
    prebuilt seccomp helper for this CPU, and user namespaces that bubblewrap can use
    (``bwrap --unshare-user --unshare-net --ro-bind / / true``). macOS: ``sandbox-exec`` and
    ``rg``. A successful check is remembered for the life of the process.

    Args:
        srt: the argv prefix from `find_srt`.

    Raises:
        SandboxUnavailableError: listing every missing prerequisite with its fix.
    """
    key = (sys.platform, os.environ.get("PATH", ""), *srt)
    if key in _verified:
        return
    problems = missing_prerequisites(srt)
    if problems:
        lines = "\n".join(f"  - {p.what}; fix: {p.fix}" for p in problems)
        raise SandboxUnavailableError(
            f"the sandbox cannot run on this machine:\n{lines}\n"
            f"(`kernelbox doctor` checks every prerequisite)"
        )
    _verified.add(key)


def missing_prerequisites(srt: Sequence[str]) -> list[Problem]:
    """Every prerequisite of `srt` that this machine lacks (empty when it can run)."""
    if sys.platform.startswith("linux"):
        return _linux_problems(srt)
    if sys.platform == "darwin":
        return _macos_problems(srt)
    return [
        Problem(
            f"kernelbox's sandbox runs on Linux and macOS, not on {sys.platform}",
            "use sandbox=False on this platform, or run kernelbox on Linux or macOS",
        )
    ]


def _linux_problems(srt: Sequence[str]) -> list[Problem]:
    problems = _node_problems(srt)
    missing = [tool for tool in _DEBIAN_PACKAGES if shutil.which(tool) is None]
    if missing:
        packages = " ".join(_DEBIAN_PACKAGES[tool] for tool in missing)
        problems.append(
            Problem(
                f"{', '.join(missing)} not found on PATH",
                f"apt-get install {packages} (Fedora: dnf install {packages}; "
                f"Arch: pacman -S {packages})",
            )
        )
    problems += _seccomp_problems(srt)
    bwrap = shutil.which("bwrap")
    if bwrap is not None:
        failure = user_namespace_failure(bwrap)
        if failure is not None:
            what = f"bubblewrap cannot create namespaces ({failure})"
            problems.append(Problem(what, _USERNS_FIX))
    return problems


def _macos_problems(srt: Sequence[str]) -> list[Problem]:
    problems = _node_problems(srt)
    if not Path("/usr/bin/sandbox-exec").exists() and shutil.which("sandbox-exec") is None:
        problems.append(Problem("sandbox-exec (Seatbelt) not found", "it ships with macOS"))
    if shutil.which("rg") is None:
        problems.append(Problem("rg (ripgrep) not found on PATH", "brew install ripgrep"))
    return problems


def _node_problems(srt: Sequence[str]) -> list[Problem]:
    if len(srt) >= 2 and not Path(srt[0]).is_file():
        return [Problem(f"Node.js not found at {srt[0]}", "install Node.js >= 20")]
    return []


def seccomp_helper(package_root: Path, machine: str | None = None) -> Path | None:
    """srt's prebuilt ``apply-seccomp`` for this CPU, or None when srt ships none for it.

    Source: ``getVendorArchitecture()`` in srt's ``generate-seccomp-filter.js`` (x64, arm64).
    """
    arch = _SECCOMP_ARCH.get((machine or platform.machine()).lower())
    if arch is None:
        return None
    return package_root / "vendor" / "seccomp" / arch / "apply-seccomp"


def _seccomp_problems(srt: Sequence[str]) -> list[Problem]:
    root = srt_package_root(srt)
    if root is None:
        return []  # not the npm package (e.g. a single-file build): srt checks for itself
    helper = seccomp_helper(root)
    if helper is None:
        return [
            Problem(
                f"srt ships no seccomp helper for this CPU ({platform.machine()}); without it "
                f"Unix sockets are not blocked",
                "run kernelbox on x86-64 or arm64 for a sandbox",
            )
        ]
    if not os.access(helper, os.X_OK):
        return [
            Problem(
                f"srt's seccomp helper is missing or not executable: {helper}",
                f"reinstall srt: {srt_install_hint()}",
            )
        ]
    return []


def user_namespace_failure(bwrap: str) -> str | None:
    """Why bubblewrap cannot create user and network namespaces here, or None when it can.

    Mirrors srt's own probe (``bwrap --unshare-user --dev-bind / / true`` in
    ``linux-sandbox-utils.js``), plus a network namespace, which srt also needs. Takes ~20 ms;
    a success is remembered for the life of the process (a failure is not: it can be fixed).
    """
    if bwrap in _userns_usable:
        return None
    argv = [bwrap, "--unshare-user", "--unshare-net", "--ro-bind", "/", "/", "true"]
    try:
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if completed.returncode != 0:
        return completed.stderr.strip() or f"exit status {completed.returncode}"
    _userns_usable.add(bwrap)
    return None
