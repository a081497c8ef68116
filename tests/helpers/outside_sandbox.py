"""Kernel attack code run as the sandbox's user but *outside* the sandbox: a positive control.

A read or write that fails inside the sandbox proves the sandbox stops it only if the same
code, run by the same uid without the sandbox, succeeds; otherwise file permissions (or
something else) stopped it and the sandbox was never tested. As root the sandbox runs as the
unprivileged sandbox user (`kernelbox.sandbox.user`), so the control runs as that user through
the same ``setpriv`` prefix; otherwise it runs as this process's own uid, as the sandbox does.
It inherits this process's session keyring, as a sandbox would without kernelbox's hardening.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import anyio

from kernelbox.sandbox.user import drop_privileges_argv, resolve_sandbox_user

RUN_TIMEOUT_SECONDS = 60.0


async def run_as_sandbox_user(code: str, cwd: Path | None = None) -> str:
    """Run `code` (dedented) with this Python as the sandbox's uid, unsandboxed; return stdout.

    Raises:
        AssertionError: the code exited with a non-zero status (its stderr in the message).
        TimeoutError: it ran longer than `RUN_TIMEOUT_SECONDS`.
    """
    user = resolve_sandbox_user(None)
    prefix = drop_privileges_argv(user) if user is not None else []
    argv = [*prefix, sys.executable, "-I", "-c", textwrap.dedent(code)]
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    with anyio.fail_after(RUN_TIMEOUT_SECONDS):
        completed = await anyio.run_process(argv, env=env, cwd=cwd or "/", check=False)
    stdout = completed.stdout.decode(errors="replace")
    assert completed.returncode == 0, f"{stdout}\n{completed.stderr.decode(errors='replace')}"
    return stdout.strip()
