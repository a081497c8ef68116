"""`kernelbox doctor`: check every prerequisite of the OS sandbox and say how to fix each.

One line per check: ``OK``, ``WARN`` (works, but not as verified) or ``FAIL`` (the sandbox
cannot run), with the fix after each failure. The last checks run srt for real: a command in
the sandbox must find ``socket(AF_UNIX)`` refused (seccomp on) and writes outside the allowed
paths refused, and a socket passed as stdin must arrive.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from .._errors import SandboxError
from ..gateway._cgroups import cgroup_support
from ..sandbox import (
    SRT_PACKAGE,
    SRT_VERSION,
    find_srt,
    prepare_sandbox,
    seccomp_helper,
    srt_package_root,
    user_namespace_failure,
)
from ..sandbox._install import system_package_command

__all__ = ["doctor"]

Status = Literal["OK", "WARN", "FAIL"]

_COMMAND_TIMEOUT_SECONDS = 30.0
_VERIFIED_NODE_MAJOR = 20  # srt 0.0.83 declares >= 22; verified on 20 (docs/architecture.md, "srt")
_MIN_NODE_VERSION = (18, 20)  # srt's `import ... with { type: 'json' }` needs 18.20+

# Run inside the sandbox by the end-to-end check. It prints one JSON object.
_PROBE = r"""
import json, os, socket, sys
result = {}
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    result["unix_socket"] = "allowed"
except OSError as exc:
    result["unix_socket"] = f"refused ({exc.strerror})"
try:
    with open(sys.argv[1], "w") as file:
        file.write("escape")
    result["write_outside"] = "allowed"
except OSError as exc:
    result["write_outside"] = f"refused ({exc.strerror})"
try:
    listener = socket.socket(fileno=os.dup(0))
    result["stdin_socket"] = "listening" if listener.getsockname()[1] else "unbound"
except OSError as exc:
    result["stdin_socket"] = f"missing ({exc.strerror})"
