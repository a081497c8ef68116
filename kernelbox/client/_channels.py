"""The kernel's channels over one WebSocket: one reader, reconnection, and the wire framing.

`KernelChannels` keeps ``/api/kernels/<id>/channels`` open in a background task of its own
(see `kernelbox._tasks`). Its one reader never waits for a consumer: every message is handed to
a synchronous callback that only files it (see `kernelbox.client._execution`), so a slow
caller can never stall the socket, miss a keepalive pong or make the server buffer output.

The client offers the binary ``v1.kernel.websocket.jupyter.org`` subprotocol and falls back to
the legacy JSON framing when the server does not pick it (older Jupyter Server, Enterprise
Gateway 3). When the connection drops while the kernel lives, it reconnects with the same
session id: Jupyter Server buffers the session's messages while it is away and replays them
(``ZMQChannelsWebsocketConnection`` and ``MappingKernelManager.start_buffering``); kernelbox's
gateway also replays what it had sent just before the drop (``replay=sent``, see
`kernelbox._child.gateway.websocket`), and `Execution` drops repeats by ``msg_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from httpx_ws import AsyncWebSocketSession, HTTPXWSException, WebSocketDisconnect, aconnect_ws
from wsproto.events import BytesMessage, Event, Message, TextMessage

from .. import _protocol
from .._errors import GatewayConnectionError
from .._retry import Backoff, Retries
from .._tasks import BackgroundTask
from .._upstream_client import ReceiveLoopSession

logger = logging.getLogger("kernelbox.client")

__all__ = ["MAX_RECEIVE_BYTES", "MAX_SEND_BYTES", "BoundedWebSocketSession", "KernelChannels", "OversizedMessage"]

RECONNECT_ATTEMPTS = 5
RECONNECT_INTERVAL_SECONDS = 0.2
MAX_RECEIVE_BYTES = 128 * 1024 * 1024
# Tornado's default WebSocket message limit, which Jupyter Server and Kernel Gateway keep: a
# larger message makes the server close the connection (code 1009), so it is refused here.
MAX_SEND_BYTES = 10 * 1024 * 1024
_WEBSOCKET_QUEUE_MESSAGES = 64

_CONNECTION_ERRORS = (
    HTTPXWSException,
    httpx.HTTPError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class OversizedMessage(Event):
    """Stands in for a received message larger than `MAX_RECEIVE_BYTES`, which was not kept.

    Attributes:
        size: the message's size as received, in bytes (characters for a text message).
    """

    def __init__(self, size: int) -> None:
        self.size = size


class BoundedWebSocketSession(ReceiveLoopSession):
    """httpx-ws's WebSocket session, assembling each message in linear time and bounded memory.

    httpx-ws 0.9 joins the pieces of a message as they arrive with ``bytes + bytes``, which is
    quadratic in the message's size (measured here: 5 s of CPU for one 30 MB display output;
    a 150 MB one took long enough for the server to drop the connection over missed pings,
    losing it silently), and it keeps a message of any size. This session collects the pieces
    and joins them once; a message past `MAX_RECEIVE_BYTES` is counted and discarded as it
    arrives, and an `OversizedMessage` takes its place. Pings, pongs and the close handshake
    are handled as httpx-ws does (its ``session_class`` hook, and the receive loop of
    `kernelbox._upstream_client.ReceiveLoopSession`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._message_pieces: list[Any] = []
        self._message_bytes = 0

    async def on_message_piece(self, event: Message[Any]) -> None:
        self._message_bytes += len(event.data)
        if not event.message_finished:
            if self._message_bytes <= MAX_RECEIVE_BYTES:
                self._message_pieces.append(event.data)
            else:
                self._message_pieces.clear()
            return
        pieces, size = self._message_pieces, self._message_bytes
        self._message_pieces, self._message_bytes = [], 0
        if size > MAX_RECEIVE_BYTES:
            await self.deliver(OversizedMessage(size))
        elif not pieces:  # the whole message in one piece: the usual case
            await self.deliver(event)
        else:
            pieces.append(event.data)
            joined = "".join(pieces) if isinstance(event, TextMessage) else b"".join(pieces)
            await self.deliver(type(event)(data=joined))


def _leaf_exception(exc: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _connection_error(exc: BaseException | None) -> GatewayConnectionError:
    if isinstance(exc, WebSocketDisconnect):
        reason = f": {exc.reason}" if exc.reason else ""
        return GatewayConnectionError(f"the kernel WebSocket closed (code {exc.code}{reason})")
    if exc is not None:
        return GatewayConnectionError(f"the kernel WebSocket failed: {exc!r}")
    return GatewayConnectionError("the kernel WebSocket is closed")


def _http_form(url: str) -> str:
    """`url` with ``ws:``/``wss:`` replaced by ``http:``/``https:`` (the same request, RFC 6455 §3)."""
    scheme, _, rest = url.partition(":")
    return {"ws": "http", "wss": "https"}.get(scheme, scheme) + ":" + rest


class KernelChannels:
    """The WebSocket of one kernel, kept open until `aclose()`.

    Args:
        http: the gateway's httpx client (auth headers, TLS, proxies).
        ws_base_url: e.g. ``"ws://127.0.0.1:8888"``.
        kernel_id: the kernel.
        session_id: the client session; reused on reconnection so the server replays.
        ping_interval: seconds between keepalive pings; None: none.
        on_message: called with every message, in order, from the reader task. Must not block.
        on_closed: called once with the error that ended the connection for good.
        kernel_gone: after a drop, asks the gateway whether the kernel still exists.
        on_oversized: called with the size in bytes of each message that was larger than
            the limit (the second argument, `MAX_RECEIVE_BYTES`) and was dropped unread (its
            channel and parent are unknown).
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        ws_base_url: str,
        kernel_id: str,
        session_id: str,
        ping_interval: float | None,
        on_message: Callable[[dict[str, Any]], None],
        on_closed: Callable[[BaseException], None],
        kernel_gone: Callable[[], Awaitable[bool]],
        on_oversized: Callable[[int, int], None],
    ) -> None:
        self._http = http
        # replay=sent: kernelbox's gateway then also replays what it sent just before a drop
        # (delivery at least once; executions drop repeated msg_ids, so exactly once). Other
        # servers ignore the argument and replay only what they buffered while disconnected.
        self.url = f"{ws_base_url}/api/kernels/{quote(kernel_id)}/channels?session_id={session_id}&replay=sent"
        # The upgrade is requested on the http(s) form of the URL: httpx pools connections by
        # scheme, and so the upgrade reuses the idle keep-alive connection of the request that
        # created the kernel instead of opening another one.
        self._upgrade_url = _http_form(self.url)
        self.kernel_id = kernel_id
        self._ping_interval = ping_interval
        self._on_message = on_message
        self._on_closed = on_closed
        self._kernel_gone = kernel_gone
        self._on_oversized = on_oversized
        self._ws: AsyncWebSocketSession | None = None
        self._binary = False
        self._ready = anyio.Event()
        self._closed: BaseException | None = None
        self._task: BackgroundTask | None = None

    @property
    def binary(self) -> bool:
        """True when the server chose the binary v1 subprotocol."""
        return self._binary

    async def open(self) -> None:
        """Start the connection task and return once the WebSocket is open.

        Raises:
            GatewayConnectionError: the WebSocket could not be opened.
        """
        self._task = BackgroundTask(self._run, name=f"kernelbox channels {self.kernel_id}")
        self._task.start()
        await self._ready.wait()
        if self._ws is None:
            raise self._closed or GatewayConnectionError(f"could not open the kernel WebSocket at {self.url}")

    async def aclose(self) -> None:
        """Close the WebSocket and stop the task (waits for it)."""
        if self._task is not None:
            self._task.cancel()
            await self._task.wait()
            self._task = None

    def encode(self, message: dict[str, Any]) -> str | bytes:
        """The frame for `message` in the framing this connection speaks."""
        return _protocol.encode_v1(message) if self._binary else _protocol.encode(message)

    async def send(self, frame: str | bytes) -> None:
        """Send one frame (from `encode`), waiting for a reconnection in progress.

        Raises:
            GatewayConnectionError: the connection is closed for good, or sending failed.
        """
        while self._ws is None and self._closed is None:
            await self._ready.wait()  # reconnecting: bounded by the reconnect attempts
        if self._closed is not None:
            raise self._closed
        ws = self._ws
        assert ws is not None
        try:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_text(frame)
        except (HTTPXWSException, httpx.HTTPError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise GatewayConnectionError(f"could not send to the kernel: {exc!r}") from exc

    async def _run(self) -> None:
        """Keep the WebSocket open, reconnecting with the same session id if it drops."""
        retries = Retries(limit=RECONNECT_ATTEMPTS, backoff=Backoff(RECONNECT_INTERVAL_SECONDS, growth="linear"))
        opened = False
        error: BaseException | None = None
        ws: AsyncWebSocketSession
        try:
            while True:
                try:
                    async with aconnect_ws(
                        self._upgrade_url,
                        self._http,
                        subprotocols=[_protocol.V1_SUBPROTOCOL],
                        max_message_size_bytes=MAX_RECEIVE_BYTES,
                        queue_size=_WEBSOCKET_QUEUE_MESSAGES,
                        keepalive_ping_interval_seconds=self._ping_interval,
                        session_class=BoundedWebSocketSession,
                    ) as ws:
                        self._binary = ws.subprotocol == _protocol.V1_SUBPROTOCOL
                        if opened:
                            logger.info("Reconnected to kernel %s", self.kernel_id)
                        self._ws, opened = ws, True
                        retries.reset()
                        self._ready.set()
                        await self._read(ws)
                except Exception as exc:  # noqa: BLE001 - httpx-ws raises through its task group; sorted below
                    error = _leaf_exception(exc)
                    if not isinstance(error, _CONNECTION_ERRORS):
                        raise error from exc  # a bug: it reaches the callers as itself
                self._ws = None
                if self._ready.is_set():
                    self._ready = anyio.Event()  # sends wait for the next connection
                if not opened:
                    self._finish(_connection_error(error))
                    return
                if await self._kernel_gone():
                    return  # the owner has been told; nothing to reconnect to
                delay = retries.next_delay()
                if delay is None:
                    self._finish(_connection_error(error))
                    return
                logger.warning(
                    "Kernel %s WebSocket dropped (%r); reconnecting (%d/%d)",
                    self.kernel_id, error, retries.count, RECONNECT_ATTEMPTS,
                )
                await anyio.sleep(delay)  # back-off between tries
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self._finish(exc)
            raise
        finally:
            self._ws = None
            self._finish(GatewayConnectionError("the kernel WebSocket is closed"))
            self._ready.set()

    def _finish(self, error: BaseException) -> None:
        if self._closed is None:
            self._closed = error
            self._on_closed(error)

    async def _read(self, ws: AsyncWebSocketSession) -> None:
        """The one reader: decode each frame and hand the message on, never waiting."""
        binary = self._binary
        on_message = self._on_message
        while True:
            event = await ws.receive()
            try:
                if isinstance(event, BytesMessage):
                    data = bytes(event.data)
                    message = _protocol.decode_v1(data) if binary else _protocol.decode(data)
                elif isinstance(event, TextMessage):
                    message = _protocol.decode(event.data)
                elif isinstance(event, OversizedMessage):
                    logger.warning("Kernel %s sent a message of %d bytes, more than the %d a message "
                                   "may have here; dropped it", self.kernel_id, event.size, MAX_RECEIVE_BYTES)
                    self._on_oversized(event.size, MAX_RECEIVE_BYTES)
                    continue
                else:
                    continue
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
                # Kernel code can publish anything on iopub: one bad message is dropped, said
                # once in the log, and the connection (and every other message) goes on.
                logger.warning("Kernel %s sent a message that is not valid JSON; dropped it (%s)",
                               self.kernel_id, type(exc).__name__)
                continue
            if not _protocol.is_well_formed(message):
                logger.warning("Kernel %s sent a malformed message; dropped it", self.kernel_id)
                continue
            on_message(message)
