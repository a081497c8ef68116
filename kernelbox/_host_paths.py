"""Files the host writes where a kernel may have planted links: opened without following them.

The client writes kernel bytes to the host's disk: images into ``images_dir``, downloads to
their ``dest``. Those paths often lie in the kernels' working directory, which kernel code can
write: it can replace a directory on the way (``images``, ``exports``) by a symlink to
anywhere — ``/etc``, ``/root/.ssh``, a directory its sandbox keeps it out of — and the client,
perhaps root and outside any sandbox, would then write there for it.

So such a path is opened when it is written, never resolved ahead of time, and a symlink on the
way is followed only when no kernel can have made it. **The rule**: a symlink is followed only
when it is owned by root *and* lies in a directory owned by root that neither its group nor
others may write (mode bits; POSIX ACLs are not read). Only root can create or rename an entry
in such a directory, so only root can have put the link there: ``/bin -> usr/bin`` on
merged-/usr systems, ``/tmp -> private/tmp`` and ``/var -> private/var`` on macOS. Any other
symlink makes the write fail with `UntrustedLinkError` (an `OSError` with ``ELOOP``), and
nothing is written. A kernel running as root without a sandbox could make such a link, but it
can also write anywhere itself: the rule protects the host from kernels that cannot.

How: on Linux 5.6+ (``openat2``), the whole path is opened in one call with
``RESOLVE_NO_SYMLINKS``, so the operating system refuses any link on it. When that call finds a
link (it may be one root made), a missing directory (to create) or is unavailable (older Linux,
seccomp filters, macOS), the path is walked one directory at a time from ``/``: each component
opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the one before (``dir_fd``), so nothing
can be swapped between a check and its use; a link fails that open and is then judged by the
rule (its target walked the same way); a missing directory is created with ``mkdirat`` and
opened the same way. Files are then created inside the opened directory (``O_EXCL |
O_NOFOLLOW``), and a file whose write fails (disk full, quota, I/O error) is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["UntrustedLinkError", "create_file", "open_directory", "replace_file"]

# Links followed on one path at most, as Linux's own resolution (MAXSYMLINKS).
MAX_LINKS = 40

_DIRECTORY_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2): syscall 437 in the generic table every Linux architecture listed here shares
# (include/uapi/asm-generic/unistd.h; alpha and MIPS number it differently and are left out).
_OPENAT2 = 437
_OPENAT2_MACHINES = {"x86_64", "i386", "i486", "i586", "i686", "aarch64", "arm64", "armv7l", "armv8l",
                     "riscv64", "ppc64le", "ppc64", "s390x", "loongarch64"}
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04


class UntrustedLinkError(OSError):
    """A write was refused: its path passes through a symlink that the rule does not follow.

    An `OSError` with ``errno.ELOOP``; ``filename`` is the link's path.
    """

    def __init__(self, link: str) -> None:
        super().__init__(errno.ELOOP, "a symbolic link kernelbox does not follow", link)

    def __str__(self) -> str:
        return (
            f"{self.filename} is a symbolic link, which kernelbox does not follow when it writes: it "
            "follows only links that root placed in a directory only root can write, and a kernel "
            "could have made this one (if you made it, give the path it leads to instead)"
        )


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux") or platform.machine() not in _OPENAT2_MACHINES:
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    return syscall


_syscall = _load_syscall()


def _openat2_no_symlinks(path: str) -> int | None:
    """Open directory `path` refusing every link on it; None when openat2 cannot answer that.

    Raises:
        OSError: from the system call (``ELOOP``: a link; ``ENOENT``: a missing component).
    """
    if _syscall is None:
        return None
    how = _OpenHow(_DIRECTORY_FLAGS, 0, _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = _syscall(ctypes.c_long(_OPENAT2), ctypes.c_int(-100), ctypes.c_char_p(os.fsencode(path)),  # AT_FDCWD
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
            return None  # no openat2 here (older Linux, a seccomp filter): walk instead
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _absolute(path: str | os.PathLike[str]) -> str:
    """`path` made absolute against the working directory, not normalised: ``..`` stays physical."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"the path must be a str or path-like, not {type(text).__name__}")
    if not text or "\x00" in text:
        raise ValueError(f"the path must be non-empty and without NUL characters, not {text!r}")
    return text if os.path.isabs(text) else os.path.join(os.getcwd(), text)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _open_component(parent: int, name: str) -> int:
    return os.open(name, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=parent)


