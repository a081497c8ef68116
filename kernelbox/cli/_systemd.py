"""What `kernelbox serve` needs to be a good systemd service, without depending on systemd.

- **Socket activation** (`listen_sockets`): the listening sockets systemd passes as fds 3, 4, …
  with ``LISTEN_PID`` and ``LISTEN_FDS`` (sd_listen_fds(3)).
- **Readiness and status** (`Notifier`): datagrams such as ``READY=1``, ``STATUS=…``,
  ``STOPPING=1`` and ``WATCHDOG=1`` to the socket named by ``$NOTIFY_SOCKET`` (sd_notify(3));
  a name starting with ``@`` is in the abstract namespace.
- **Watchdog** (`watchdog_interval_seconds`): ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``), as
  sd_watchdog_enabled(3) reads them.
- **Journal logging** (`JournalFormatter`, `stderr_is_journal`): when stderr is connected to
  the journal (``$JOURNAL_STREAM`` names its device and inode), each record is one line
  prefixed with its syslog priority (``<4>`` for a warning, sd-daemon(3)), with no timestamp
  (the journal adds its own).

Without these variables every function here does nothing, so the service runs as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import MutableMapping

__all__ = [
    "JournalFormatter",
    "Notifier",
    "listen_sockets",
    "stderr_is_journal",
    "watchdog_interval_seconds",
]

SD_LISTEN_FDS_START = 3
_SYSLOG_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_SYSLOG_DEBUG = 7


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process (socket activation), oldest fd first.

    Reads and then removes ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` so that child
    processes do not take the sockets as theirs. Returns an empty list when the variables are
    absent or meant for another process (``LISTEN_PID`` is not our pid).

    Raises:
        ValueError: ``LISTEN_FDS`` is not a number, or a passed descriptor is not a socket.
    """
    env = os.environ if environ is None else environ
    pid = env.pop("LISTEN_PID", None)
    count = env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None:
        return []
    try:
        if int(pid) != os.getpid():
            return []
        number = int(count)
    except ValueError as exc:
        raise ValueError(f"LISTEN_PID={pid!r} and LISTEN_FDS={count!r} must be numbers") from exc
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + number):
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ValueError(f"file descriptor {fd} passed by systemd (LISTEN_FDS) is not a socket")
        os.set_inheritable(fd, False)  # FD_CLOEXEC, as sd_listen_fds() sets it
        sockets.append(socket.socket(fileno=fd))
    return sockets


class Notifier:
    """Sends sd_notify(3) state changes to the service manager; a no-op without one.

    ::

        notifier = Notifier.from_environment()
        notifier.notify(READY=1, STATUS="Serving kernels at http://127.0.0.1:8888")
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier for ``$NOTIFY_SOCKET``, which is removed from the environment so that
        child processes (the gateway, kernels) cannot speak for this service."""
        env = os.environ if environ is None else environ
        return cls(env.pop("NOTIFY_SOCKET", None) or None)

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self._socket is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines, e.g. ``notify(READY=1, STATUS="…")``.

        Returns:
            True when sent; False without a service manager, or when sending failed (a
            service must not fail because its manager went away; the failure is logged).
        """
        if self._socket is None or self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._socket.sendto(message, target)
        except OSError as exc:
            logging.getLogger("kernelbox.cli").debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def watchdog_interval_seconds(environ: MutableMapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, or None when off.

    Like sd_watchdog_enabled(3): ``WATCHDOG_PID``, when set, must be our pid. The variables are
    removed so that child processes do not act on them.
    """
    env = os.environ if environ is None else environ
    usec = env.pop("WATCHDOG_USEC", None)
    pid = env.pop("WATCHDOG_PID", None)
    if not usec:
        return None
    with contextlib.suppress(ValueError):
        if pid is not None and int(pid) != os.getpid():
            return None
        microseconds = int(usec)
        if microseconds > 0:
            return microseconds / 1_000_000 / 2
    return None


def stderr_is_journal(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when stderr is connected to the systemd journal (``$JOURNAL_STREAM``)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        status = os.fstat(2)
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, one line per record (newlines in the message and a
    traceback are folded into it), for a journal that stores a record per line."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{_syslog_priority(record.levelno)}>{text}"


def _syslog_priority(level: int) -> int:
    for threshold, priority in _SYSLOG_PRIORITIES:
        if level >= threshold:
            return priority
    return _SYSLOG_DEBUG
