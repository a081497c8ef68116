"""The unprivileged user a sandbox runs as when the supervisor is root.

As root, srt's user namespace maps uid 0 inside to host uid 0 (measured with srt 0.0.83 and
bubblewrap 0.8): kernel code could write ``/proc/sys`` (whose checks are "euid is host root"),
and it holds CAP_SYS_PTRACE over the namespace, which defeats ``PR_SET_DUMPABLE``. srt and
bubblewrap run unprivileged through user namespaces, so a root supervisor runs srt as a
dedicated system user instead, with::

    setpriv --reuid=UID --regid=GID --clear-groups --no-new-privs -- node srt/dist/cli.js ...

Dropping privileges *inside* srt does not work (only uid 0 is mapped there:
``setpriv: setresuid failed: Invalid argument``). kernelbox never falls back to running the
sandbox as root: a missing user, a working directory it cannot write, or an interpreter it
cannot execute is refused before anything starts, with the fix.

The user is ``kernelbox-sandbox`` (created by ``scripts/install-sandbox-prereqs.sh`` run as
root), or the name in ``$KERNELBOX_SANDBOX_USER``, or the ``sandbox_user`` option. Not
``nobody``: files owned by nobody are shared with other daemons, and an NFS or idmapped nobody
means "unmapped".
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import SandboxConfigError, SandboxUnavailableError

__all__ = [
    "DEFAULT_SANDBOX_USER",
    "SANDBOX_USER_ENV_VAR",
    "SandboxUser",
    "check_sandbox_user",
    "drop_privileges_argv",
    "hand_over_state_dir",
    "resolve_sandbox_user",
]

_logger = logging.getLogger("kernelbox.sandbox")
DEFAULT_SANDBOX_USER = "kernelbox-sandbox"
SANDBOX_USER_ENV_VAR = "KERNELBOX_SANDBOX_USER"
_CHECK_TIMEOUT_SECONDS = 30.0
_USERADD = "useradd --system --no-create-home --shell /usr/sbin/nologin {name}"
# What the gateway imports: if the user can import these, it can run the gateway.
_IMPORT_PROBE = "import kernelbox._child.gateway.app, ipykernel.kernelapp"
_interpreters_checked: set[tuple[int, str]] = set()


@dataclass(frozen=True)
class SandboxUser:
    """An account to run the sandbox as.

    Attributes:
        name: the user name.
        uid, gid: its numeric user and primary group ids.
    """

    name: str
    uid: int
    gid: int


def resolve_sandbox_user(requested: str | None) -> SandboxUser | None:
    """The user a sandbox started by this process must run as, or None to keep our own uid.

    Args:
        requested: a user name (the ``sandbox_user`` option), or None for
            ``$KERNELBOX_SANDBOX_USER`` or else ``kernelbox-sandbox``.

    Returns:
        None when this process is not root (it is already unprivileged; the sandbox runs as
        this uid). Otherwise the user, which must exist and must not be root.

    Raises:
        SandboxUnavailableError: running as root and the user does not exist.
        SandboxConfigError: the user is root (uid 0), or a user other than our own was asked
            for without root (switching users needs root).
    """
    import pwd  # POSIX only; the sandbox is refused elsewhere before this runs

    name = requested or os.environ.get(SANDBOX_USER_ENV_VAR) or DEFAULT_SANDBOX_USER
    if os.geteuid() != 0:
        own = pwd.getpwuid(os.geteuid()).pw_name
        if requested is not None and requested != own:
            raise SandboxConfigError(
                f"sandbox_user={requested!r} needs root: this process runs as {own!r}, and the "
                f"sandbox runs as that user (remove sandbox_user, or start kernelbox as root)"
            )
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxUnavailableError(
            f"running as root, the sandbox runs as the unprivileged user {name!r}, which does "
            f"not exist; create it: {_USERADD.format(name=name)} (scripts/install-sandbox-prereqs.sh "
            f"does this when run as root), or name another user with sandbox_user= / "
            f"--sandbox-user / ${SANDBOX_USER_ENV_VAR}"
        ) from None
    if entry.pw_uid == 0:
        raise SandboxConfigError(
            f"the sandbox user {name!r} has uid 0: the sandbox never runs as root (kernel code "
            f"could write /proc/sys and trace the gateway); use an unprivileged user"
        )
    return SandboxUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def drop_privileges_argv(user: SandboxUser) -> list[str]:
    """The ``setpriv`` prefix that runs the rest of an argv as `user`, with no groups and
    ``no_new_privs`` (util-linux ``setpriv``; Debian ships it in the essential util-linux).

    Raises:
        SandboxUnavailableError: ``setpriv`` is not on ``PATH``.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SandboxUnavailableError(
            "running as root, the sandbox drops privileges with setpriv, which is not on PATH; "
            "install util-linux (Debian: apt-get install util-linux)"
        )
    return [
        setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--no-new-privs", "--",
    ]


