"""The client's wall around upstream internals: the one module of the client that names a
private part of another package (httpx-ws's receive loop).

The gateway process has a wall of its own (`kernelbox._child.gateway._upstream`): the two run
in different processes, and the client must not import Jupyter. Both list what they use as
``INTERNALS`` (`kernelbox._internals.Internal`), and ``tests/test_upstream_internals.py`` is
generated from both lists.
"""

from __future__ import annotations

from typing import Any

import httpcore
from httpx_ws import AsyncWebSocketSession, HTTPXWSException, WebSocketNetworkError
from httpx_ws._api import EndOfStream
from wsproto.events import CloseConnection, Event, Message, Ping, Pong
from wsproto.frame_protocol import CloseReason

from ._internals import Internal

__all__ = ["INTERNALS", "ReceiveLoopSession"]

INTERNALS: tuple[Internal, ...] = (
    Internal(
        "websocket-receive-loop", "httpx_ws._api.AsyncWebSocketSession",
        ("_background_receive", "_read_stream", "_should_close", "_write_lock", "_ping_manager",
         "_send_event", "httpx_ws._api.EndOfStream"),
        "httpx_ws/_api.py, httpx-ws 0.9 (read: 0.9.0)",
        "each piece of a message goes to kernelbox, which assembles it in linear time and bounded memory",
    ),
)


class ReceiveLoopSession(AsyncWebSocketSession):
    """httpx-ws's WebSocket session whose receive loop hands every piece of a message to
    `on_message_piece`.

    The loop is httpx-ws's ``_background_receive`` (installed through its public
    ``session_class`` hook): pings answered, pongs acknowledged, the close handshake and
    stream errors handled as there; only the assembly of messages is left to the subclass.
    """

    async def _background_receive(self, max_bytes: int) -> None:
        try:
            while not self._should_close.is_set():
                self.connection.receive_data(await self._read_stream(max_bytes))
                for event in self.connection.events():
                    if isinstance(event, Ping):
                        reply = self.connection.send(event.response())
                        async with self._write_lock:
                            await self.stream.write(reply)
                    elif isinstance(event, Pong):
                        self._ping_manager.ack(event.payload)
                    elif isinstance(event, Message):
                        await self.on_message_piece(event)
                    else:
                        if isinstance(event, CloseConnection):
                            self._should_close.set()
                        await self.deliver(event)
        except (httpcore.ReadError, httpcore.WriteError, EndOfStream):
            await self.close(CloseReason.INTERNAL_ERROR, "Stream error")
            await self.deliver(WebSocketNetworkError())

    async def on_message_piece(self, event: Message[Any]) -> None:
        """One piece of a message, the last with ``message_finished``: delivered as it is."""
        await self.deliver(event)

    async def deliver(self, event: Event | HTTPXWSException) -> None:
        """Queue an event (or a `WebSocketNetworkError`) for the session's ``receive``."""
        await self._send_event.send(event)
