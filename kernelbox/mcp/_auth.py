"""The bearer token of ``kernelbox mcp --transport streamable-http``.

Its tools run arbitrary code, and a loopback address stops nothing on a machine with other
users: any local process can connect. So every HTTP request must carry
``Authorization: Bearer <token>``; one without it, or with another token, gets ``401`` and
never reaches the MCP app (nothing runs, no session is made). The token is random per start
(256 bits from `secrets`) unless ``$KERNELBOX_MCP_TOKEN`` gives one (an environment variable,
never an argument: other users can read a process's arguments); the server prints it once on
stderr, or writes it to ``--token-file PATH`` (mode 0600, removed on exit) and prints only
the path. The stdio transport needs none: only the process that started the server holds its
pipes.

A small ASGI middleware in front of the SDK's app, not the SDK's OAuth hooks: they need an
authorization server and its metadata, which a local shared secret does not have.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import uuid
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from .._host_paths import open_directory

__all__ = ["TOKEN_ENV", "BearerTokenMiddleware", "check_token", "generate_token", "remove_token_file",
           "write_token_file"]

TOKEN_ENV = "KERNELBOX_MCP_TOKEN"
MIN_TOKEN_CHARS = 16
TOKEN_FILE_MODE = 0o600
_REFUSAL = (b'{"error": "unauthorized", "message": "this MCP server needs the header '
            b'Authorization: Bearer <token>; the token was printed on its stderr or written to its --token-file"}')


def generate_token() -> str:
    """A new random token: 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """Validate a token given by the operator; return it.

    Raises:
        ValueError: shorter than 16 characters, or not printable ASCII without spaces (it
            travels in an HTTP header).
    """
    if len(token) < MIN_TOKEN_CHARS or not (token.isascii() and token.isprintable()) or " " in token:
        raise ValueError(
            f"${TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces; "
            "unset it for a random token"
        )
    return token


class BearerTokenMiddleware:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <token>``; others get 401.

    The comparison is constant-time (`hmac.compare_digest`). Lifespan events pass through, so
    the wrapped app starts and stops as usual; WebSocket connections without the token are
    closed (code 1008).
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode("ascii")

    def _authorized(self, scope: Scope) -> bool:
        values = [value for name, value in scope.get("headers", []) if name.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_REFUSAL)).encode()),
                (b"www-authenticate", b'Bearer realm="kernelbox"'),
            ],
        })
        await send({"type": "http.response.body", "body": _REFUSAL})


def write_token_file(path: Path, token: str) -> Path:
    """Write `token` and a newline to `path`, mode 0600, atomically; return the absolute path.

    The file is created with its mode before the token goes in, then renamed over `path`. The
    directory is opened without following links a kernel could have made
    (`kernelbox._host_paths`); it must exist.

    Raises:
        OSError: the directory is missing, not writable, or reached through such a link.
    """
    absolute = path.absolute()
    directory = open_directory(absolute.parent)
    try:
        part = f".{absolute.name}.{uuid.uuid4().hex}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, TOKEN_FILE_MODE,
                     dir_fd=directory)
        try:
            os.fchmod(fd, TOKEN_FILE_MODE)  # exactly 0600, whatever the umask
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(token + "\n")
            os.replace(part, absolute.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part, dir_fd=directory)
            raise
    finally:
        os.close(directory)
    return absolute


def remove_token_file(path: Path, token: str) -> bool:
    """Remove the token file at `path` if it still holds `token`; True when it was removed."""
    try:
        directory = open_directory(path.parent)
    except OSError:
        return False
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
        with os.fdopen(fd, encoding="ascii", errors="replace") as file:
            if file.read(4096).strip() != token:
                return False  # another server has written its own token there since
        os.unlink(path.name, dir_fd=directory)
    except OSError:
        return False  # gone already, or a link in its place: nothing of ours to remove
    finally:
        os.close(directory)
    return True
