"""Launching a command inside sandbox-runtime (`srt`): the state directory, environment and argv.

kernelbox runs a sandboxed gateway as ``srt --settings <effective settings> -- <command>``;
see `kernelbox.sandbox` for the facts about srt this relies on.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import site
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import SandboxConfigError
from ._locate import find_srt, srt_package_root
from .prerequisites import check_sandbox_prerequisites
from .settings import SandboxLayout, effective_settings, load_sandbox_settings
from .user import SandboxUser, check_sandbox_user, drop_privileges_argv, hand_over_state_dir
from .view import view_read_paths

__all__ = [
    "KERNELSPEC_DIR_NAME",
    "STATE_SUBDIRS",
    "SandboxLaunch",
    "allow_local_binding",
    "host_code_paths",
    "prepare_sandbox",
    "host_code_in",
    "sandbox_env",
]

SETTINGS_FILE_NAME = "sandbox-settings.json"
# The state subdirectory holding the bubblewrap wrapper (`write_bwrap_wrapper`): written by the
# supervisor, run outside the sandbox at every (re)start, so read-only inside.
BIN_DIR_NAME = "bin"
# Each host directory the view hides is an empty tmpfs inside: writable, private, and capped.
HIDDEN_TMPFS_BYTES = 64 * 1024 * 1024
# The state subdirectory holding the kernelspec (written by the supervisor): read-only inside,
# or kernel code could change how the next kernels start (and skip their hardening).
KERNELSPEC_DIR_NAME = "jupyter"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent

# The per-gateway state directory's layout: subdirectory -> environment variables set to it.
STATE_SUBDIRS: dict[str, tuple[str, ...]] = {
    "home": ("HOME",),
    "runtime": ("JUPYTER_RUNTIME_DIR",),
    "ipython": ("IPYTHONDIR",),
    "matplotlib": ("MPLCONFIGDIR",),
    # srt sets TMPDIR from CLAUDE_CODE_TMPDIR inside; its default /tmp/claude may not exist.
    "tmp": ("CLAUDE_CODE_TMPDIR", "TMPDIR"),
    # `%pip install` cannot write into a read-only site-packages, and a venv ignores the user
    # site; so pip installs here (PIP_TARGET), and the kernel launcher puts it on the kernels'
    # sys.path (never on the gateway's: it runs with -I).
    "site-packages": ("PIP_TARGET",),
    # isolate_kernels: one directory per kernel (its HOME, TMPDIR, PIP_TARGET, ...).
    "kernels": (),
}


def sandbox_env(env: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """The srt process's environment: `env` with the state directories set.

    srt passes its environment on to the command (adding its proxy variables), so this is
    also the gateway's and its kernels' base environment.

    Args:
        env: the environment the gateway would get unsandboxed.
        state_dir: the per-gateway state directory.

    Returns:
        A new dict: `env`, ``PATH`` (when `env` has none), and ``HOME``, ``JUPYTER_RUNTIME_DIR``,
        ``IPYTHONDIR``, ``MPLCONFIGDIR``, ``CLAUDE_CODE_TMPDIR``, ``TMPDIR``, ``PIP_TARGET``
        pointing into `state_dir`, and ``JUPYTER_NO_CONFIG=1``.
    """
    result = dict(env)
    result.setdefault("PATH", os.environ.get("PATH", os.defpath))
    for subdir, names in STATE_SUBDIRS.items():
        for name in names:
            result[name] = str(state_dir / subdir)
    # HOME is the state directory, which kernels can write: without this a kernel could drop a
    # ~/.jupyter/jupyter_*_config.py that a restarted gateway would run (with its token).
    # jupyter_core then reads config from a fresh empty directory only.
    result["JUPYTER_NO_CONFIG"] = "1"
    return result


# -- what the host executes: never inside the working directory ---------------------------------


def host_code_paths(srt: Sequence[str], env: Mapping[str, str]) -> list[Path]:
    """Paths whose contents this host runs later, outside the sandbox.

    Every ``sys.path`` entry of this interpreter (an editable install puts the checkout there;
    a planted ``sitecustomize.py`` or ``*.pth`` would run in every later Python), the user site
    directory (even before it exists), ``sys.prefix``/``base_prefix``, the kernelbox package,
    the ``node_modules`` directory holding srt (node loads srt's dependencies from it, as root),
    the node binary, and the real home directories (shell start-up files).
    """
    paths = [Path(entry) for entry in sys.path if entry]
    if site.ENABLE_USER_SITE:
        paths.append(Path(site.getusersitepackages()))
    paths += [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), _PACKAGE_DIR]
    root = srt_package_root(srt)
    if root is not None:
        modules = root.parent.parent if root.parent.name.startswith("@") else root.parent
        paths += [root, modules]
    if len(srt) >= 2:
        paths.append(Path(srt[0]))
    paths += real_home_dirs(env)
    resolved: list[Path] = []
    for path in paths:
        absolute = Path(os.path.realpath(path))
        if absolute not in resolved:
            resolved.append(absolute)
    return resolved


def host_code_in(working_dir: Path, srt: Sequence[str], env: Mapping[str, str]) -> list[Path]:
    """The host code inside the working directory, to be made read-only inside the sandbox.

    A project directory often holds its own virtual environment (``~/proj/.venv``): that is
    protected by showing it read-only inside, as srt does for ``.git/hooks``. Kernels can
    still create new files anywhere else in the working directory, so what cannot be protected
    that way is refused: a working directory that *is* host code (a ``sys.path`` entry, where
    a new ``usercustomize.py`` or ``*.pth`` would run in every later Python), or a host path
    inside it that does not exist yet (it could be created).

    Returns:
        The existing host paths strictly inside `working_dir`, resolved (empty for a
        dedicated directory).

    Raises:
        SandboxConfigError: naming the host path and the fix.
    """
    working_dir = Path(os.path.realpath(working_dir))
    if working_dir == Path(working_dir.anchor):
        raise SandboxConfigError(
            f"the working directory {working_dir} is the root directory, which holds everything "
            f"this host runs; use a dedicated directory for the kernels' files"
        )
    inside: list[Path] = []
    for path in host_code_paths(srt, env):
        if working_dir == path:
            raise SandboxConfigError(
                f"the working directory {working_dir} is {path}, which this host runs "
                f"outside the sandbox (kernel code could plant code there, e.g. a "
                f"sitecustomize.py); use a dedicated directory for the kernels' files"
            )
        if path.is_relative_to(working_dir):
            inside.append(path)
    protected = [path for path in inside if os.path.lexists(path)]
    for path in inside:
        if not any(path.is_relative_to(root) for root in protected):
            raise SandboxConfigError(
                f"the working directory {working_dir} would hold {path}, which this host runs "
                f"outside the sandbox, but it does not exist yet, so it cannot be shown "
                f"read-only (kernel code could create it); create it first, or use a "
                f"dedicated directory for the kernels' files"
            )
    return protected


# -- putting it together --------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxLaunch:
    """What to spawn for a sandboxed command.

    Attributes:
        argv: the full argv: the srt prefix, ``--settings <settings_path> --`` and the command.
        env: the srt process's environment; srt passes it (plus its proxy variables) to the
            command, so the gateway and its kernels inherit it.
        settings_path: the effective settings JSON, written inside the state directory.
    """

    argv: list[str]
    env: dict[str, str]
    settings_path: Path


def prepare_sandbox(
    command: Sequence[str],
    *,
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
    srt_path: str | os.PathLike[str] | None,
    working_dir: Path,
    state_dir: Path,
    env: Mapping[str, str],
    user: SandboxUser | None = None,
    read_paths: Sequence[Path] = (),
    write_paths: Sequence[Path] = (),
    shm_size: int | None = None,
) -> SandboxLaunch:
    """Validate the settings, check the machine, write the effective settings, build the launch.

    Call it for every (re)start: it rewrites the settings file from the validated source, so
    a restarted gateway never runs under a file that something else changed.

    Args:
        command: the command to run inside, e.g.
            ``[sys.executable, "-m", "kernelbox._child.gateway"]``. Pass the listening socket as
            the spawned process's stdin; srt hands it on.
        config: see `load_sandbox_settings`.
        srt_path: see `find_srt`.
        working_dir: the kernels' working directory; writable inside. Spawn srt with this cwd.
        state_dir: an existing per-gateway directory; writable inside. Gets the subdirectories
            ``home``, ``runtime``, ``ipython``, ``matplotlib``, ``tmp``, ``site-packages`` and the
            settings file ``sandbox-settings.json``.
        env: the environment the command would get unsandboxed (see `sandbox_env`).
        user: run srt as this user (`kernelbox.sandbox.user`; a root supervisor must pass
            one), or None to run it as this process's uid.
        read_paths: more host paths shown read-only inside (Linux: nothing else outside the
            view of `kernelbox.sandbox.view` is shown).
        write_paths: more host directories writable inside (shared by all kernels).
        shm_size: bytes of the sandbox's own ``/dev/shm`` (Linux), or None for srt's.

    Returns:
        The argv, environment and settings path to spawn with.

    Raises:
        ValueError: `command` is empty.
        SandboxConfigError: the settings are invalid, or the working directory contains host
            code or is not writable for `user` (nothing has been spawned).
        SandboxUnavailableError: srt or a prerequisite is missing, or `user` cannot run it.
    """
    if not command:
        raise ValueError("prepare_sandbox() needs a command to run inside the sandbox")
    settings = load_sandbox_settings(config)
    srt = find_srt(srt_path)
    check_sandbox_prerequisites(srt)
    working_dir = Path(working_dir).resolve()
    state_dir = Path(state_dir).resolve()
    write_paths = [Path(path).resolve() for path in write_paths]
    read_only_host_code = [
        path for directory in (working_dir, *write_paths) for path in host_code_in(directory, srt, env)
    ]
    if user is not None:
        check_sandbox_user(user, working_dir=working_dir, srt=srt)
    for subdir in [*STATE_SUBDIRS, KERNELSPEC_DIR_NAME, BIN_DIR_NAME]:
        (state_dir / subdir).mkdir(parents=True, exist_ok=True)
    runtime = runtime_dirs(srt)
    layout = SandboxLayout(
        working_dir=working_dir,
        state_dir=state_dir,
        settings_path=state_dir / SETTINGS_FILE_NAME,
        home_dirs=real_home_dirs(env),
        runtime_dirs=runtime,
        read_only_dirs=(state_dir / KERNELSPEC_DIR_NAME, state_dir / BIN_DIR_NAME, *read_only_host_code),
        view=tuple(view_read_paths([*runtime, *read_paths])) if sys.platform.startswith("linux") else (),
        write_paths=tuple(write_paths),
        extra_roots=tuple(
            path for path in (*map(Path, read_paths), *write_paths) if Path(path).is_dir()
        ),
    )
    effective = effective_settings(settings, layout)
    if sys.platform.startswith("linux"):
        effective = pin_linux_tools(effective)
        if "bwrapPath" in effective:
            effective["bwrapPath"] = str(
                write_bwrap_wrapper(state_dir / BIN_DIR_NAME, effective["bwrapPath"], shm_bytes=shm_size)
            )
    elif sys.platform == "darwin":
        effective = allow_local_binding(effective)
    _write_json_atomically(layout.settings_path, effective)
    argv = [*srt, "--settings", str(layout.settings_path), "--", *command]
    if user is not None:
        hand_over_state_dir(user, state_dir, STATE_SUBDIRS, [layout.settings_path])
        argv = [*drop_privileges_argv(user), *argv]
    launch_env = sandbox_env(env, state_dir)
    return SandboxLaunch(argv=argv, env=launch_env, settings_path=layout.settings_path)


_BWRAP_WRAPPER = """#!/bin/sh
# Written by kernelbox for one gateway's sandbox. srt has no setting for the size of the tmpfs
# mounts it asks bubblewrap for, so this adds one: {hidden} bytes for each (the host
# directories the view hides){shm_note}. Everything else is passed on unchanged.
prev=
rewrite=1
for arg do
    shift
    if [ "$rewrite" = 1 ] && [ "$arg" = --tmpfs ] && [ "$prev" != --size ]; then
        set -- "$@" --size {hidden}
    fi
    set -- "$@" "$arg"
    if [ "$rewrite" = 1 ] && [ "$prev" = --dev ] && [ "$arg" = /dev ]; then
        {shm_args}
    fi
    [ "$arg" = -- ] && rewrite=0
    prev=$arg
done
exec {bwrap} "$@"
"""


def write_bwrap_wrapper(directory: Path, bwrap: str, *, shm_bytes: int | None) -> Path:
    """Write the bubblewrap wrapper that bounds the sandbox's tmpfs mounts; return its path.

    bubblewrap 0.8 takes ``--size BYTES`` before ``--tmpfs``; srt 0.0.83 passes ``--tmpfs``
    (for every hidden host directory) and ``--dev /dev`` (whose ``/dev/shm`` is a directory of
    an unbounded tmpfs) on bubblewrap's command line, which the wrapper rewrites. Used through
    srt's own ``bwrapPath`` setting.

    Args:
        directory: where to write it (read-only inside the sandbox).
        bwrap: the real bubblewrap, an absolute path.
        shm_bytes: size of a tmpfs of its own on ``/dev/shm`` (mode 1777), or None for
            bubblewrap's ``/dev`` as it is.
    """
    shm_args = (
        f"set -- \"$@\" --perms 1777 --size {shm_bytes} --tmpfs /dev/shm" if shm_bytes is not None else ":"
    )
    shm_note = f", and {shm_bytes} bytes for /dev/shm" if shm_bytes is not None else ""
    text = _BWRAP_WRAPPER.format(
        hidden=HIDDEN_TMPFS_BYTES, shm_note=shm_note, shm_args=shm_args, bwrap=shlex.quote(bwrap)
    )
    path = directory / "bwrap"
    temporary = directory / ".bwrap.new"
    temporary.unlink(missing_ok=True)
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)
    return path


def real_home_dirs(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The home directories that ``~`` stands for: this process's, `env`'s and the account's."""
    candidates = [os.path.expanduser("~"), env.get("HOME", ""), _account_home()]
    homes: list[Path] = []
    for candidate in candidates:
        if candidate and candidate != "~" and Path(candidate).is_absolute():
            home = Path(candidate)
            if home not in homes:
                homes.append(home)
    return tuple(homes)


def _account_home() -> str:
    """The home directory in the user database ("" where there is none, e.g. Windows)."""
    try:
        import pwd  # POSIX only; sandboxing is refused elsewhere, after this runs

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return ""


def runtime_dirs(srt: Sequence[str]) -> tuple[Path, ...]:
    """The Python installation, the kernelbox package and srt's package (when known)."""
    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), _PACKAGE_DIR]
    root = srt_package_root(srt)
    if root is not None:
        paths.append(root)
    result: list[Path] = []
    for path in paths:
        resolved = path.resolve()
        if resolved not in result:
            result.append(resolved)
    return tuple(result)


