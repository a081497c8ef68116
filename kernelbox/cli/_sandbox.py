"""`kernelbox sandbox install` (also run by `kernelbox doctor --fix`): set up the sandbox.

Installs the pinned srt for this user (no root needed) and prints, without running it, the
system-package command for what needs root. Nothing is installed unless this is asked for.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .._errors import SandboxUnavailableError
from ..sandbox._install import install_srt, missing_system_tools, system_package_command

__all__ = ["sandbox_install"]

_NODE_NOTE = "srt needs Node.js >= 20 (Debian 12 ships 18: https://nodejs.org/en/download/package-manager)"


def sandbox_install(stream: TextIO | None = None, *, force: bool = False) -> int:
    """Install the pinned srt for this user; print the command for missing system packages.

    Returns:
        0 when srt is installed and no system package is missing, 1 otherwise.
    """
    stream = sys.stdout if stream is None else stream

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    missing = missing_system_tools()
    command = system_package_command(missing)
    if command is not None:
        say(f"Missing system packages for the sandbox ({', '.join(missing)}); run as root:")
        say(f"    {command}")
        if "node" in missing or "npm" in missing:
            say(f"    ({_NODE_NOTE})")
            say("then run `kernelbox sandbox install` again.")
            return 1
    try:
        install_srt(force=force, progress=say)
    except SandboxUnavailableError as exc:
        say(f"kernelbox: {exc}")
        return 1
    say("Check the whole sandbox with: kernelbox doctor")
    return 0 if command is None else 1
