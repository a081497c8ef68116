"""Connection files: how a running ``kernelbox serve`` tells other local processes where it is.

The file is one JSON object, ``{"url": ..., "token": ..., "pid": ...}``, readable by its owner
only (mode 0600): the token grants code execution. It is written atomically — a new file created
with ``O_CREAT | O_EXCL`` and mode 0600 *before* any content goes in, then renamed over the
path — so a reader never sees a partial file and nobody else ever sees the token. ``serve``
removes it on exit, unless another server has replaced it meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger("kernelbox.connection_file")

__all__ = ["ConnectionInfo", "published", "read_connection_file", "remove_connection_file",
           "write_connection_file"]

FILE_MODE = 0o600


@dataclass(frozen=True)
class ConnectionInfo:
    """What a connection file holds.

    Attributes:
        url: the gateway's base URL, e.g. ``"http://127.0.0.1:8888"``.
        token: its auth token.
        pid: the gateway process's id, or None.
    """

    url: str
    token: str
    pid: int | None = None


class _Gateway(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def pid(self) -> int | None: ...


def write_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> Path:
    """Write `info` to `path` atomically, readable and writable by the owner only (0600).

    An existing file at `path` is replaced. Returns the path written.

    Raises:
        OSError: the directory is missing or not writable.
    """
    target = Path(path)
    part = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    content = json.dumps({"url": info.url, "token": info.token, "pid": info.pid}).encode() + b"\n"
    # The mode is set when the file is created, before the token is written into it; the
    # fchmod covers a umask that would have left the owner without read access.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    return target


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read a connection file written by ``kernelbox serve --connection-file``.

    Raises:
        FileNotFoundError: no file at `path` (is the server running?).
        ValueError: the file is not a kernelbox connection file.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a kernelbox connection file (invalid JSON: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str):
        raise ValueError(f"{os.fspath(path)!r} is not a kernelbox connection file (it needs \"url\" and \"token\")")
    pid = data.get("pid")
    return ConnectionInfo(url=data["url"], token=data["token"], pid=pid if isinstance(pid, int) else None)


def remove_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> bool:
    """Remove the file at `path` if it still describes `info`; True when it was removed.

    A file that another server has written over in the meantime is left alone.
    """
    try:
        if read_connection_file(path) != info:
            return False
        os.unlink(path)
    except (OSError, ValueError):
        return False
    return True


@contextlib.asynccontextmanager
async def published(path: str | os.PathLike[str] | None, gateway: _Gateway) -> AsyncIterator[Path | None]:
    """Write the started `gateway`'s connection file to `path` for the ``with`` body; None: do nothing.

    Used by ``kernelbox serve --connection-file PATH``; the file is removed on exit.
    """
    if path is None:
        yield None
        return
    info = ConnectionInfo(url=gateway.url, token=gateway.token, pid=gateway.pid)
    written = write_connection_file(path, info)
    logger.info("Wrote connection file %s", written)
    try:
        yield written
    finally:
        if remove_connection_file(written, info):
            logger.info("Removed connection file %s", written)
