"""Process hardening for the gateway process and every kernel (Linux; runs in child processes).

What each step stops, when the sandbox runs as an unprivileged uid (see the README's threat
model; as root inside the sandbox, CAP_SYS_PTRACE over the namespace overrides all of it):

- `make_undumpable`: ``prctl(PR_SET_DUMPABLE, 0)``. Other processes of the same uid lose
  ``/proc/<pid>/{environ,mem}``, ``ptrace``, ``pidfd_getfd`` and ``process_vm_readv`` on this
  one (the "ptrace access mode" checks of ptrace(2)). ``execve`` resets it, so every process
  calls it itself.
- `join_new_session_keyring`: ``keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)``. Leaves the
  session keyring inherited from the supervisor (its keys stay visible in ``/proc/keys`` but
  can no longer be read: possession goes with the session keyring, keyrings(7)).
- `enter_own_landlock_domain`: a Landlock domain of this process's own (landlock(7)). Landlock
  refuses ptrace-mode access (``/proc/<pid>/mem``, ``environ``, ``ptrace``, ``pidfd_getfd``) to
  any process outside the caller's domain or its descendants, and, with ABI 6+, signals to
  them. A kernel in its own domain therefore cannot reach a sibling kernel *even during that
  sibling's start-up*, before the sibling made itself undumpable; without it, that ~50 ms
  window is open to a kernel polling ``/proc`` (the sibling's ``/proc/<pid>/mem`` opened in the
  window keeps working afterwards).

- `restrict_filesystem`: a second Landlock layer with path rules: an allow-list of what this
  process and its children may read, write and execute. Used for kernels that are tenants of
  their own (``isolate_kernels``): each sees only its own directories among the gateway's.

Syscall numbers are the generic ones shared by x86-64 and arm64 for Landlock (444-446), and
per architecture for keyctl.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Sequence

__all__ = [
    "LandlockUnavailableError",
    "enter_own_landlock_domain",
    "join_new_session_keyring",
    "make_undumpable",
    "raise_oom_score",
    "restrict_filesystem",
]

_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_KEYCTL_JOIN_SESSION_KEYRING = 1
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_RULE_PATH_BENEATH = 1
# landlock(7): the filesystem rights, and the ABI version that introduced each.
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_FS_ALL_RIGHTS = (1 << 16) - 1  # ABI 5 and later (REFER is 1 << 13, from ABI 2)
_FS_READ_ONLY = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
# Device files: read and write them (/dev/null, /dev/tty, /dev/urandom), list /dev, truncate
# (O_TRUNC on /dev/null) and ioctl (terminals); never create or remove device nodes.
_FS_DEVICES = _FS_READ_ONLY | _FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
# Landlock needs ABI 2 for rename and link across directories (REFER): with ABI 1 a ruleset
# that handles the filesystem refuses every such rename, which breaks pip and many tools.
MIN_FILESYSTEM_ABI = 2
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_ACCESS_FS_MAKE_BLOCK = 1 << 11
_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_LANDLOCK_SCOPE_SIGNAL = 1 << 1
_OOM_SCORE_ADJ_MAX = 1000


class LandlockUnavailableError(OSError):
    """The running Linux kernel has no usable Landlock (disabled, or older than 5.13)."""


class _PathBeneathAttr(ctypes.Structure):
    # struct landlock_path_beneath_attr: __u64 allowed_access; __s32 parent_fd; (packed)
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    # struct landlock_ruleset_attr (ABI 6: handled_access_fs, handled_access_net, scoped)
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what} failed: {os.strerror(code)}")
    return result


def make_undumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)`` for this process (see the module docstring).

    Raises:
        OSError: the prctl failed.
    """
    _check(_libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE, 0)")


def join_new_session_keyring() -> bool:
    """Join a new anonymous session keyring (children inherit it).

    Returns:
        True when joined; False when the kernel has no keyrings at all (ENOSYS), so there is
        no keyring to leave.

    Raises:
        OSError: the keyctl failed otherwise, or the CPU's syscall number is unknown.
    """
    number = _SYS_KEYCTL.get(platform.machine())
    if number is None:
        raise OSError(f"keyctl syscall number unknown for {platform.machine()}")
    libc = _libc()
    result = libc.syscall(
        ctypes.c_long(number), ctypes.c_long(_KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None)
    )
    if result < 0 and ctypes.get_errno() == errno.ENOSYS:
        return False
    _check(result, "keyctl(KEYCTL_JOIN_SESSION_KEYRING)")
    return True