def pin_linux_tools(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Pin ``bwrapPath``, ``socatPath`` and ``ripgrep`` to absolute paths found on our PATH.

    srt would otherwise look them up on the srt process's ``PATH``, which is the kernels'
    ``PATH`` and may differ from ours. Keys the user set are kept.
    """
    result = dict(settings)
    for key, tool in (("bwrapPath", "bwrap"), ("socatPath", "socat")):
        found = shutil.which(tool)
        if found and key not in result:
            result[key] = os.path.abspath(found)
    rg = shutil.which("rg")
    if rg and "ripgrep" not in result:
        result["ripgrep"] = {"command": os.path.abspath(rg)}
    return result


def allow_local_binding(settings: Mapping[str, Any]) -> dict[str, Any]:
    """macOS: let the gateway accept on its socket and its kernels use loopback TCP (ZMQ).

    Seatbelt has no network namespace: without ``network.allowLocalBinding`` the profile
    srt generates allows loopback only to its proxy ports (``macos-sandbox-utils.js``), so
    neither the gateway's ``accept()`` nor the kernels' ZMQ sockets would work. The price,
    on macOS only, is that kernel code can also connect to services on the host's loopback.
    Not verified on a Mac (none here). An explicit setting in the user's file is kept.
    """
    result: dict[str, Any] = json.loads(json.dumps(settings))
    result.setdefault("network", {}).setdefault("allowLocalBinding", True)
    return result


def _write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` to `path` via a new file and a rename.

    The rename replaces the directory entry itself, so a symlink planted at `path` (the state
    directory is writable from inside the sandbox) is replaced, never followed.
    """
    fd, temporary = tempfile.mkstemp(prefix=".sandbox-settings-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