def check_sandbox_user(user: SandboxUser, *, working_dir: Path, srt: Sequence[str]) -> None:
    """Check, as `user`, that it can write the working directory and run the gateway.

    Runs ``test -w`` and the interpreter as the user (so ACLs and every path component's mode
    count); the interpreter check (~150 ms) is remembered for the life of the process.

    Raises:
        SandboxConfigError: the working directory is not writable (and traversable) for it.
        SandboxUnavailableError: it cannot execute srt's files or this Python, or cannot
            import kernelbox and ipykernel with it.
    """
    prefix = drop_privileges_argv(user)
    if not _can_write(user, working_dir):
        _grant_working_dir(user, working_dir)
    if not _can_write(user, working_dir):
        owner = _owner(working_dir)
        raise SandboxConfigError(
            f"the working directory {working_dir} is not writable for the sandbox user "
            f"{user.name!r} (uid {user.uid}; the directory's owner is {owner}), and granting it "
            f"access with an ACL entry did not work (is setfacl installed, Debian package acl, "
            f"and does the file system support ACLs?); kernels run as that user: chown "
            f"{user.name} {working_dir} (and let it traverse the parents), or choose a working "
            f"directory it owns"
        )
    for path in srt:
        if _run([*prefix, "test", "-r", path]).returncode != 0:
            raise SandboxUnavailableError(
                f"the sandbox user {user.name!r} cannot read {path} (srt); make it readable "
                f"for that user, or install srt outside a private directory"
            )
    key = (user.uid, sys.executable)
    if key in _interpreters_checked:
        return
    completed = _run([*prefix, sys.executable, "-I", "-c", _IMPORT_PROBE])
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        blocked = _first_closed_component(user, Path(os.path.realpath(sys.executable)))
        hint = (
            f"it cannot enter {blocked}: grant it traverse permission only "
            f"(setfacl -m u:{user.name}:x {blocked}; scripts/install-sandbox-prereqs.sh does this "
            f"as root), or install Python outside root's home"
            if blocked is not None
            else "make the Python installation and kernelbox readable for it"
        )
        raise SandboxUnavailableError(
            f"the sandbox user {user.name!r} cannot run this Python ({sys.executable}) with "
            f"kernelbox: {detail[-1] if detail else f'exit status {completed.returncode}'}; {hint}"
        )
    _interpreters_checked.add(key)


def _can_write(user: SandboxUser, directory: Path) -> bool:
    argv = [*drop_privileges_argv(user), "test", "-w", str(directory), "-a", "-x", str(directory)]
    return _run(argv).returncode == 0


def _grant_working_dir(user: SandboxUser, working_dir: Path) -> None:
    """Let `user` use a working directory it cannot write (as root: e.g. a root-owned project).

    Adds ACL entries, never changing owners or modes: ``u:USER:rwx`` on the directory and the
    same as its default ACL (files and directories the kernels create inherit it, and the
    supervisor, root, keeps full access to them), and ``u:USER:x`` (traverse only) on each
    closed parent. Logged once per directory. Files that existed before keep their modes:
    kernels can read what is world-readable and write only what they create.
    """
    if os.geteuid() != 0 or shutil.which("setfacl") is None:
        return
    changes = [(parent, "x") for parent in _closed_parents(user, working_dir)]
    changes.append((working_dir, "rwx"))
    for directory, permissions in changes:
        argv = ["setfacl", "-m", f"u:{user.name}:{permissions}"]
        if directory == working_dir:
            argv[-1] += f",d:u:{user.name}:rwx"
        if _run([*argv, str(directory)]).returncode == 0:
            _logger.info(
                "Granted the sandbox user %s %s on %s with an ACL entry (%s)",
                user.name, "read, write and traverse" if permissions == "rwx" else "traverse",
                directory, " ".join([*argv, str(directory)]),
            )


def _closed_parents(user: SandboxUser, path: Path) -> list[Path]:
    prefix = drop_privileges_argv(user)
    return [parent for parent in reversed(path.parents) if _run([*prefix, "test", "-x", str(parent)]).returncode != 0]


def hand_over_state_dir(user: SandboxUser, state_dir: Path, writable: Iterable[str], readable_files: Iterable[Path]) -> None:
    """Give `user` what it needs of the state directory, and nothing more.

    The state directory itself stays root's (mode 0755: the user may enter, not create), so
    do the kernelspec directory and the settings file (0644: srt, running as the user, must
    read it; measured: srt refuses an unreadable file with EACCES). The `writable`
    subdirectories are the user's.
    """
    os.chmod(state_dir, 0o755)
    for name in writable:
        path = state_dir / name
        path.mkdir(exist_ok=True)
        os.chown(path, user.uid, user.gid)
        os.chmod(path, 0o700)
    for path in readable_files:
        os.chmod(path, 0o644)


def _first_closed_component(user: SandboxUser, path: Path) -> Path | None:
    """The first directory on the way to `path` that `user` cannot traverse, if any."""
    prefix = drop_privileges_argv(user)
    for parent in reversed(path.parents):
        if _run([*prefix, "test", "-x", str(parent)]).returncode != 0:
            return parent
    return None


def _owner(path: Path) -> str:
    import pwd

    try:
        uid = path.stat().st_uid
    except OSError as exc:
        return f"unknown ({exc.strerror})"
    try:
        return f"{pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=_CHECK_TIMEOUT_SECONDS, check=False, cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 126, "", str(exc))
