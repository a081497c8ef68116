"""A pooled kernel's channels, connected and primed while it waits in the pool.

`prime_pooled_kernel` (called by the pool, `kernelbox._child.gateway.pool`) waits until a
pooled kernel answers ``kernel_info`` with its iopub subscription live, and returns its four
channels and that reply as `PrimedChannels`; the pool keeps them in its registry
(`kernelbox._child.gateway.registry`) for the kernel's first WebSocket
(`kernelbox._child.gateway.websocket`), which then creates no socket, sends no nudge, and
answers the client's first ``kernel_info_request`` from the cache.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernelbox._child.gateway._upstream import cache_kernel_info_reply

CHANNELS = ("shell", "control", "stdin", "iopub")


@dataclass
class PrimedChannels:
    """A pooled kernel's channels, connected while it waited, and its ``kernel_info`` reply.

    `streams` maps ``"shell"``, ``"control"``, ``"stdin"`` and ``"iopub"`` to open streams; shell,
    control and stdin share the routing `identity` (the kernel sends ``input_request`` on stdin
    to the identity the ``execute_request`` came from). `reply` is the kernel's
    ``kernel_info_reply`` as a message dict. `kernel_running` says whether the kernel process is
    running now (not exited, stopped or a zombie).
    """

    streams: dict[str, Any]
    identity: bytes
    reply: dict[str, Any]
    kernel_running: Callable[[], bool]

    def usable(self) -> bool:
        return all(not stream.closed() for stream in self.streams.values())

    def take(self) -> dict[str, Any]:
        """The streams for a WebSocket connection, emptied of what came while they waited."""
        for name, stream in self.streams.items():
            stream.channel = name
            stream.discard_pending()  # what came since the loop last read the socket
        streams, self.streams = self.streams, {}
        return streams

    def close(self) -> None:
        for stream in self.streams.values():
            if not stream.closed():
                stream.close()
        self.streams = {}


async def prime_pooled_kernel(
    kernel_manager: Any, timeout: float, kernel_running: Callable[[], bool], retry_seconds: float = 0.2
) -> PrimedChannels:
    """Wait until a pooled kernel answers, and connect the channels of its first WebSocket.

    Opens the kernel's four channels and sends ``kernel_info_request`` on the shell channel
    (again every `retry_seconds`) until the reply has come *and* the iopub socket has received
    a message, which proves its subscription is live (ZMQ subscriptions take effect
    asynchronously). The reply is cached where Jupyter Server looks for it
    (`cache_kernel_info_reply`).

    Returns:
        The channels and the reply, for `KernelWebsocketConnection.create_stream`.

    Raises:
        TimeoutError: no reply and iopub message within `timeout` seconds.
    """
    session = kernel_manager.session
    loop = asyncio.get_running_loop()
    info: asyncio.Future[dict[str, Any]] = loop.create_future()
    heard: asyncio.Future[Any] = loop.create_future()

    def on_shell(msg_list: list[bytes]) -> None:
        _idents, parts = session.feed_identities(msg_list)
        message = session.deserialize(parts)
        if message["msg_type"] == "kernel_info_reply" and not info.done():
            info.set_result(message)

    def on_iopub(_msg_list: list[bytes]) -> None:
        if not heard.done():
            heard.set_result(None)

    identity = uuid.uuid4().hex.encode()
    streams = {
        name: getattr(kernel_manager, "connect_" + name)(identity=None if name == "iopub" else identity)
        for name in CHANNELS
    }
    primed = PrimedChannels(streams, identity, {}, kernel_running)
    streams["shell"].on_recv(on_shell)
    streams["iopub"].on_recv(on_iopub)
    try:
        async with asyncio.timeout(timeout):
            while not (info.done() and heard.done()):
                session.send(streams["shell"], "kernel_info_request")
                await asyncio.wait([info, heard], timeout=retry_seconds)
    except BaseException:
        primed.close()
        raise
    # Replies to the retried requests and their iopub status messages that come later stay
    # queued in the sockets; `PrimedChannels.take` drops them.
    for stream in streams.values():
        stream.stop_on_recv()
    reply = info.result()
    primed.reply = {key: reply[key] for key in ("header", "metadata", "content")}
    cache_kernel_info_reply(kernel_manager, reply["content"])
    return primed