def _placed_by_root(parent: int, info: os.stat_result) -> bool:
    """The rule: a link owned by root in a directory owned by root that only root may write."""
    directory = os.fstat(parent)
    return info.st_uid == 0 and directory.st_uid == 0 and not directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _open_or_stat(parent: int, name: str, create: bool) -> int | os.stat_result:
    """Open the directory `name` in `parent`, without following it; when it is a link, its lstat.

    Creates it first when missing and `create`; a link swapped in meanwhile is seen as a link.
    """
    made = False
    while True:
        try:
            return _open_component(parent, name)
        except FileNotFoundError:
            if not create or made:
                raise
            made = True
            with contextlib.suppress(FileExistsError):  # made meanwhile: judged by the next open
                os.mkdir(name, 0o777, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            return os.stat(name, dir_fd=parent, follow_symlinks=False)


def _walk(path: str, create: bool) -> int:
    """Open directory `path` one component at a time from ``/``, judging each link by the rule."""
    pending = _components(path)
    pending.reverse()  # a stack: the next component last
    walked = "/"  # for messages only
    fd = os.open("/", _DIRECTORY_FLAGS)
    links = 0
    try:
        while pending:
            name = pending.pop()
            here = os.path.normpath(os.path.join(walked, name))
            opened = _open_or_stat(fd, name, create)
            if isinstance(opened, int):
                os.close(fd)
                fd, walked = opened, here
                continue
            if not stat.S_ISLNK(opened.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), here)
            if not _placed_by_root(fd, opened):
                raise UntrustedLinkError(here)
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), here)
            target = os.readlink(name, dir_fd=fd)
            pending.extend(reversed(_components(target)))
            if target.startswith("/"):
                os.close(fd)
                fd, walked = os.open("/", _DIRECTORY_FLAGS), "/"
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_directory(path: str | os.PathLike[str], *, create: bool = False) -> int:
    """Open the directory `path` for writing into it, following no link a kernel could have made.

    Blocking; the caller closes the returned descriptor (on Linux an ``O_PATH`` one: use it as
    ``dir_fd``). A relative `path` is taken against the working directory.

    Args:
        path: the directory.
        create: create missing directories on the way (mode 0o777 less the umask), with the
            same discipline.

    Raises:
        UntrustedLinkError: a symlink on the way that the rule (module docstring) refuses.
        FileNotFoundError: a directory is missing and `create` is False.
        NotADirectoryError: a component is a file.
        OSError: any other reason the system gives (permissions, a full disk, ...).
        TypeError, ValueError: `path` is not a path, is empty or holds a NUL character.
    """
    absolute = _absolute(path)
    try:
        fd = _openat2_no_symlinks(absolute)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
            raise
        fd = None  # a link (perhaps one root placed), a directory to create: the walk decides
    return fd if fd is not None else _walk(absolute, create)


def create_file(directory: int, name: str, data: bytes, mode: int = 0o666) -> None:
    """Create the new file `name` in the open `directory` and write `data` into it.

    The file is created exclusively and not through a link (``O_EXCL | O_NOFOLLOW``); `mode`
    is less the umask. When the write fails (a full disk, a quota, an I/O error), the file is
    removed before the error propagates, so no empty or partial file is left.

    Raises:
        FileExistsError: `name` exists (whatever it is, a link included).
        OSError: the directory refused the file, or the write failed.
    """
    fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=directory)
        raise


def replace_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically, creating missing directories, following no kernel link.

    The data goes to a new file beside `path` (``.<name>.<random>.part``), flushed to disk,
    then renamed over `path`: readers see the old file or the whole new one. The rename
    replaces a symlink at `path` itself, never its target. Returns `path`, absolute.

    Raises:
        UntrustedLinkError: a symlink on the way to `path`'s directory is refused by the rule.
        IsADirectoryError: `path` names a directory (or ends with ``/``).
        OSError: the directory is not writable, the disk is full, ...; the partial file is
            removed first.
    """
    absolute = _absolute(path)
    parent, name = os.path.split(absolute)
    if name in ("", ".", ".."):
        raise IsADirectoryError(errno.EISDIR, "the destination names a directory, not a file", absolute)
    directory = open_directory(parent, create=True)
    try:
        part = f".{name}.{uuid.uuid4().hex}.part"
        fd = os.open(part, _NEW_FILE_FLAGS, 0o666, dir_fd=directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(part, name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part, dir_fd=directory)
            raise
    finally:
        os.close(directory)
    return Path(absolute)
