"""What a sandboxed kernel may see of the host's filesystem: an allow-list, not the host minus a list.

On Linux every sandboxed gateway runs with srt's ``denyRead: ["/"]`` plus an ``allowRead``
list built here. srt turns that into a mount namespace of its own: each top-level directory of
the host that no allowed path covers is replaced by an empty tmpfs, and the allowed paths are
bound back read-only (``linux-sandbox-utils.js``, "Root deny expansion"; ``/proc``, ``/dev`` and
``/sys`` are the sandbox's own). So a kernel sees, read-only:

- **the OS runtime**: `OS_RUNTIME_DIRS` (programs and shared libraries) and the files of
  ``/etc`` that programs read at run time, `ETC_ENTRIES` (each named below, with why);
- **the Python runtime** it runs: the installation and the virtual environment (``sys.prefix``,
  ``sys.base_prefix``, the exec prefixes), every directory on this interpreter's ``sys.path``
  (in an editable install that includes the checkout), and the kernelbox package;
- **srt's own package** (its seccomp helper runs inside);

and read-write its working directory and the gateway's state directory, plus what the caller
adds (``read_paths`` / ``write_paths`` of `KernelGateway`, or ``allowRead`` / ``allowWrite`` in
the settings). Everything else (``/home``, ``/root``, the host's ``/tmp`` and ``/var``, ``/opt``,
``/srv``, ``/mnt``, ``/media``, other checkouts, another gateway's working and state
directories) is an empty directory inside. The denies the presets list (credential stores,
``.env`` files) still apply inside what is shown.

macOS (Seatbelt) is not given this view: srt's ``denyRead: ["/"]`` has no allow-list
expansion there, so the presets' deny lists are what applies (see the README).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ETC_ENTRIES", "OS_RUNTIME_DIRS", "python_runtime_paths", "view_read_paths"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

# Programs and shared libraries. /bin, /sbin and /lib* are symlinks into /usr on merged-/usr
# systems (Debian 12, Fedora, Arch); srt binds what they resolve to.
OS_RUNTIME_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# Files and directories of /etc that programs read at run time, and nothing else of /etc (no
# shadow, sudoers, ssh keys, machine-id, pip/npm configuration that may hold index credentials,
# systemd units or cron tables).
ETC_ENTRIES = (
    # the dynamic linker
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
    # users and groups by name (getpwuid: `id`, `ls -l`, Python's getpass, pwd), name service
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
    # host names and services: localhost resolution, getaddrinfo, getservbyname
    "/etc/hosts", "/etc/host.conf", "/etc/resolv.conf", "/etc/gai.conf",
    "/etc/services", "/etc/protocols",
    # TLS trust store (requests, httpx, pip and curl through the proxy)
    "/etc/ssl", "/etc/ca-certificates", "/etc/ca-certificates.conf", "/etc/pki",
    "/etc/crypto-policies",
    # time zone, locale and character sets
    "/etc/localtime", "/etc/timezone", "/etc/locale.alias", "/etc/locale.conf",
    "/etc/default/locale",
    # program alternatives (Debian's /usr/bin/* -> /etc/alternatives/* links)
    "/etc/alternatives",
    # fonts (matplotlib, fontconfig), MIME types (mimetypes), file types (libmagic)
    "/etc/fonts", "/etc/mime.types", "/etc/magic",
    # which system this is (platform.freedesktop_os_release, pip's user agent)
    "/etc/os-release", "/etc/debian_version", "/etc/lsb-release",
    # the system-wide matplotlib style, when the distribution ships one
    "/etc/matplotlibrc",
)


def python_runtime_paths() -> list[Path]:
    """The Python runtime a kernel runs: installation, environment, ``sys.path``, kernelbox.

    Kernels run this interpreter with ``-P`` and without ``PYTHONPATH``, so their ``sys.path``
    is this one's without its first entry (the main script's directory, or the current
    directory: ``/tmp`` for a script there) and without the ``PYTHONPATH`` entries; what the
    site packages' ``.pth`` files add (an editable install's checkout) stays.

    Returns:
        Existing absolute paths and what they resolve to, without duplicates.
    """
    candidates: list[str | Path] = [
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)), _PACKAGE_DIR,
    ]
    entries = list(sys.path)
    if entries and not sys.flags.safe_path:
        del entries[0]
    from_environment = set(filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    candidates += [
        entry for entry in entries if entry and os.path.isabs(entry) and entry not in from_environment
    ]
    return _existing(candidates)


def view_read_paths(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Everything a sandboxed kernel is shown read-only (see the module docstring).

    Args:
        extra: more paths to show (srt's package, the caller's ``read_paths``).

    Returns:
        Existing absolute paths, in a stable order: the OS runtime, the ``/etc`` entries, the
        Python runtime, then `extra`.
    """
    return _existing([*OS_RUNTIME_DIRS, *ETC_ENTRIES, *python_runtime_paths(), *extra])


def _existing(candidates: Iterable[str | os.PathLike[str]]) -> list[Path]:
    result: list[Path] = []
    for candidate in candidates:
        path = Path(candidate)
        if not path.is_absolute() or not os.path.lexists(path):
            continue
        resolved = Path(os.path.realpath(path))
        for shown in (path, resolved):
            if shown not in result:
                result.append(shown)
    return result