def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel, or 0 when Landlock is unavailable."""
    libc = _libc()
    version = libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), ctypes.c_void_p(None), ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(int(version), 0)


def enter_own_landlock_domain() -> int:
    """Put this process (and its future children) in a new Landlock domain of its own.

    The ruleset restricts nothing a kernel needs: it handles only ``MAKE_BLOCK`` (creating
    block device nodes) with no rule allowing it, and with ABI 6+ scopes signals and abstract
    Unix sockets to the domain. What matters is the domain itself (see the module docstring).
    Sets ``no_new_privs`` first, as Landlock requires of unprivileged callers.

    Returns:
        The Landlock ABI version used.

    Raises:
        LandlockUnavailableError: the kernel has no Landlock.
        OSError: a syscall failed.
    """
    abi = landlock_abi()
    if abi < 1:
        raise LandlockUnavailableError("Landlock is not available in this Linux kernel")
    libc = _libc()
    attr = _RulesetAttr(handled_access_fs=_LANDLOCK_ACCESS_FS_MAKE_BLOCK)
    size = ctypes.sizeof(_RulesetAttr)
    if abi >= 6:
        attr.scoped = _LANDLOCK_SCOPE_SIGNAL | _LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
    else:
        size = 8  # handled_access_fs only: what every ABI before 6 needs here
    ruleset = _check(
        libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                     ctypes.c_size_t(size), ctypes.c_uint32(0)),
        "landlock_create_ruleset",
    )
    _restrict_self(libc, ruleset)
    return abi


def restrict_filesystem(
    *, read_only: Sequence[str], read_write: Sequence[str], devices: Sequence[str] = ("/dev",),
) -> int:
    """Allow this process and its future children only these paths (a Landlock layer).

    Every filesystem right Landlock knows (ABI ≥ 2) is handled; each path gets: `read_only`
    read, list and execute; `read_write` everything (create, write, remove, rename, link,
    truncate, ioctl on devices); `devices` read and write existing files (device nodes), list,
    truncate and ioctl, never create. A path that does not exist is skipped. What no rule
    covers cannot be opened at all (``EACCES``); ``stat`` and path lookup stay possible, as
    Landlock does not control them. It stacks on any earlier domain and cannot be undone.

    Args:
        read_only: absolute paths, e.g. ``["/usr", "/etc/ssl", "/proc"]``.
        read_write: absolute directories, e.g. the kernel's own working directory.
        devices: absolute directories holding device files.

    Returns:
        The Landlock ABI version used.

    Raises:
        LandlockUnavailableError: Landlock is missing or older than ABI 2.
        OSError: a syscall failed.
    """
    abi = landlock_abi()
    if abi < MIN_FILESYSTEM_ABI:
        raise LandlockUnavailableError(
            f"Landlock ABI {abi} cannot restrict a kernel's files (ABI {MIN_FILESYSTEM_ABI}, "
            f"Linux 5.19, is needed)"
        )
    handled = _FS_RIGHTS_BY_ABI.get(abi, _FS_ALL_RIGHTS)
    libc = _libc()
    attr = _RulesetAttr(handled_access_fs=handled)
    ruleset = _check(
        libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                     ctypes.c_size_t(8), ctypes.c_uint32(0)),
        "landlock_create_ruleset",
    )
    try:
        for paths, rights in ((read_only, _FS_READ_ONLY), (devices, _FS_DEVICES), (read_write, _FS_ALL_RIGHTS)):
            for path in paths:
                _add_path_rule(libc, ruleset, path, rights & handled)
    except BaseException:
        os.close(ruleset)
        raise
    _restrict_self(libc, ruleset)
    return abi


def _restrict_self(libc: ctypes.CDLL, ruleset: int) -> None:
    """``no_new_privs`` (Landlock requires it of unprivileged callers), then enter `ruleset`'s
    domain; the ruleset descriptor is closed either way."""
    try:
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(
            libc.syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)),
            "landlock_restrict_self",
        )
    finally:
        os.close(ruleset)


def _add_path_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            # Rules on files may only carry file rights (landlock(7)).
            rights &= _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        _check(
            libc.syscall(ctypes.c_long(_SYS_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset),
                         ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)),
            f"landlock_add_rule({path})",
        )
    finally:
        os.close(fd)


def raise_oom_score() -> None:
    """Make this process the out-of-memory killer's first choice (``oom_score_adj`` 1000).

    Raising it needs no privilege. The supervisor protects srt and the gateway with -1000, so
    under a memory limit a kernel is killed, not the infrastructure that reports its death.

    Raises:
        OSError: ``/proc/self/oom_score_adj`` cannot be written.
    """
    with open("/proc/self/oom_score_adj", "w", encoding="ascii") as file:
        file.write(str(_OOM_SCORE_ADJ_MAX))
