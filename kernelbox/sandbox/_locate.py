"""Finding sandbox-runtime (`srt`): the argv that runs it, and where its npm package lives."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import platformdirs

from .._errors import SandboxUnavailableError

__all__ = [
    "SRT_ENV_VAR",
    "SRT_PACKAGE",
    "SRT_VERSION",
    "find_srt",
    "srt_install_hint",
    "srt_package_root",
    "user_srt_path",
    "user_srt_prefix",
]

SRT_PACKAGE = "@anthropic-ai/sandbox-runtime"
SRT_VERSION = "0.0.83"
SRT_ENV_VAR = "KERNELBOX_SRT"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_SOURCE_ROOT = _PACKAGE_DIR.parent
_LOCAL_SRT_PREFIX = _SOURCE_ROOT / ".tools" / "srt"
_LOCAL_SRT = _LOCAL_SRT_PREFIX / "node_modules" / ".bin" / "srt"


def user_srt_prefix(version: str = SRT_VERSION) -> Path:
    """The npm prefix of the srt that ``kernelbox sandbox install`` makes: ``<data dir>/kernelbox/srt/<version>``.

    The data directory is the platform's (platformdirs): for a normal user the user data
    directory (``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux, ``~/Library/Application
    Support`` on macOS); for root the site data directory (the first of ``$XDG_DATA_DIRS``,
    by default ``/usr/local/share``), because a root supervisor runs the sandbox as the
    unprivileged ``kernelbox-sandbox`` user, which must be able to read srt, and root's own
    home is private to it.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        base = platformdirs.site_data_path("kernelbox", appauthor=False, multipath=False)
    else:
        base = platformdirs.user_data_path("kernelbox", appauthor=False)
    return base / "srt" / version


def user_srt_path(version: str = SRT_VERSION) -> Path:
    """The per-user srt that ``kernelbox sandbox install`` puts there (it may not exist)."""
    return user_srt_prefix(version) / "node_modules" / ".bin" / "srt"


def srt_install_hint() -> str:
    """How to get srt, as the end of an error message."""
    return (
        f"install the pinned {SRT_PACKAGE}@{SRT_VERSION} for this user with "
        f"`kernelbox sandbox install` (needs Node.js >= 20 and npm), or point ${SRT_ENV_VAR} "
        f"at an srt executable"
    )


def find_srt(explicit: str | os.PathLike[str] | None = None) -> list[str]:
    """Locate sandbox-runtime's ``srt`` and return the argv prefix that runs it.

    Looks, in order, at `explicit`, ``$KERNELBOX_SRT``, the copy a kernelbox source checkout
    installs (``<checkout>/.tools/srt/node_modules/.bin/srt``, made by
    ``scripts/install-sandbox-prereqs.sh``; never present in an installed wheel), the
    per-user install of the pinned version (`user_srt_path`, made by ``kernelbox sandbox
    install``) and ``srt`` on ``PATH``. An explicit path or a set variable that does not exist
    is an error, not a reason to look further.

    Args:
        explicit: a path to the srt executable (or its ``cli.js``), or None.

    Returns:
        ``[node, /abs/path/dist/cli.js]`` for the npm package (so the srt process does not
        depend on ``node`` being on its ``PATH``), or ``[/abs/path/srt]`` for anything else.

    Raises:
        SandboxUnavailableError: srt (or the Node.js it needs) was not found; the message says
            where it looked and how to install it.
    """
    if explicit is not None:
        return _srt_argv(Path(os.fspath(explicit)).expanduser(), "the srt_path argument")
    from_env = os.environ.get(SRT_ENV_VAR)
    if from_env:
        return _srt_argv(Path(from_env).expanduser(), f"${SRT_ENV_VAR}")
    if _LOCAL_SRT.exists() and (_SOURCE_ROOT / "pyproject.toml").is_file():
        return _srt_argv(_LOCAL_SRT, "the source checkout's install")
    user_srt = user_srt_path()
    if user_srt.exists():
        return _srt_argv(user_srt, "the per-user install")
    on_path = shutil.which("srt")
    if on_path:
        return _srt_argv(Path(on_path), "PATH")
    raise SandboxUnavailableError(
        f"sandbox-runtime (srt) was not found: looked at the srt_path argument (not given), "
        f"${SRT_ENV_VAR} (not set), {user_srt} (missing) and `srt` on PATH (not found); "
        f"{srt_install_hint()}"
    )


def _srt_argv(path: Path, origin: str) -> list[str]:
    if not path.is_file():
        raise SandboxUnavailableError(
            f"srt from {origin} does not exist or is not a file: {path}; {srt_install_hint()}"
        )
    real = path.resolve()
    if not _is_node_script(real):
        if not os.access(real, os.X_OK):
            raise SandboxUnavailableError(f"srt from {origin} is not executable: {path}")
        return [str(real)]
    node = shutil.which("node")
    if node is None:
        raise SandboxUnavailableError(
            f"srt ({real}) needs Node.js, but `node` is not on PATH; install Node.js >= 20 "
            f"(Debian: apt-get install nodejs npm)"
        )
    return [node, str(real)]


def _is_node_script(path: Path) -> bool:
    if path.suffix in (".js", ".mjs", ".cjs"):
        return True
    try:
        with path.open("rb") as file:
            first_line = file.readline(200)
    except OSError:
        return False
    return first_line.startswith(b"#!") and b"node" in first_line


def srt_package_root(srt: Sequence[str]) -> Path | None:
    """The npm package directory of an srt argv from `find_srt` (None if not the npm package)."""
    script = Path(srt[-1])
    if script.name == "cli.js" and script.parent.name == "dist":
        root = script.parent.parent
        if (root / "package.json").is_file():
            return root
    return None