print(json.dumps(result))
"""


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def doctor(stream: TextIO | None = None) -> int:
    """Check the sandbox prerequisites and print one line per check to `stream`.

    Takes a few seconds: the last check starts srt for real.

    Args:
        stream: where to print; `sys.stdout` as it is at call time when None (a default
            bound at import would miss a later redirection, e.g. by pytest's capture).

    Returns:
        0 when the sandbox can run (no check failed), 1 otherwise.
    """
    stream = sys.stdout if stream is None else stream
    failed = False
    for check in _checks():
        failed = failed or check.status == "FAIL"
        line = f"{check.status:<4}  {check.name:<18} {check.detail}"
        if check.status != "OK" and check.fix:
            line += f"\n      fix: {check.fix}"
        print(line, file=stream, flush=True)
    summary = "the sandbox cannot run here" if failed else "the sandbox can run here"
    print(f"kernelbox doctor: {summary}", file=stream, flush=True)
    return 1 if failed else 0


def _checks() -> Iterator[Check]:
    if sys.platform.startswith("linux"):
        system = list(_linux_checks())
    elif sys.platform == "darwin":
        system = list(_macos_checks())
    else:
        yield Check("platform", "FAIL", f"{sys.platform} is not supported", "use Linux or macOS")
        return
    yield from system
    srt_check, srt = _srt_check()
    yield srt_check
    if srt is None:
        return
    checks = [_node_check(srt)]
    root = srt_package_root(srt)
    if sys.platform.startswith("linux") and root is not None:
        checks.append(_seccomp_helper_check(root))
    if root is not None:
        checks.append(_srt_dependencies_check(srt, root))
    if sys.platform.startswith("linux"):
        checks.append(_sandbox_user_check(srt))
        checks.append(_landlock_check())
    yield from checks
    if any(check.status == "FAIL" for check in [*system, *checks]):
        yield Check("sandboxed run", "FAIL", "not tried: fix the failures above first")
    else:
        yield _end_to_end_check(srt)
    if sys.platform.startswith("linux"):
        yield _cgroups_check()


def _linux_checks() -> Iterator[Check]:
    yield Check("platform", "OK", f"Linux {os.uname().release} ({os.uname().machine})")
    yield _tool_check("bwrap", "bubblewrap", ["--version"])
    yield _tool_check("socat", "socat", ["-V"])
    yield _tool_check("rg", "ripgrep", ["--version"])
    yield _user_namespace_check()


def _macos_checks() -> Iterator[Check]:
    yield Check("platform", "OK", f"macOS {os.uname().release} ({os.uname().machine})")
    found = shutil.which("sandbox-exec") or (
        "/usr/bin/sandbox-exec" if Path("/usr/bin/sandbox-exec").exists() else None
    )
    if found:
        yield Check("sandbox-exec", "OK", f"{found} (Seatbelt)")
    else:
        yield Check("sandbox-exec", "FAIL", "not found", "it ships with macOS; check /usr/bin")
    yield _tool_check("rg", "ripgrep", ["--version"])


def _tool_check(tool: str, package: str, version_args: list[str], fix: str = "") -> Check:
    path = shutil.which(tool)
    fix = fix or f"as root: {system_package_command([tool]) or package}"
    if path is None:
        return Check(tool, "FAIL", "not found on PATH", fix)
    version = _first_line([path, *version_args])
    return Check(tool, "OK", f"{path} ({version})" if version else path)


def _user_namespace_check() -> Check:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Check("user namespaces", "FAIL", "not checked: bwrap is missing")
    failure = user_namespace_failure(bwrap)
    if failure is None:
        return Check("user namespaces", "OK", "bwrap --unshare-user --unshare-net works")
    return Check(
        "user namespaces",
        "FAIL",
        failure,
        "allow unprivileged user namespaces (sysctl -w user.max_user_namespaces=15000; "
        "Ubuntu 24.04+: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)",
    )


def _srt_check() -> tuple[Check, list[str] | None]:
    try:
        srt = find_srt()
    except SandboxError as exc:
        return Check("srt", "FAIL", str(exc).split(";")[0], _srt_fix()), None
    version = _first_line([*srt, "--version"])
    detail = f"{srt[-1]} (version {version or 'unknown'})"
    if version != SRT_VERSION:
        detail += f"; kernelbox is verified with {SRT_VERSION}"
        return Check("srt", "WARN", detail, _srt_fix()), srt
    return Check("srt", "OK", detail), srt


def _srt_fix() -> str:
    return (
        f"kernelbox sandbox install (or kernelbox doctor --fix) installs {SRT_PACKAGE}@{SRT_VERSION} "
        f"for this user"
    )


def _node_check(srt: list[str]) -> Check:
    if len(srt) < 2:
        return Check("node", "OK", "not needed: srt is a standalone executable")
    version = _first_line([srt[0], "--version"])
    match = re.match(r"v(\d+)\.(\d+)", version)
    if match is None:
        return Check("node", "FAIL", f"{srt[0]} did not report a version", "install Node.js >= 20")
    major_minor = (int(match[1]), int(match[2]))
    if major_minor < _MIN_NODE_VERSION:
        return Check("node", "FAIL", f"{srt[0]} {version} is too old", "install Node.js >= 20")
    if major_minor[0] < _VERIFIED_NODE_MAJOR:
        detail = f"{srt[0]} {version}; verified with >= 20"
        return Check("node", "WARN", detail, "install Node.js >= 20")
    return Check("node", "OK", f"{srt[0]} {version}")


def _seccomp_helper_check(root: Path) -> Check:
    helper = seccomp_helper(root)
    if helper is None:
        return Check(
            "seccomp helper", "FAIL", f"srt ships none for {os.uname().machine}",
            "run on x86-64 or arm64",
        )
    if not os.access(helper, os.X_OK):
        return Check("seccomp helper", "FAIL", f"{helper} missing", _srt_fix())
    return Check("seccomp helper", "OK", str(helper))


def _srt_dependencies_check(srt: list[str], root: Path) -> Check:
    """Ask srt itself (``SandboxManager.checkDependencies()``) what it is missing."""
    if len(srt) < 2:
        return Check("srt dependencies", "OK", "not checked: srt is a standalone executable")
    index = (root / "dist" / "index.js").as_uri()
    script = (
        f"const m = await import({json.dumps(index)});"
        "console.log(JSON.stringify(m.SandboxManager.checkDependencies()));"
    )
    output = _output([srt[0], "--input-type=module", "-e", script])
    try:
        report = json.loads(output.strip().splitlines()[-1])
        errors, warnings = list(report["errors"]), list(report["warnings"])
    except (ValueError, IndexError, KeyError, TypeError):
        return Check("srt dependencies", "WARN", f"could not ask srt: {output.strip()[:200]}")
    if errors:
        return Check("srt dependencies", "FAIL", "; ".join(errors), "install what is named")
    if warnings:
        return Check("srt dependencies", "WARN", "; ".join(warnings))
    return Check("srt dependencies", "OK", "srt reports none missing")


def _sandbox_user_check(srt: list[str]) -> Check:
    """As root: the sandbox user exists and can run this Python with kernelbox, and srt."""
    from ..sandbox.user import check_sandbox_user, resolve_sandbox_user

    try:
        user = resolve_sandbox_user(None)
    except SandboxError as exc:
        return Check("sandbox user", "FAIL", str(exc).split(";")[0], str(exc).split("; ", 1)[-1])
    if user is None:
        return Check("sandbox user", "OK", f"not root: the sandbox runs as {_own_user()}")
    try:
        check_sandbox_user(user, working_dir=Path("/tmp"), srt=srt)
    except SandboxError as exc:
        return Check("sandbox user", "FAIL", str(exc), "see the message")
    return Check("sandbox user", "OK", f"{user.name} (uid {user.uid}) can run this Python, kernelbox and srt")


def _own_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _landlock_check() -> Check:
    from .._child.kernel.hardening import landlock_abi

    abi = landlock_abi()
    if abi >= 1:
        return Check("landlock", "OK", f"ABI {abi}: each kernel gets its own domain")
    return Check(
        "landlock", "WARN",
        "unavailable: a new kernel is reachable by its sibling kernels during its ~50 ms start-up",
        "use a Linux kernel >= 5.13 with Landlock enabled (lsm=...,landlock)",
    )


def _cgroups_check() -> Check:
    problems = {name: why for name, why in cgroup_support().items() if why is not None}
    if not problems:
        return Check("cgroups", "OK", "memory_limit and pids_limit can be enforced (memory, pids)")
    detail = "; ".join(f"{name}: {why}" for name, why in problems.items())
    return Check(
        "cgroups", "WARN",
        f"memory_limit/pids_limit would be refused ({detail}); kernel_memory_limit covers only a "
        f"kernel's private memory: shared memory, /dev/shm and child processes are not limited",
        "run as root, or start kernelbox under systemd-run --user --scope -p MemoryMax=... -p TasksMax=...",
    )


def _end_to_end_check(srt: list[str]) -> Check:
    """Run a probe in the sandbox: the stdin socket arrives, AF_UNIX and stray writes fail."""
    with tempfile.TemporaryDirectory(prefix="kernelbox-doctor-") as scratch:
        base = Path(scratch)
        work, state, outside = base / "work", base / "state", base / "outside"
        for directory in (work, state, outside):
            directory.mkdir()
        target = outside / "escape.txt"
        try:
            launch = prepare_sandbox(
                [sys.executable, "-c", _PROBE, str(target)],
                config="default",
                srt_path=None,
                working_dir=work,
                state_dir=state,
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
        except SandboxError as exc:
            return Check("sandboxed run", "FAIL", str(exc).splitlines()[0], "see the checks above")
        with socket.create_server(("127.0.0.1", 0)) as listener:
            output = _output(launch.argv, env=launch.env, cwd=work, stdin=listener.fileno())
        return _judge_probe(output, escaped=target.exists())


def _judge_probe(output: str, *, escaped: bool) -> Check:
    lines = output.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if not result:
        detail = f"srt failed: {output.strip()[-300:]}"
        return Check("sandboxed run", "FAIL", detail, "see the output above")
    detail = ", ".join(f"{key}: {value}" for key, value in result.items())
    weak = result.get("unix_socket") == "allowed" or result.get("write_outside") == "allowed"
    if weak or escaped:
        return Check("sandboxed run", "FAIL", f"sandbox too weak: {detail}", "report this")
    if result.get("stdin_socket") != "listening":
        return Check("sandboxed run", "FAIL", detail, "srt did not pass the stdin socket through")
    return Check("sandboxed run", "OK", detail)


def _first_line(argv: list[str]) -> str:
    """The first output line of `argv` that holds a version number (else the first line)."""
    lines = [line.strip() for line in _output(argv).splitlines() if line.strip()]
    versioned = [line for line in lines if re.search(r"\d+\.\d+", line)]
    return (versioned or lines or [""])[0]


def _output(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = None,
) -> str:
    """stdout + stderr of `argv`, or the error text; never raises.

    The command runs in a session of its own, killed whole on timeout (srt leaves bwrap
    behind when only srt itself is killed).
    """
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return str(exc)
    try:
        output, _ = process.communicate(timeout=_COMMAND_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return f"timed out after {_COMMAND_TIMEOUT_SECONDS:g} s: {output}"
    return output
